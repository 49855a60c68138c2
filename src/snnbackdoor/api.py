"""The public API on model objects: attack, run BadSNN's stages, repair, detect, one call each.

Every call is a thin layer over a registered component (`registry.lookup(kind, name)`), so
a plugin's attack, defense or detector works here the moment it registers, and a model the
user built (any `SpikingClassifier`) never has to be registered. Options may be the
component's options dataclass or a dict of its fields (a misspelt key gets a did-you-mean).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .attacks.badsnn import BadSNNResult, run_badsnn_stages
from .attacks.base import AttackOutcome, AttackSetup
from .config import parse_dataclass
from .data.bundle import DatasetBundle, Split
from .defenses.base import Repaired
from .detectors.scoring import Scores
from .experiments.table2 import defender_index
from .registry import get
from .training import TrainConfig

ModelBuilder = Callable[[], nn.Module]


def parse_component_options(kind: str, name: str, options: Any = None) -> Any:
    """The options of component `name` of `kind`: its options dataclass as given, or built
    from a dict (unknown keys fail with a did-you-mean); a component with no options
    dataclass gets the mapping as is."""
    component = get(kind, name)
    cls = component.options
    if cls is None:
        return dict(options or {})
    if isinstance(options, cls):
        return options
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options of {kind} {name!r} must be a {cls.__name__} or a dict of its "
                        f"fields, got {type(options).__name__}")
    return parse_dataclass(cls, dict(options or {}), name)


def _recipe(train: TrainConfig | Mapping | None) -> TrainConfig:
    if isinstance(train, TrainConfig):
        return train
    return parse_dataclass(TrainConfig, dict(train or {}), "train")


def attack_setup(data: DatasetBundle, build_model: ModelBuilder, *, target: int = 0,
                 poison_ratio: float = 0.05, seed: int = 0,
                 train: TrainConfig | Mapping | None = None,
                 device: str | torch.device = "cpu",
                 clean_model: Callable[[], nn.Module] | None = None,
                 workdir: str | Path | None = None) -> AttackSetup:
    """What an attack is given: the data, a builder of fresh models (on `device`), the
    training recipe (a TrainConfig or a dict of its fields), target, poison ratio and seed;
    `clean_model()` returns an already trained clean model for attacks that use one."""
    return AttackSetup(data=data, build_model=build_model, train=_recipe(train),
                       target=int(target), poison_ratio=float(poison_ratio), seed=int(seed),
                       device=torch.device(device), clean_model=clean_model,
                       workdir=Path(workdir) if workdir is not None else None)


def attack(name: str, data: DatasetBundle, build_model: ModelBuilder, options: Any = None, *,
           target: int = 0, poison_ratio: float = 0.05, seed: int = 0,
           train: TrainConfig | Mapping | None = None, device: str | torch.device = "cpu",
           clean_model: Callable[[], nn.Module] | None = None,
           workdir: str | Path | None = None) -> AttackOutcome:
    """Run the registered attack `name` (badnet, blend, wanet, clean_label, badsnn, a
    plugin's...) on `data` with fresh models from `build_model` (keywords: `attack_setup`)."""
    component = get("attack", name)
    setup = attack_setup(data, build_model, target=target, poison_ratio=poison_ratio,
                         seed=seed, train=train, device=device, clean_model=clean_model,
                         workdir=workdir)
    outcome = component.obj(setup, parse_component_options("attack", name, options))
    if not isinstance(outcome, AttackOutcome):
        raise TypeError(f"attack {name!r} returned {type(outcome).__name__}, not an "
                        "AttackOutcome")
    return outcome


def badsnn_stages(data: DatasetBundle, build_model: ModelBuilder, options: Any = None, *,
                  target: int = 0, seed: int = 0, train: TrainConfig | Mapping | None = None,
                  device: str | torch.device = "cpu",
                  clean_model: Callable[[], nn.Module] | None = None,
                  workdir: str | Path | None = None) -> BadSNNResult:
    """Every BadSNN stage (clean model or `clean_model()`, malicious config, dual-spike
    training, attack-config grid, T_o fit, selection on validation, control) with every
    intermediate result; the backdoored model stays at S_n (`deploy(result.model,
    result.attack)` ships it). BadSNN poisons a share of the target class
    (`target_class_ratio` in its options), so there is no `poison_ratio` here."""
    setup = attack_setup(data, build_model, target=target, seed=seed, train=train,
                         device=device, clean_model=clean_model, workdir=workdir)
    return run_badsnn_stages(setup, parse_component_options("attack", "badsnn", options))


def repair(name: str, model: nn.Module, clean_subset: Split, options: Any = None,
           seed: int = 0, val_split: Split | None = None) -> Repaired:
    """Repair a copy of `model` with the registered defense `name` on the defender's clean
    subset (the model itself is never changed); `val_split` is only measured on."""
    component = get("defense", name)
    repaired = component.obj(model, clean_subset, val_split,
                             parse_component_options("defense", name, options), seed)
    if not isinstance(repaired, Repaired):
        raise TypeError(f"defense {name!r} returned {type(repaired).__name__}, not Repaired")
    return repaired


def detect(name: str, model: nn.Module, clean_subset: Split, clean_inputs: torch.Tensor,
           triggered_inputs: torch.Tensor, options: Any = None, seed: int = 0) -> Scores:
    """Scores of the registered detector `name` (higher = more suspicious), fitted on the
    defender's clean subset; `detection_report(scores)` turns them into rates and AUROC."""
    component = get("detector", name)
    scores = component.obj(model, clean_subset, clean_inputs, triggered_inputs,
                           parse_component_options("detector", name, options), seed)
    if not isinstance(scores, Scores):
        raise TypeError(f"detector {name!r} returned {type(scores).__name__}, not Scores")
    return scores


def defender_subset(split: Split, fraction: float = 0.05, seed: int = 0,
                    exclude: list[int] | torch.Tensor | None = None) -> Split:
    """The defender's clean subset: `fraction` of every class of `split`, drawn by seed,
    never a sample in `exclude` (an attack's `poisoned_index`), as the matrix draws it."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    return split.subset(defender_index(split.y, fraction, seed, exclude))

