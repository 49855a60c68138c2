"""`kind: table2`: the attack x defense matrix of BadSNN Table 2 (PAPERS.md 1.6, 2, 3).

Every attack in `attacks` is trained once (a resumable model stage) and handed, as an
`AttackOutcome` (model at its deployed neuron config + trigger), to every repair defense in
`defenses` and every detector in `detectors`. Each (attack, defense) and (attack, detector)
cell is its own stage, so an interrupted run resumes at the first unfinished cell and an
attack whose cells are all done is not even loaded. Outputs: `table.csv`
(`attack, defense, ca, asr, ra`; defense `none` = before defense), `detection.csv`
(`attack, detector, detection_rate, auroc`), `report.md` (Table-2-style, cells `CA / ASR`),
`figures/table2_asr.png` (ASR and CA heatmaps) and `metrics.json`.

Nothing here picks a setting: the test split only measures. Defenses choose their own
settings on the defender's clean subset and the validation split (see each defense's
docstring); BadSNN chooses its attack config on the validation split.

The defender's clean subset is `defender_fraction` of the clean training split, drawn by
seed (stratified by class), disjoint from the samples the attack poisoned. It is taken in the
order of one seeded permutation for every attack, so the subsets of different attacks differ
only where an attack poisoned a sample another did not.
"""

from __future__ import annotations

import copy
import csv
import importlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, TypedDict

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..attacks.base import AttackOutcome, measure
from ..attacks.baselines import (
    BASELINES,
    OUTCOMES,
    check_options,
    make_trigger,
    resolve_options,
)
from ..attacks.poisoning import apply_in_batches
from ..config import ConfigError, parse_dataclass, to_dict
from ..data.bundle import DatasetBundle, Split
from ..registry import unknown_name_message
from ..rundir import RunDir
from ..training import TrainConfig
from ..util import resolve_device
from .base import (
    DatasetConfig,
    ExperimentConfig,
    ModelConfig,
    dataset_from_config,
    model_spec,
    register_experiment,
    train_clean,
)

NO_DEFENSE = "none"
DEFAULT_ATTACKS = ["badnet", "blend", "wanet", "clean_label", "badsnn"]
DEFAULT_DEFENSES = [NO_DEFENSE, "finetune", "clp", "anp", "nad", "tsbd", "fine_pruning"]
DEFAULT_DETECTORS = ["strip", "spectral"]


# --------------------------------------------------------------------------- attack registry


class AttackSection(TypedDict):
    """What the matrix hands an attack: the shared recipe plus that attack's own options."""

    name: str  # the run's name
    device: str  # the config's device string ("auto", "cpu", "cuda")
    dataset: DatasetConfig
    model: ModelConfig
    train: TrainConfig
    target: int
    poison_ratio: float
    options: dict  # attack_options[<attack>] from the config
    clean_model: Callable[[], nn.Module]  # the run's clean model (same recipe), on demand


AttackFn = Callable[[AttackSection, DatasetBundle, torch.device, RunDir, int], AttackOutcome]


def attack_recipe(train: TrainConfig, options: dict, where: str) -> tuple[TrainConfig, dict]:
    """(recipe, the other options): an attack's `train` option overrides keys of the
    matrix's training recipe for that attack only (e.g. more epochs for WaNet)."""
    options = dict(options)
    override = options.pop("train", None)
    if not override:
        return train, options
    if not isinstance(override, dict):
        raise ConfigError(f"{where}.train must be a mapping of training keys")
    return parse_dataclass(TrainConfig, {**to_dict(train), **override}, f"{where}.train"), options


def _baseline_attack(name: str) -> AttackFn:
    """Adapter: a poisoning baseline trained as model stage `attack_<name>` of the run."""

    def attack(section: AttackSection, data: DatasetBundle, device, run: RunDir,
               seed: int) -> AttackOutcome:
        recipe, options = attack_recipe(section["train"], section["options"],
                                        f"attack_options.{name}")
        options = resolve_options(name, options, seed)
        spec = model_spec(section["model"], data.info)

        def build() -> tuple[nn.Module, dict]:
            extra = {"clean_model": section["clean_model"]()} if name == "clean_label" else {}
            outcome = OUTCOMES[name](data, spec, recipe, device, section["target"],
                                     section["poison_ratio"], seed, options, **extra)
            outcome.info["epochs"] = recipe.epochs
            return outcome.model, outcome.info

        model, info = run.model_stage(f"attack_{name}", build, device)
        model.eval()
        trigger = make_trigger(name, options, data.info, seed)
        return AttackOutcome(name, model, trigger, int(section["target"]), info)

    attack.__name__ = f"{name}_attack"
    attack.__doc__ = f"The {name} baseline for the matrix (see attacks.baselines)."
    return attack


