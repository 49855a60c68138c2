"""The base of every experiment: dataset and model sections, the shared config fields, and
`run_experiment(config, out) -> RunResult`, the one entry point the CLI and notebooks share.

Each experiment kind is one module of this package that registers its config class and
runner with `@register_experiment(kind, ConfigClass)`; stages are resumable through `RunDir`.
A config is never changed after parsing: what ran is what `config.yaml` says.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from ..config import ConfigError, apply_overrides, parse_dataclass, read_yaml, to_dict
from ..data.augment import dataset_augmentation
from ..data.bundle import DatasetBundle, DatasetInfo
from ..data.registry import check_files, check_options, check_root, get_entry, load_dataset
from ..metrics import degenerate_warning
from ..models.kit import NEURONS, SURROGATES
from ..models.registry import ModelSpec, build_model
from ..neurons import check_neuron_values
from ..registry import get, register
from ..rundir import RunDir, RunDirError, check_run_name
from ..training import TrainConfig, evaluate, predict, seed_everything, train
from ..util import resolve_device

MAX_T = 1024  # time steps: memory grows linearly with T
MAX_GRID = 1000  # values in one analysis grid


@dataclass
class DatasetConfig:
    """Which dataset, where its files are, and loader options."""

    name: str = "digits"
    root: str | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_options(self.name, self.options)  # unknown names and values out of range
        if self.root is not None and not self.root.strip():
            raise ValueError("dataset.root is empty; remove the key or give the folder that "
                             "holds the dataset")


@dataclass
class ModelConfig:
    """Model body and its nominal neuron config (tau in SpikingJelly's convention, > 1)."""

    name: str = "digits_net"
    neuron: str = "lif"
    v_threshold: float = 1.0
    tau: float = 2.0
    T: int = 4
    surrogate: str = "atan"
    detach_reset: bool = True

    def __post_init__(self) -> None:
        get("model", self.name)  # an unknown name fails here, with a did-you-mean
        if self.neuron not in NEURONS:
            raise ValueError(f"model.neuron must be one of {list(NEURONS)}, got {self.neuron!r}")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"model.surrogate must be one of {sorted(SURROGATES)}")
        if not 1 <= self.T <= MAX_T:
            raise ValueError(f"model.T must be in 1..{MAX_T} time steps, got {self.T}")
        check_neuron_values(self.v_threshold, self.tau)


@dataclass
class AnalyzeConfig:
    """Grids of the BadSNN Fig. 2 study (accuracy and spikes vs V_thr, tau and power q)."""

    v_thresholds: list[float] = field(
        default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]
    )
    taus: list[float] = field(default_factory=lambda: [1.25, 1.5, 2.0, 3.0, 4.0, 6.0])
    powers: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])

    def __post_init__(self) -> None:
        for tau in self.taus:
            check_neuron_values(None, tau)
        for v in self.v_thresholds:
            check_neuron_values(v, None)
        if any(not 0 < q <= 100 for q in self.powers):
            raise ValueError("analyze.powers must all be in (0, 100]")
        for key in ("v_thresholds", "taus", "powers"):
            if not 1 <= len(getattr(self, key)) <= MAX_GRID:
                raise ValueError(f"analyze.{key} must list 1..{MAX_GRID} values")


@dataclass
class ExperimentConfig:
    """Fields every experiment kind shares. `train.seed` left unset takes `seed` at parse
    time (so config.yaml records the seed that ran); set it to train with another seed."""

    kind: str = "train"
    name: str = "run"
    seed: int = 0
    device: str = "auto"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_run_name(self.name, "name")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        # cuda:9 on a one-GPU machine fails here, not mid-run; `cuda` parses on a login node
        resolve_device(self.device, require_present=False)
        if self.train.epochs < 1:
            raise ValueError("train.epochs must be >= 1 for a run (it trains a model)")
        classes = get_entry(self.dataset.name).num_classes
        for key, target in _target_classes(self):
            if classes is not None and not 0 <= target < classes:
                raise ValueError(f"{key}={target} is not a class of {self.dataset.name} "
                                 f"(0..{classes - 1})")
        if self.train.seed is None:
            self.train = dataclasses.replace(self.train, seed=self.seed)


def _target_classes(config) -> list[tuple[str, int]]:
    """(key, value) of every integer field named `target` in the config or one of its
    sections, so each experiment's target class is checked against the dataset at parse."""
    found = []
    for section in [None, *(f.name for f in dataclasses.fields(config))]:
        node = config if section is None else getattr(config, section)
        if not dataclasses.is_dataclass(node):
            continue
        value = getattr(node, "target", None)
        if isinstance(value, int) and not isinstance(value, bool):
            found.append((f"{section}.target" if section else "target", value))
    return found


