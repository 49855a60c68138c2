"""What every repair defense shares: options parsing, the copy it repairs, and the hand-back.

A repair is `fn(model, clean_subset, val_split=None, options=None, seed=0) -> Repaired`,
registered with `@register("defense", name, options=OptionsDataclass)`. It works on a deep
copy (the caller's weights and neuron config are never touched), hands the copy back in
eval mode at the neuron config the model was deployed at, and returns what it did in
`Repaired.info` (never attached to the model). No setting is ever chosen on the test split
or on ASR: see each repair's docstring.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..data.bundle import Split
from ..neurons import get_neuron_params, restore_neuron_params
from ..registry import register
from ..training import evaluate


@dataclass
class Repaired:
    """A repaired copy of a model (eval mode, deployed neuron config) and what the repair
    did: `info` holds at least `defense`, and `val_accuracy` when a val split was given."""

    model: nn.Module
    info: dict


def parse_options(cls, options, name: str):
    """An options dataclass from a dict (an unknown key fails with the valid ones), or the
    instance itself when one is given. Shared by the defenses and the detectors."""
    if isinstance(options, cls):
        return options
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {name!r}; valid: {sorted(known)}"
        )
    return cls(**options)


def repair_copy(model: nn.Module) -> nn.Module:
    """A deep copy to work on: the caller's model (weights, neuron config) is never touched."""
    return copy.deepcopy(model)


def run_repair(name: str, model: nn.Module, val_split: Split | None,
               work: Callable[[nn.Module], dict]) -> Repaired:
    """The shared prologue and epilogue: `work(copy)` repairs a copy of `model` in place and
    returns its info; the copy comes back in eval mode at `model`'s neuron config, with its
    clean `val_accuracy` measured (for the report only) when `val_split` is given."""
    deployed = get_neuron_params(model)
    repaired = repair_copy(model)
    info = {"defense": name, **work(repaired)}
    restore_neuron_params(repaired, deployed)
    repaired.eval()
    if val_split is not None:
        info["val_accuracy"] = evaluate(repaired, val_split)
    return Repaired(repaired, info)


def holdout_split(subset: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(fit, hold-out): the defender's clean subset split by seed, `fraction` of every class
    (at least one sample, never a whole class) held out, so a defense that chooses a
    setting chooses it inside its own budget, never on data it was not given."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    y = subset.y.cpu()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed) + 7))
    held = []
    for label in y.unique():
        members = order[y[order] == label]
        count = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.append(members[:count])
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[torch.cat(held)] = True
    if mask.all() or not mask.any():
        raise ValueError(f"the clean subset ({len(y)} samples) is too small to hold out "
                         "part of it; give the defense's setting explicitly")
    return (subset.subset(torch.nonzero(~mask).flatten()),
            subset.subset(torch.nonzero(mask).flatten()))


@dataclass(frozen=True)
class RepairJob:
    """What a repair's body works with: `copy` is the model it repairs in place; `model`,
    the model as given, is only read (it is never changed)."""

    model: nn.Module
    copy: nn.Module
    clean_subset: Split
    val_split: Split | None
    options: Any
    seed: int


def repair(name: str, options_cls: type) -> Callable:
    """Register `body(job: RepairJob) -> info` as the repair `name` with its options
    dataclass, and return the public entry point every repair shares:
    `fn(model, clean_subset, val_split=None, options=None, seed=0) -> Repaired`."""

    def decorate(body: Callable[[RepairJob], dict]) -> Callable[..., Repaired]:
        def entry(model: nn.Module, clean_subset: Split, val_split: Split | None = None,
                  options: Any = None, seed: int = 0) -> Repaired:
            opts = parse_options(options_cls, options, name)
            return run_repair(name, model, val_split, lambda copy: body(
                RepairJob(model, copy, clean_subset, val_split, opts, seed)))

        functools.update_wrapper(entry, body)
        del entry.__wrapped__  # the signature shown is the entry point's, not the body's
        return register("defense", name, options=options_cls)(entry)

    return decorate