def _import_badsnn_outcome() -> Callable:
    """`badsnn_outcome` from the attacks package, or the experiment module that has it."""
    for module in ("snnbackdoor.attacks.badsnn", "snnbackdoor.experiments.badsnn"):
        try:
            found = getattr(importlib.import_module(module), "badsnn_outcome", None)
        except ImportError:
            found = None
        if found is not None:
            return found
    raise RuntimeError(
        "attack 'badsnn' needs snnbackdoor.attacks.badsnn.badsnn_outcome(config, data, device, "
        "run), which this installation does not have; remove 'badsnn' from `attacks`"
    )


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def badsnn_config(section: AttackSection, seed: int):
    """The `kind: badsnn` config the matrix runs: the matrix's dataset, model, train recipe,
    seed and target, overlaid with `attack_options.badsnn` (keys of a badsnn config, e.g.
    `{badsnn: {poison_ratio: 0.3}, control: false}`)."""
    from .base import parse_config

    raw = {
        "kind": "badsnn",
        "name": f"{section['name']}_badsnn",
        "seed": int(seed),
        "device": section["device"],
        "dataset": to_dict(section["dataset"]),
        "model": to_dict(section["model"]),
        "train": to_dict(section["train"]),
        "badsnn": {"target": int(section["target"])},
    }
    return parse_config(_deep_merge(raw, section["options"]))


def badsnn_attack(section: AttackSection, data: DatasetBundle, device, run: RunDir,
                  seed: int) -> AttackOutcome:
    """BadSNN for the matrix: a full `kind: badsnn` run in the sub-folder `badsnn/` (its own
    resumable stages, report and models); the model comes back at its attack config S_a,
    chosen there on the validation split, with its optimised trigger T_o."""
    outcome_fn = _import_badsnn_outcome()
    config = badsnn_config(section, seed)
    sub = RunDir(run.path / "badsnn")
    sub.write_config(to_dict(config))
    outcome = outcome_fn(config, data, device, sub)
    if int(outcome.target) != int(section["target"]):
        raise ValueError(
            f"badsnn attacked target {outcome.target} but the matrix's target is "
            f"{section['target']}: leave attack_options.badsnn.badsnn.target unset"
        )
    if outcome.info:
        sub.write_metrics(outcome.info)  # the BadSNN run's metrics, when the outcome has them
    outcome.model.eval()
    return outcome


ATTACKS: dict[str, AttackFn] = {name: _baseline_attack(name) for name in BASELINES}
ATTACKS["badsnn"] = badsnn_attack
"""Attacks by name: `fn(section: AttackSection, data, device, run, seed) -> AttackOutcome`.
An attack stores its trained model in `run` (as a model stage) so a resumed run reuses it."""


# --------------------------------------------------------------------------- config