@dataclass
class RunResult:
    """Where a run wrote its files and its top-level metrics."""

    path: Path
    metrics: dict


Runner = Callable[[object, RunDir], dict]


def register_experiment(kind: str, config_cls: type):
    """Register `runner(config, rundir) -> metrics` for configs with `kind: <kind>`."""
    return register("experiment", kind, config=config_cls)


def parse_config(data: dict, overrides: list[str] | tuple[str, ...] = ()):
    """Validate a config mapping (plus --set overrides) into its experiment's dataclass."""
    data = apply_overrides(data, overrides)
    kind = data.get("kind", "train")
    if not isinstance(kind, str):
        raise ConfigError(f"kind must be the name of an experiment kind, got {kind!r}")
    try:
        config_cls = get("experiment", kind).meta["config"]
    except KeyError as err:
        raise ConfigError(str(err)) from err
    config = parse_dataclass(config_cls, data)
    try:
        check_root(config.dataset.name, config.dataset.root)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from err
    return config


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    return parse_config(read_yaml(path), overrides)


def dataset_from_config(config, device) -> DatasetBundle:
    cfg: DatasetConfig = config.dataset
    return load_dataset(cfg.name, cfg.root, **cfg.options).to(device)


def model_spec(model_cfg: ModelConfig, info: DatasetInfo, ann: bool = False) -> ModelSpec:
    """The ModelSpec that fits a dataset: channels, size, classes, T and normalisation."""
    events = info.kind == "events"
    return ModelSpec(
        name=model_cfg.name,
        num_classes=info.num_classes,
        in_channels=info.shape[1] if events else info.shape[0],
        image_size=info.shape[-1],
        T=info.shape[0] if events else model_cfg.T,
        neuron=model_cfg.neuron,
        v_threshold=model_cfg.v_threshold,
        tau=model_cfg.tau,
        surrogate=model_cfg.surrogate,
        detach_reset=model_cfg.detach_reset,
        encoding="frames" if events else "direct",
        mean=list(info.mean) if info.mean else None,
        std=list(info.std) if info.std else None,
        ann=ann,
    )


def new_model(config, info: DatasetInfo, device, ann: bool = False) -> nn.Module:
    return build_model(model_spec(config.model, info, ann)).to(device)


def train_clean(config, data: DatasetBundle, device, description: str = "clean") -> tuple:
    """Build and train a clean model with the config's recipe; (model, stage info)."""
    seed_everything(config.train.seed)
    model = new_model(config, data.info, device)
    augment = dataset_augmentation(data.info, config.train.augment)
    result = train(model, data.train, config.train, data.val, augment=augment,
                   description=description)
    info = {
        "val_accuracy": evaluate(model, data.val),
        "test_accuracy": evaluate(model, data.test),
        "train_seconds": round(result.seconds, 3),
        "history": result.history,
    }
    return model, info


def model_warning(name: str, model: nn.Module, split, num_classes: int) -> str | None:
    """The degenerate-model warning of `model` as deployed, from its clean predictions on
    `split` (normally test); None for a healthy model."""
    pred = predict(model, split.x).cpu()
    return degenerate_warning(name, pred, split.y.cpu(), num_classes)


def warnings_of(*warnings: str | None) -> list[str]:
    """The given warnings without the Nones (metrics.json's `warnings` list)."""
    return [w for w in warnings if w]


def run_folder(config, out: str | Path | None) -> Path:
    """The run folder, checked before it is created: `out` not empty, the default
    runs/<name> with a plain name, and the dataset's files where the config says."""
    if out is not None and not str(out).strip():
        raise RunDirError("--out is empty; pass a folder, or leave it out for runs/<name>")
    check_files(config.dataset.name, config.dataset.root)
    return Path(out) if out is not None else Path("runs") / check_run_name(config.name)


def run_experiment(config, out: str | Path | None = None, executor=None) -> RunResult:
    """Run a validated config into `out` (default runs/<name>), resuming finished stages.
    A runner that splits its work takes an `executor` keyword (see snnbackdoor.executors,
    `map_stages`) and gets this one; None means in this process, in order."""
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if isinstance(config, dict):
        config = parse_config(config)
    runner = get("experiment", config.kind).obj
    if executor is None or executor.name == "local":  # this process trains: its GPU must exist
        resolve_device(config.device)
    run = RunDir(run_folder(config, out))
    run.write_config(to_dict(config), getattr(config, "extendable", ()))
    if "executor" in inspect.signature(runner).parameters:
        metrics = runner(config, run, executor=executor)
    else:
        metrics = runner(config, run)
    run.write_metrics(metrics)
    for warning in metrics.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    return RunResult(run.path, metrics)
