"""What every model-level detector (registry kind `scanner`) shares: its inputs, its output
and the registering decorator.

A scanner answers "is this model backdoored, and towards which class?" from the model and
the defender's small clean subset (None for a data-free method): `fn(model, clean_subset,
options=None, seed=0, *, num_classes=None, input_shape=None) -> ModelScore`. The score is
higher for more suspicious models; `flagged` applies the method's own fixed rule (a p-value,
an anomaly index, or a level set on clean models only), never one chosen on attacked models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..data.bundle import Split
from ..defenses.base import parse_options
from ..registry import register


@dataclass(frozen=True)
class ScanJob:
    """A scanner's inputs: the model, the defender's clean subset (None where data-free),
    the number of classes, the input shape of one sample (no batch axis), options, seed."""

    model: nn.Module
    clean_subset: Split | None
    num_classes: int
    input_shape: tuple[int, ...]
    options: Any
    seed: int

    def clean_inputs(self) -> torch.Tensor:
        """The clean subset's inputs as floats in [0, 1] on the model's device."""
        if self.clean_subset is None:
            raise ValueError("this scanner needs the defender's clean subset")
        device = next(self.model.parameters()).device
        return self.clean_subset.floats().to(device)


@dataclass
class ModelScore:
    """One scanner's answer for one model: `score` (higher = more suspicious), the suspected
    `target`, the `threshold` of its fixed rule, `flagged` = score > threshold, and `info`
    (what it measured: per-class statistics, the sweep, ...; JSON-able)."""

    score: float
    target: int
    threshold: float
    info: dict = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return bool(self.score > self.threshold)

    def as_dict(self) -> dict:
        return {"score": float(self.score), "target": int(self.target),
                "threshold": float(self.threshold), "flagged": self.flagged,
                "info": self.info}


def shape_and_classes(model: nn.Module, clean_subset: Split | None,
                      num_classes: int | None, input_shape: tuple | None) -> tuple[tuple, int]:
    """The sample shape and class count a scanner works with: given, read off the clean
    subset, or read off the model's spec (a model made by `build_model`)."""
    spec = getattr(model, "spec", None)
    if input_shape is None and clean_subset is not None:
        input_shape = tuple(clean_subset.x.shape[1:])
    if input_shape is None and spec is not None:
        input_shape = (spec.in_channels, spec.image_size, spec.image_size)
    if num_classes is None and spec is not None:
        num_classes = spec.num_classes
    if num_classes is None and clean_subset is not None:
        num_classes = int(clean_subset.y.max()) + 1
    if input_shape is None or num_classes is None:
        raise ValueError("give input_shape and num_classes (the model has no spec and no "
                         "clean subset was given)")
    return tuple(int(s) for s in input_shape), int(num_classes)


def scanner(name: str, options_cls: type, needs_data: bool = True) -> Callable:
    """Register `body(job: ScanJob) -> ModelScore` as the model-level detector `name`
    (registry kind `scanner`) and return its public entry point."""

    def decorate(body: Callable[[ScanJob], ModelScore]) -> Callable[..., ModelScore]:
        def entry(model: nn.Module, clean_subset: Split | None = None, options: Any = None,
                  seed: int = 0, *, num_classes: int | None = None,
                  input_shape: tuple | None = None) -> ModelScore:
            opts = parse_options(options_cls, options, name)
            if needs_data and clean_subset is None:
                raise ValueError(f"scanner {name!r} needs the defender's clean subset")
            shape, classes = shape_and_classes(model, clean_subset, num_classes, input_shape)
            return body(ScanJob(model, clean_subset, classes, shape, opts, seed))

        functools.update_wrapper(entry, body)
        del entry.__wrapped__
        return register("scanner", name, options=options_cls, needs_data=needs_data)(entry)

    return decorate


def mad_anomaly(values: torch.Tensor, low: bool = True) -> tuple[float, int]:
    """Neural Cleanse's anomaly index of the most extreme value (smallest when `low`): its
    distance from the median over 1.4826 x the median absolute deviation; (index, argmax)."""
    v = values.double()
    median = v.median()
    mad = (v - median).abs().median() * 1.4826
    dev = (median - v) if low else (v - median)
    i = int(dev.argmax())
    return float(dev[i] / mad.clamp_min(1e-12)), i