@dataclass
class Table2Experiment(ExperimentConfig):
    """Attack x defense matrix. Options dicts map an attack/defense/detector name to the
    keyword options of that method (defenses check their own keys when they run). An
    attack's options may hold `train: {...}`, keys of the training recipe to change for
    that attack only; BadSNN's options are keys of a `kind: badsnn` config."""

    # A finished matrix may be extended (more attacks, defenses, detectors, options for new
    # ones) and resumed: every cell is its own stage. Changing an existing entry is refused.
    extendable: ClassVar[tuple[str, ...]] = ("attacks", "defenses", "detectors", "attack_options",
                                             "defense_options", "detector_options")
    kind: str = "table2"
    name: str = "table2"
    seed: int = 0
    device: str = "auto"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    defenses: list[str] = field(default_factory=lambda: list(DEFAULT_DEFENSES))
    detectors: list[str] = field(default_factory=lambda: list(DEFAULT_DETECTORS))
    target: int = 0
    poison_ratio: float = 0.05  # of the whole training split (baselines; see attacks.baselines)
    defender_fraction: float = 0.05  # of the clean training split
    detection_samples: int = 1000  # clean and triggered test inputs per detector (0: all)
    attack_options: dict = field(default_factory=dict)
    defense_options: dict = field(default_factory=dict)
    detector_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.attacks:
            raise ValueError("attacks must name at least one attack")
        for kind, names in (("attacks", self.attacks), ("defenses", self.defenses),
                            ("detectors", self.detectors)):
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} lists a name twice: {names}")
        for name in self.attacks:
            if name not in ATTACKS:
                raise ValueError(unknown_name_message("attack", name, ATTACKS))
        if self.target < 0:
            raise ValueError(f"target must be a class index >= 0, got {self.target}")
        if not 0.0 <= self.poison_ratio <= 1.0:
            raise ValueError(f"poison_ratio must be in [0, 1], got {self.poison_ratio}")
        if not 0.0 < self.defender_fraction < 1.0:
            raise ValueError(f"defender_fraction must be in (0, 1), got {self.defender_fraction}")
        if self.detection_samples < 0:
            raise ValueError("detection_samples must be >= 0 (0 = every test sample)")
        # Options may name methods the run does not list (so `--set attacks=[badnet]` works
        # with a full preset), but every name must exist: a typo fails here.
        for name in self.attack_options:
            if name not in ATTACKS:
                raise ValueError(unknown_name_message("attack in attack_options", name, ATTACKS))
        for key in ("attack_options", "defense_options", "detector_options"):
            for name, value in getattr(self, key).items():
                if not isinstance(value, dict):
                    raise ValueError(f"{key}.{name} must be a mapping of options")
        for name, options in self.attack_options.items():
            if name in BASELINES:
                _, options = attack_recipe(self.train, options, f"attack_options.{name}")
                check_options(name, options)
        if "badsnn" in self.attacks or "badsnn" in self.attack_options:
            self._check_badsnn_options()
        registries = defense_registries(self.defenses, self.detectors, strict=False)
        if registries is not None:
            _check_defense_names(self.defenses, self.detectors, *registries)
            repairs, detector_fns = registries
            _check_defense_names(self.defense_options, self.detector_options, repairs,
                                 detector_fns, "defense_options", "detector_options")


    def _check_badsnn_options(self) -> None:
        """Build the BadSNN run's config now, so a wrong key fails before any training
        (skipped when the BadSNN module is not installed: the run then fails clearly)."""
        try:
            importlib.import_module("snnbackdoor.experiments.badsnn")
        except ImportError:
            return
        section = AttackSection(
            name=self.name, device=self.device, dataset=self.dataset, model=self.model,
            train=self.train, target=self.target, poison_ratio=self.poison_ratio,
            options=dict(self.attack_options.get("badsnn", {})), clean_model=lambda: None,
        )
        try:
            badsnn_config(section, self.seed)
        except (ConfigError, FileNotFoundError) as err:
            message = err.args[0] if err.args else str(err)
            raise ValueError(f"attack_options.badsnn: {message}") from err


def defense_registries(defenses, detectors, strict: bool = True):
    """(REPAIRS, DETECTORS) from `snnbackdoor.defenses`, looked up at run time.

    When the defenses package cannot be imported: an error if any defense other than `none`
    or any detector is asked for (strict), else None (parse time: checked again at run time).
    """
    try:
        module = importlib.import_module("snnbackdoor.defenses")
        return module.REPAIRS, module.DETECTORS
    except ImportError as err:
        wanted = [d for d in defenses if d != NO_DEFENSE] + list(detectors)
        if not wanted:
            return {}, {}
        if not strict:
            return None
        raise RuntimeError(
            f"defenses {wanted} need the snnbackdoor.defenses package, which failed to "
            f"import ({err}); run with `defenses: [none]` and `detectors: []`"
        ) from err


def _check_defense_names(defenses, detectors, repairs: dict, detector_fns: dict,
                         defense_word: str = "defense", detector_word: str = "detector") -> None:
    for name in defenses:
        if name != NO_DEFENSE and name not in repairs:
            raise ValueError(unknown_name_message(defense_word, name, [NO_DEFENSE, *repairs]))
    for name in detectors:
        if name not in detector_fns:
            raise ValueError(unknown_name_message(detector_word, name, detector_fns))


# --------------------------------------------------------------------------- pieces


def defender_index(
    y: torch.Tensor, fraction: float, seed: int, exclude: torch.Tensor | list | None = None
) -> torch.Tensor:
    """The defender's clean subset: `round(fraction * n_c)` (at least 1) samples of every
    class c, never an index in `exclude`, taken in the order of one seeded permutation."""
    y = torch.as_tensor(y).cpu()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed) + 104729))
    allowed = torch.ones(len(y), dtype=torch.bool)
    if exclude is not None and len(exclude):
        allowed[torch.as_tensor(exclude, dtype=torch.long).cpu()] = False
    chosen = []
    for label in y.unique():
        wanted = max(1, int(round(fraction * int((y == label).sum()))))
        members = order[(y[order] == label) & allowed[order]]
        chosen.append(members[:wanted])
    return torch.cat(chosen).sort().values


