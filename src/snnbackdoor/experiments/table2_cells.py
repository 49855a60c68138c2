"""One cell of the attack x defense matrix and what it needs: the attack as a lazily run
(or reloaded) outcome, the defender's clean subset, the repair or detector and its figures.
The runner (`table2.py`) calls these in its own process or inside executor tasks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..attacks.base import AttackOutcome, AttackSetup, measure
from ..attacks.poisoning import apply_in_batches
from ..data.bundle import DatasetBundle, Split
from ..defenses.base import Repaired
from ..detectors.scoring import Scores, detection_report
from ..io import read_json
from ..models.registry import build_model
from ..registry import get
from ..rundir import RunDir
from .base import model_spec, model_warning
from .table2_config import NO_DEFENSE, AttackPlan, Table2Experiment


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


def detection_inputs(data: DatasetBundle, outcome: AttackOutcome, count: int, seed: int):
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


def scalars(info: dict | None) -> dict:
    """The JSON-sized part of an attack's, defense's or detector's report (numbers, strings,
    flags)."""
    out = {}
    for key, value in (info or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
    return out


class LazyAttack:
    """An attack run (or, from its workdir, reloaded) on first use; cells already done never
    load it. With `run`, its summary is recorded there as stage `attack/<name>`."""

    def __init__(self, name: str, plan: AttackPlan, setup: AttackSetup, fraction: float,
                 run: RunDir | None = None) -> None:
        self.name, self.plan, self.setup, self.fraction, self.run = (
            name, plan, setup, fraction, run)
        self._outcome: AttackOutcome | None = None
        self._defender: Split | None = None

    def outcome(self) -> AttackOutcome:
        if self._outcome is None:
            outcome = self.plan.component.obj(self.setup, self.plan.options)
            if not isinstance(outcome, AttackOutcome):
                raise TypeError(f"attack {self.name!r} returned {type(outcome).__name__}, "
                                "not an AttackOutcome")
            outcome.model.eval()
            self._outcome = outcome
            if self.run is not None:
                self.run.stage(f"attack/{self.name}", self.summary)
        return self._outcome

    def summary(self) -> dict:
        """What the matrix records of the attack (stage `attack/<name>`)."""
        outcome = self.outcome()
        data = self.setup.data
        warning = model_warning(f"{self.name} model", outcome.model, data.test,
                                data.info.num_classes)
        if int(outcome.target) != int(self.setup.target):  # e.g. BadSNN's collapse_target: avoid
            moved = (f"{self.name} attacked class {int(outcome.target)}, not the matrix's target "
                     f"{self.setup.target} (the attack chose it; its ASR is measured there)")
            warning = f"{warning}; {moved}" if warning else moved
        return {"warning": warning, **scalars(outcome.info), "test": outcome.info.get("test"),
                "target": int(outcome.target),
                "poisoned_count": len(outcome.poisoned_index), "deployed": outcome.deployed}

    def defender(self) -> Split:
        if self._defender is None:
            train = self.setup.data.train
            index = defender_index(train.y, self.fraction, self.setup.seed,
                                   self.outcome().poisoned_index)
            self._defender = train.subset(index)
        return self._defender


def repair_cell(lazy: LazyAttack, defense: str, options: Any, data: DatasetBundle,
                config: Table2Experiment) -> dict:
    """One (attack, defense) cell: repair a copy (or not, for `none`), then measure. The
    repair gets the defender's clean subset and nothing else (no validation split): what
    it chooses, it chooses inside the subset; its `budget` (samples per use) is kept."""
    outcome = lazy.outcome()
    model: nn.Module = outcome.model
    info: dict = {}
    if defense != NO_DEFENSE:
        repaired = get("defense", defense).obj(model, lazy.defender(), None, options,
                                           config.seed)
        if not isinstance(repaired, Repaired):
            raise TypeError(f"defense {defense!r} returned {type(repaired).__name__}; a "
                            "repair returns defenses.base.Repaired(model, info)")
        model, info = repaired.model, repaired.info
    result = measure(model, data.test, outcome.trigger, outcome.target)
    return {**result, "defense_info": scalars(info), "defender_count": len(lazy.defender()),
            "budget": budget_of(info)}


def detect_cell(lazy: LazyAttack, detector: str, options: Any, data: DatasetBundle,
                config: Table2Experiment) -> dict:
    """One (attack, detector) cell on clean and triggered test inputs."""
    outcome = lazy.outcome()
    clean_x, triggered_x = detection_inputs(data, outcome, config.detection_samples,
                                            config.seed)
    scores = get("detector", detector).obj(outcome.model, lazy.defender(), clean_x,
                                           triggered_x, options, config.seed)
    if not isinstance(scores, Scores):
        raise TypeError(f"detector {detector!r} returned {type(scores).__name__}; a detector "
                        "returns detectors.scoring.Scores")
    report = detection_report(scores)
    return {**scalars(report), "defender_count": len(lazy.defender()),
            "budget": budget_of(report)}


def budget_of(info: dict) -> dict:
    """A method's `budget` (defender samples per use, ints), {} when it reports none."""
    budget = (info or {}).get("budget") or {}
    return {str(k): int(v) for k, v in budget.items()}


def attack_seconds(run: RunDir, attacks: list[str]) -> dict:
    """Seconds of each attack's own stages (in `attacks/<name>/stages.json`)."""
    seconds = {}
    for attack in attacks:
        path = run.path / "attacks" / attack / "stages.json"
        if path.exists():
            stages = read_json(path, dict, "attack stages file").get("_seconds", {})
            seconds[f"attack_{attack}"] = round(sum(stages.values()), 3)
    return seconds


def lazy_attack(config: Table2Experiment, attack: str, data: DatasetBundle, device,
                clean: Callable[[], nn.Module], run_path: Path,
                run: RunDir | None = None) -> LazyAttack:
    """Attack `attack` as the matrix runs it: its own setup and workdir `attacks/<name>`."""
    plan = config.attack_plan(attack)
    spec = model_spec(config.model, data.info)
    setup = AttackSetup(
        data=data, build_model=lambda: build_model(spec).to(device), train=plan.train,
        target=config.target, poison_ratio=config.poison_ratio, seed=config.seed,
        device=device, clean_model=clean, workdir=Path(run_path) / "attacks" / attack,
    )
    return LazyAttack(attack, plan, setup, config.defender_fraction, run)
