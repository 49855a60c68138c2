"""Run directories: resolved config, metrics by stage, models, log; resumable by stage.

A stage's result is written (atomically) when it finishes; on resume a finished stage is
read back instead of recomputed, so a crash or Ctrl-C loses only the stage in progress.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn
import yaml

from .checkpoint import load_model, save_model
from .io import atomic_write_json, atomic_write_text, json_safe, read_json


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
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "figures").mkdir(exist_ok=True)
        self.metrics_path = self.path / "metrics.json"
        self.stages_path = self.path / "stages.json"
        self.metrics: dict = self._read_json(self.metrics_path)
        self.stages: dict = self._read_json(self.stages_path)

    @staticmethod
    def _read_json(path: Path) -> dict:
        """A run file read back and checked; a broken one is reported, never reset."""
        if not path.exists():
            return {}
        return read_json(path, dict, "run file")

    def write_config(self, config: dict, extendable: tuple[str, ...] = ()) -> None:
        """Record the run's config; refuse one that differs from the config its finished
        stages were computed with (resuming would silently mix the two). Top-level keys in
        `extendable` may gain entries (e.g. more defenses in a matrix), never change them."""
        path = self.path / "config.yaml"
        if self.stages and path.exists():
            before = yaml.safe_load(path.read_text()) or {}
            after = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))
            changed = sorted(
                k for key in set(before) | set(after)
                for k in _changed_keys(before.get(key), after.get(key), f"{key}.",
                                       extend_only=key in extendable)
            )
            if changed:
                shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
                raise ValueError(
                    f"{self.path} holds finished stages of a run with a different config "
                    f"(changed: {shown}); pass another --out, or delete the folder to start over"
                )
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))

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
        start = time.perf_counter()
        result = json_safe(compute())
        seconds = time.perf_counter() - start
        self.stages[name] = result
        self.stages.setdefault("_seconds", {})[name] = round(seconds, 3)
        atomic_write_json(self.stages_path, self.stages)
        self.log(stage=name, status="done", seconds=round(seconds, 3))
        return result

    def stage_seconds(self) -> dict:
        return dict(self.stages.get("_seconds", {}))

    def model_stage(self, name: str, build_and_train: Callable[[], tuple[nn.Module, dict]],
                    device="cpu") -> tuple[nn.Module, dict]:
        """A stage that yields a model: saved as `<name>.safetensors`, reloaded on resume."""
        path = self.path / f"{name}.safetensors"
        if name in self.stages and path.exists():
            self.log(stage=name, status="reused")
            return load_model(path, device), self.stages[name]
        holder: dict = {}

        def compute() -> dict:
            model, info = build_and_train()
            save_model(model, path)
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