def _detection_inputs(data: DatasetBundle, outcome: AttackOutcome, count: int, seed: int):
    """Clean test inputs and triggered non-target test inputs (at most `count` each)."""
    test = data.test
    generator = torch.Generator().manual_seed(int(seed) + 15485863)

    def pick(index: torch.Tensor) -> torch.Tensor:
        if count and len(index) > count:
            index = index[torch.randperm(len(index), generator=generator)[:count]].sort().values
        return index.to(test.y.device)

    clean = test.floats(pick(torch.arange(len(test))))
    non_target = torch.nonzero(test.y.cpu() != outcome.target).flatten()
    triggered = apply_in_batches(outcome.trigger, test.floats(pick(non_target)))
    return clean, triggered


def _scalars(info: dict | None) -> dict:
    """The JSON-sized part of a defense's or detector's report (numbers, strings, flags)."""
    out = {}
    for key, value in (info or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
    return out


class _LazyAttack:
    """An attack materialised on first use (cells already done never load it)."""

    def __init__(self, name: str, section: AttackSection, data: DatasetBundle, device,
                 run: RunDir, seed: int, fraction: float) -> None:
        self.name, self.section, self.data = name, section, data
        self.device, self.run, self.seed, self.fraction = device, run, seed, fraction
        self._outcome: AttackOutcome | None = None
        self._defender: Split | None = None

    def outcome(self) -> AttackOutcome:
        if self._outcome is None:
            self._outcome = ATTACKS[self.name](self.section, self.data, self.device, self.run,
                                               self.seed)
            info = self._outcome.info
            self.run.stage(f"attack/{self.name}", lambda: {
                **_scalars(info),
                "test": info.get("test"),
                "poisoned_count": len(info.get("poisoned_index", [])),
            })
        return self._outcome

    def defender(self) -> Split:
        if self._defender is None:
            poisoned = self.outcome().info.get("poisoned_index", [])
            index = defender_index(self.data.train.y, self.fraction, self.seed, poisoned)
            self._defender = self.data.train.subset(index)
        return self._defender


# --------------------------------------------------------------------------- report


def _pct(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.2f}"


def table2_markdown(rows: list[dict], attacks: list[str], defenses: list[str]) -> str:
    """Rows = attacks, columns = defenses, cells `CA / ASR` in percent."""
    cells = {(r["attack"], r["defense"]): r for r in rows}
    head = ["Attack"] + [("none (before)" if d == NO_DEFENSE else d) for d in defenses]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for attack in attacks:
        parts = [attack]
        for defense in defenses:
            row = cells.get((attack, defense))
            parts.append(f"{_pct(row['ca'])} / {_pct(row['asr'])}" if row else "-")
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines)


def detection_markdown(rows: list[dict], attacks: list[str], detectors: list[str]) -> str:
    """Rows = attacks, columns = detectors, cells `detection rate / AUROC` in percent."""
    cells = {(r["attack"], r["detector"]): r for r in rows}
    head = ["Attack"] + list(detectors)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for attack in attacks:
        parts = [attack]
        for detector in detectors:
            row = cells.get((attack, detector))
            parts.append(f"{_pct(row['detection_rate'])} / {_pct(row['auroc'])}" if row else "-")
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines)


