"""Run directories: resolved config, metrics by stage, models, log; resumable by stage.

A stage's result is written (atomically) when it finishes; on resume a finished stage is
read back instead of recomputed, so a crash or Ctrl-C loses only the stage in progress.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn
import yaml

from .checkpoint import load_model, save_model
from .config import ConfigError, load_yaml_text
from .errors import UserError
from .io import FileFormatError, atomic_write_json, atomic_write_text, json_safe, read_json

MAX_NAME_BYTES = 200  # a run or model name becomes a file name (255 bytes at most)


class RunDirError(UserError, ValueError):
    """A run folder that cannot be used: a bad name or path, or a changed config."""


def check_run_name(name: object, what: str = "name") -> str:
    """A run (or model) name is one plain folder name: no separators, not '.' or '..', not
    empty, printable, short enough; so `runs/<name>` never writes outside `runs/`."""
    text = name if isinstance(name, str) else ""
    bad = (
        not text.strip()
        or text != text.strip()
        or text in (".", "..")
        or any(sep in text for sep in ("/", "\\", os.sep, os.altsep or "/"))
        or any(not ch.isprintable() for ch in text)
        or len(text.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
    )
    if bad:
        raise RunDirError(f"{what} {name!r} is not a plain name: use letters, digits, '-', "
                          f"'_' or '.', no '/' or '..', at most {MAX_NAME_BYTES} bytes "
                          "(choose the folder itself with --out)")
    return text


def _check_stages(stages: dict, path: Path) -> dict:
    """Every stage of stages.json is a mapping, and `_seconds` maps names to numbers."""
    for name, value in stages.items():
        seconds = name == "_seconds"
        ok = isinstance(value, dict) and (not seconds or all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value.values()))
        if not ok:
            raise FileFormatError(
                f"run file {path}: stage {name!r} is not a mapping of results; the file is "
                "corrupted: delete the run folder (or pass another --out) to start over"
            )
    return stages


DISPLAY_KEYS = ("progress", "tensorboard", "deviation_notes")  # shown or logged, never results


def results_view(config):
    """`config` without its display keys (at any depth): what decides the results, so a
    resumed run may change its progress bars or TensorBoard folder."""
    if isinstance(config, dict):
        return {k: results_view(v) for k, v in config.items() if k not in DISPLAY_KEYS}
    if isinstance(config, list):
        return [results_view(v) for v in config]
    return config


def _changed_keys(before, after, prefix: str = "", extend_only: bool = False) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts. With `extend_only`,
    added dict keys and added list items do not count as changes."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = set(before) if extend_only else set(before) | set(after)
        return [k for key in keys for k in _changed_keys(
            before.get(key), after.get(key), f"{prefix}{key}.", extend_only)]
    if extend_only and isinstance(before, list) and isinstance(after, list):
        return [] if all(item in after for item in before) else [prefix.rstrip(".")]
    return [] if before == after else [prefix.rstrip(".") or "<config>"]


class RunDir:
    """One run's folder: `config.yaml`, `metrics.json`, `log.jsonl`, models, figures."""

    def __init__(self, path: str | Path) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            raise RunDirError(f"the run folder {path!r} is empty; pass a folder with --out")
        self.path = Path(path)
        try:
            if self.path.exists() and not self.path.is_dir():
                raise RunDirError(f"run folder {self.path} is a file; pass another --out")
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "figures").mkdir(exist_ok=True)
        except OSError as err:
            raise RunDirError(f"cannot create run folder {self.path}: "
                              f"{err.strerror or err}; pass another --out") from None
        self.metrics_path = self.path / "metrics.json"
        self.stages_path = self.path / "stages.json"
        self.metrics: dict = self._read_json(self.metrics_path)
        self.stages: dict = _check_stages(self._read_json(self.stages_path), self.stages_path)

    @staticmethod
    def _read_json(path: Path) -> dict:
        """A run file read back and checked; a broken one is reported, never reset."""
        if not path.exists():
            return {}
        return read_json(path, dict, "run file")

    def write_config(self, config: dict, extendable: tuple[str, ...] = ()) -> None:
        """Record the run's config; refuse one that differs from the config its finished
        stages were computed with (resuming would silently mix the two). Top-level keys in
        `extendable` may gain entries (e.g. more defenses in a matrix), never change them;
        display keys (`progress`, `tensorboard`) may change freely."""
        path = self.path / "config.yaml"
        if self.stages and path.exists():
            before = results_view(self.read_config())
            after = results_view(yaml.safe_load(yaml.safe_dump(config, sort_keys=False)))
            changed = sorted(
                k for key in set(before) | set(after)
                for k in _changed_keys(before.get(key), after.get(key), f"{key}.",
                                       extend_only=key in extendable)
            )
            if changed:
                shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
                raise RunDirError(
                    f"{self.path} holds finished stages of a run with a different config "
                    f"(changed: {shown}); pass another --out, or delete the folder to start over"
                )
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict:
        """The run's config.yaml read back and checked; a broken one is reported."""
        path = self.path / "config.yaml"
        try:
            data = load_yaml_text(path.read_text(encoding="utf-8"), f"run file {path}")
        except (ConfigError, UnicodeDecodeError, OSError) as err:
            raise FileFormatError(f"{err}; the run folder is damaged: delete it or pass "
                                  "another --out") from None
        if not isinstance(data, dict):
            raise FileFormatError(f"run file {path} does not hold a mapping; the run folder "
                                  "is damaged: delete it or pass another --out")
        return data

    def log(self, **event) -> None:
        event = {"time": round(time.time(), 3), **event}
        with open(self.path / "log.jsonl", "a") as handle:
            handle.write(json.dumps(json_safe(event)) + "\n")

    def done(self, stage: str) -> bool:
        return stage in self.stages

    def stage(self, name: str, compute: Callable[[], dict]) -> dict:
        """Return the stored result of `name`, or compute, store and return it."""
        if name in self.stages:
            self.log(stage=name, status="reused")
            return self.stages[name]
        before = set(self._stages_on_disk())
        start = time.perf_counter()
        result = json_safe(compute())
        seconds = time.perf_counter() - start
        # Stages a nested RunDir of this folder finished inside `compute` stay recorded (a
        # resumed run reuses them); their seconds are part of this stage's, so not listed.
        on_disk = self._stages_on_disk()
        nested = set(on_disk) - before
        timed = {k: v for k, v in on_disk.get("_seconds", {}).items() if k not in nested}
        timed.update(self.stages.get("_seconds", {}))
        timed[name] = round(seconds, 3)
        self.stages = {**on_disk, **self.stages, name: result, "_seconds": timed}
        atomic_write_json(self.stages_path, self.stages)
        self.log(stage=name, status="done", seconds=round(seconds, 3))
        return result

    def _stages_on_disk(self) -> dict:
        return _check_stages(self._read_json(self.stages_path), self.stages_path)

    def stage_seconds(self) -> dict:
        return dict(self.stages.get("_seconds", {}))

    def model_stage(self, name: str, build_and_train: Callable[[], tuple[nn.Module, dict]],
                    device="cpu", rebuild: Callable[[], nn.Module] | None = None,
                    files: tuple[Callable, Callable] | None = None, folder: str = "",
                    ) -> tuple[nn.Module, dict]:
        """A stage that yields a model: saved as `<folder>/<name>.safetensors`, reloaded on
        resume (a model the user built reloads into `rebuild()`, its constructor). `files`
        = (save, load) for models `save_model` does not write (converted SNNs)."""
        path = self.path / folder / f"{name}.safetensors"
        save, load = files or (save_model, lambda p, d: load_model(p, d, build=rebuild))
        if name in self.stages and path.exists():
            self.log(stage=name, status="reused")
            return load(path, device), self.stages[name]
        holder: dict = {}

        def compute() -> dict:
            model, info = build_and_train()
            save(model, path)
            holder["model"] = model
            return info

        self.stages.pop(name, None)
        info = self.stage(name, compute)
        return holder["model"], info

    def write_metrics(self, metrics: dict) -> None:
        self.metrics = json_safe(metrics)
        atomic_write_json(self.metrics_path, self.metrics)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path / name, text)
