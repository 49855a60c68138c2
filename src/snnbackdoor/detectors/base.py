"""What every input-level detector shares: the entry point, its inputs and its options.

A detector is `fn(model, clean_subset, clean_inputs, triggered_inputs, options=None,
seed=0) -> Scores`; `@detector(name, OptionsDataclass)` registers a body that receives
those inputs as one `DetectJob` with its options parsed, so each detector writes only
its scoring. The screened inputs never choose a setting (see `scoring`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..data.bundle import Split
from ..defenses.base import parse_options
from ..registry import register
from .scoring import Scores


@dataclass(frozen=True)
class DetectJob:
    """A detector's inputs: the model, the defender's clean subset (to fit on and to set
    the threshold with), the clean and triggered inputs to screen, options and seed."""

    model: nn.Module
    clean_subset: Split
    clean_inputs: torch.Tensor
    triggered_inputs: torch.Tensor
    options: Any
    seed: int


def detector(name: str, options_cls: type) -> Callable:
    """Register `body(job: DetectJob) -> Scores` as the detector `name` and return the
    public entry point every input-level detector shares."""

    def decorate(body: Callable[[DetectJob], Scores]) -> Callable[..., Scores]:
        def entry(model: nn.Module, clean_subset: Split, clean_inputs: torch.Tensor,
                  triggered_inputs: torch.Tensor, options: Any = None, seed: int = 0) -> Scores:
            opts = parse_options(options_cls, options, name)
            return body(DetectJob(model, clean_subset, clean_inputs, triggered_inputs, opts,
                                  seed))

        functools.update_wrapper(entry, body)
        del entry.__wrapped__  # the signature shown is the entry point's
        return register("detector", name, options=options_cls)(entry)

    return decorate