def table2_heatmap(rows: list[dict], attacks: list[str], defenses: list[str], path) -> None:
    """Two heatmaps side by side: ASR and CA (rows attacks, columns defenses), annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {(r["attack"], r["defense"]): r for r in rows}
    width = 2.2 + 1.05 * len(defenses)
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, 0.6 * len(attacks) + 1.8))
    for ax, key, cmap in ((axes[0], "asr", "Reds"), (axes[1], "ca", "Blues")):
        grid = torch.full((len(attacks), len(defenses)), float("nan"))
        for i, attack in enumerate(attacks):
            for j, defense in enumerate(defenses):
                value = cells.get((attack, defense), {}).get(key)
                if value is not None:
                    grid[i, j] = 100 * value
        ax.imshow(grid.numpy(), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(len(attacks)):
            for j in range(len(defenses)):
                value = float(grid[i, j])
                text = "n/a" if math.isnan(value) else f"{value:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if value > 60 else "black")
        ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right")
        ax.set_yticks(range(len(attacks)), attacks)
        ax.set_title(f"{key.upper()} (%, test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _csv(header: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = []
        for key in header:
            value = row.get(key)
            if isinstance(value, float):
                value = "nan" if not math.isfinite(value) else f"{value:.6g}"
            values.append("nan" if value is None else value)
        writer.writerow(values)
    return buffer.getvalue()


def _attack_line(info: dict) -> str:
    parts = []
    if info.get("poison_mode") == "per_batch":
        parts.append(f"a fresh {info.get('poison_ratio')} share of every batch poisoned")
    elif "poison_count" in info:
        parts.append(f"{info['poison_count']} poisoned training samples")
    if "epochs" in info:
        parts.append(f"{info['epochs']} epochs")
    if "val_asr" in info:
        parts.append(f"val CA {_pct(info.get('val_ca'))}, val ASR {_pct(info['val_asr'])}")
    return "; ".join(parts) or "see its run"


def _report(config: Table2Experiment, metrics: dict, defenses: list[str]) -> str:
    attacks = config.attacks
    lines = [
        f"# Attack x defense matrix: {config.name}",
        "",
        f"Dataset `{config.dataset.name}`, model `{config.model.name}` ({config.model.neuron}, "
        f"T={config.model.T}), seed {config.seed}, target class {config.target}, poisoning "
        f"ratio {config.poison_ratio} of the training split (baselines), defender subset "
        f"{metrics['defender']['count']} clean training samples "
        f"({config.defender_fraction:g}). Clean model CA: {_pct(metrics['clean_ca'])}%.",
        "",
        "Cells are `CA / ASR` in percent on the test split; ASR counts triggered non-target "
        "test samples sent to the target. `none (before)` is the attacked model before any "
        "defense. No setting was chosen on the test split or on ASR.",
        "",
        table2_markdown(metrics["table"], attacks, defenses),
        "",
        "Robust accuracy (triggered non-target samples still given their true label), %:",
        "",
        "| Attack | " + " | ".join(defenses) + " |",
        "|" + "---|" * (len(defenses) + 1),
    ]
    cells = {(r["attack"], r["defense"]): r for r in metrics["table"]}
    for attack in attacks:
        lines.append("| " + " | ".join(
            [attack] + [_pct(cells.get((attack, d), {}).get("ra")) for d in defenses]) + " |")
    lines += ["", "![ASR and CA](figures/table2_asr.png)", "", "## Attacks", ""]
    for attack in attacks:
        lines.append(f"- `{attack}`: {_attack_line(metrics['attacks'].get(attack) or {})}")
    if metrics.get("badsnn"):
        sel = metrics["badsnn"].get("selected", {})
        lines.append(
            f"- BadSNN ran as its own run in `badsnn/` (see `badsnn/report.md`): clean CA "
            f"{_pct(metrics['badsnn'].get('clean_ca'))}, base CA "
            f"{_pct(metrics['badsnn'].get('base_ca'))}, deployed at V_thr^a "
            f"{sel.get('v_threshold_a')}, tau^a {sel.get('tau_a')} (chosen on the validation "
            "split); its trigger is T_o."
        )
    lines.append("")
    if config.detectors:
        lines += [
            "## Detection",
            "",
            "Cells are `detection rate / AUROC` in percent: the share of triggered inputs "
            "flagged at the false-rejection rate fitted on the defender's clean subset.",
            "",
            detection_markdown(metrics["detection"], attacks, config.detectors),
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- runner


def _repair_cell(lazy: _LazyAttack, defense: str, repair: Callable | None, options: dict,
                 data: DatasetBundle, seed: int) -> dict:
    """One (attack, defense) cell: repair a copy (or not, for `none`), then measure."""
    outcome = lazy.outcome()
    model = outcome.model
    if defense != NO_DEFENSE:
        model = repair(model, lazy.defender(), data.val, options, seed)
    result = measure(model, data.test, outcome.trigger, outcome.target)
    return {**result, "defense_info": _scalars(getattr(model, "defense_info", {}))}


def _detect_cell(lazy: _LazyAttack, detector: Callable, options: dict, data: DatasetBundle,
                 config: Table2Experiment) -> dict:
    """One (attack, detector) cell on clean and triggered test inputs."""
    outcome = lazy.outcome()
    clean_x, triggered_x = _detection_inputs(data, outcome, config.detection_samples,
                                             config.seed)
    report = detector(outcome.model, lazy.defender(), clean_x, triggered_x, options,
                      config.seed)
    return _scalars(report)


def _badsnn_summary(run: RunDir) -> dict | None:
    """Top-level figures of the BadSNN sub-run (its metrics.json), when it has finished."""
    path = run.path / "badsnn" / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    keys = ("clean_ca", "base_ca", "selected", "malicious_config", "asr_o_clean_model")
    return {k: metrics.get(k) for k in keys}


@register_experiment("table2", Table2Experiment)
def run_table2(config: Table2Experiment, run: RunDir) -> dict:
    device = resolve_device(config.device)
    repairs, detector_fns = defense_registries(config.defenses, config.detectors)
    _check_defense_names(config.defenses, config.detectors, repairs, detector_fns)
    defenses = [NO_DEFENSE] + [d for d in config.defenses if d != NO_DEFENSE]
    data = dataset_from_config(config, device)
    if not config.target < data.info.num_classes:
        raise ConfigError(
            f"target {config.target} is not a class of {data.info.name} "
            f"(0..{data.info.num_classes - 1})"
        )
    clean, clean_info = run.model_stage(
        "clean", lambda: train_clean(config, data, device, "clean"), device
    )
    clean.eval()
    total = len(config.attacks) * (len(defenses) + len(config.detectors))
    bar = tqdm(total=total, desc="table2", unit="cell", disable=not config.train.progress)
    table: list[dict] = []
    detection: list[dict] = []
    for attack in config.attacks:
        section = AttackSection(
            name=config.name, device=config.device, dataset=config.dataset, model=config.model,
            train=config.train, target=config.target, poison_ratio=config.poison_ratio,
            options=dict(config.attack_options.get(attack, {})), clean_model=lambda: clean,
        )
        lazy = _LazyAttack(attack, section, data, device, run, config.seed,
                           config.defender_fraction)
        for defense in defenses:
            bar.set_postfix_str(f"{attack} x {defense}")
            options = dict(config.defense_options.get(defense, {}))
            stage = f"cell/{attack}/{defense}"
            if not run.done(stage):
                lazy.outcome()  # train (or load) the attack outside the cell's timing
            result = run.stage(stage, partial(
                _repair_cell, lazy, defense, repairs.get(defense), options, data, config.seed))
            table.append({"attack": attack, "defense": defense,
                          **{k: result[k] for k in ("ca", "asr", "ra")}})
            bar.update()
        for detector in config.detectors:
            bar.set_postfix_str(f"{attack} x {detector}")
            options = dict(config.detector_options.get(detector, {}))
            stage = f"detect/{attack}/{detector}"
            if not run.done(stage):
                lazy.outcome()
            result = run.stage(stage, partial(
                _detect_cell, lazy, detector_fns[detector], options, data, config))
            detection.append({"attack": attack, "detector": detector,
                              "detection_rate": result.get("detection_rate"),
                              "auroc": result.get("auroc")})
            bar.update()
    bar.close()

    defender_count = len(defender_index(data.train.y, config.defender_fraction, config.seed))
    seconds = run.stage_seconds()
    badsnn_stages = run.path / "badsnn" / "stages.json"
    if "badsnn" in config.attacks and badsnn_stages.exists():  # its own run's stages
        seconds["badsnn_run"] = round(
            sum(json.loads(badsnn_stages.read_text()).get("_seconds", {}).values()), 3)
    seconds["total"] = round(sum(seconds.values()), 3)
    metrics = {
        "clean_ca": clean_info["test_accuracy"],
        "table": table,
        "detection": detection,
        "attacks": {a: run.stages.get(f"attack/{a}") for a in config.attacks},
        "cells": {k: v for k, v in run.stages.items() if k.startswith(("cell/", "detect/"))},
        "defender": {"fraction": config.defender_fraction, "count": defender_count},
        "badsnn": _badsnn_summary(run) if "badsnn" in config.attacks else None,
        "seconds": seconds,
    }
    run.write_text("table.csv", _csv(["attack", "defense", "ca", "asr", "ra"], table))
    run.write_text("detection.csv",
                   _csv(["attack", "detector", "detection_rate", "auroc"], detection))
    table2_heatmap(table, config.attacks, defenses, run.path / "figures" / "table2_asr.png")
    run.write_text("report.md", _report(config, metrics, defenses))
    metrics["report"] = str(run.path / "report.md")
    return metrics


__all__ = [
    "ATTACKS",
    "AttackSection",
    "Table2Experiment",
    "badsnn_attack",
    "badsnn_config",
    "defender_index",
    "defense_registries",
    "detection_markdown",
    "run_table2",
    "table2_heatmap",
    "table2_markdown",
]
