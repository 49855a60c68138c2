"""Is this model backdoored? Every model-level detector (registry kind `scanner`) on one
model, one verdict: `scan_model` on a model object, `scan_path` on a model file or a run
directory (what `snnbackdoor scan` calls).

The verdict is `backdoored` when any scanner's own fixed rule flags the model (each rule is
set without attacked models: a p-value, an anomaly index, a level measured on clean
models); the suspected target is that of the flagging scanner with the largest score
relative to its threshold. Scores are reported either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from .data.bundle import Split
from .detectors.model_base import ModelScore
from .registry import get, names


@dataclass
class ScanResult:
    """Each scanner's ModelScore, the verdict and the suspected target (None if clean)."""

    detectors: dict[str, ModelScore] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "backdoored" if any(s.flagged for s in self.detectors.values()) else "clean"

    @property
    def target(self) -> int | None:
        flagged = [s for s in self.detectors.values() if s.flagged]
        if not flagged:
            return None
        return max(flagged, key=lambda s: s.score / max(s.threshold, 1e-9)).target

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "target": self.target,
                "detectors": {n: s.as_dict() for n, s in self.detectors.items()}}


def scan_model(model: nn.Module, clean_subset: Split | None = None, *,
               detectors: list[str] | None = None, options: Mapping[str, Any] | None = None,
               seed: int = 0, num_classes: int | None = None,
               input_shape: tuple | None = None) -> ScanResult:
    """Run every registered model-level detector (or those named) on `model` with the
    defender's clean subset; a data-free one also runs without it. `options` maps a
    scanner name to its options (dataclass or dict)."""
    options = dict(options or {})
    chosen = list(detectors) if detectors is not None else names("scanner")
    result = ScanResult()
    for name in chosen:
        component = get("scanner", name)
        if clean_subset is None and component.meta.get("needs_data", True):
            continue
        score = component.obj(model, clean_subset, options.get(name), seed,
                              num_classes=num_classes, input_shape=input_shape)
        if not isinstance(score, ModelScore):
            raise TypeError(f"scanner {name!r} returned {type(score).__name__}, not ModelScore")
        result.detectors[name] = score
    if not result.detectors:
        raise ValueError("no scanner could run: give the defender's clean subset")
    return result


RUN_MODELS = ("badsnn_deployed.safetensors", "model.safetensors")
"""The final model of a run directory, by kind: BadSNN's backdoored model as deployed (at
its attack config), a train run's trained model."""


def model_of(path: str | Path, device: str = "cpu") -> tuple[nn.Module, Path, dict]:
    """The model a path delivers: a model file itself, or a run directory's final model
    (`RUN_MODELS`); (model, its file, the run's config or {})."""
    from .checkpoint import load_model
    from .config import read_yaml
    from .errors import UserError

    path = Path(path)
    config: dict = {}
    file = path
    if path.is_dir():
        if (path / "config.yaml").is_file():
            config = read_yaml(path / "config.yaml")
        found = [path / name for name in RUN_MODELS if (path / name).is_file()]
        if not found:
            raise UserError(f"{path} holds no final model ({' or '.join(RUN_MODELS)}); "
                            "pass a model file or a finished badsnn/train run")
        file = found[0]
    elif not path.is_file():
        raise UserError(f"{path} does not exist; pass a model file or a run directory")
    return load_model(file, device), file, config
