"""`kind: scan`: a population of clean and backdoored models, every model-level detector
(registry kind `scanner`) run on each, scored by AUROC over models and by how often the
suspected target is the true one.

Every model and every model's scan is its own resumable stage (`models/<member>`,
`scan_<member>`); the tables are written from the stages at the end (report/scan.py).
BadSNN members need only the dual-spike model (its public stage `train_dual_spike`), shipped
at an attack config chosen on clean validation accuracy alone (`_shipped`); the baselines
run through the registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from ..attacks.badsnn import train_dual_spike
from ..attacks.base import AttackSetup, measure
from ..config import ConfigError, check_range
from ..io import atomic_write_json
from ..neurons import NeuronConfig, set_neuron_params
from ..registry import get, names
from ..report.scan import render_scan, score_rows
from ..rundir import RunDir
from ..scanning import scan_model
from ..training import evaluate, seed_everything
from ..util import resolve_device
from .base import ExperimentConfig, dataset_from_config, new_model, register_experiment, train_clean
from .table2 import defender_index
from .table2_config import attack_plan


@dataclass
class ScanExperiment(ExperimentConfig):
    """Population sizes per attack (`clean` for clean models), attack options (as in a
    matrix, `train: {...}` changes the recipe for one attack), the scanners and their
    options, and the defender's clean subset (a share of the training split)."""

    kind: str = "scan"
    population: dict = field(default_factory=lambda: {"clean": 10, "badsnn": 10, "badnet": 5,
                                                       "blend": 5, "wanet": 5})
    attack_options: dict = field(default_factory=dict)
    scanners: list[str] = field(default_factory=lambda: ["tmpbd", "trigger_inversion",
                                                         "neuron_scan"])
    scanner_options: dict = field(default_factory=dict)
    poison_ratio: float = 0.05
    defender_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, count in self.population.items():
            if name != "clean":
                get("attack", name)
            check_range(f"population.{name}", count, 0, 1000, integer=True)
        if not self.population.get("clean"):
            raise ConfigError("population.clean must be >= 1: AUROC compares with clean models")
        known = names("scanner")
        for name in [*self.scanners, *self.scanner_options]:
            if name not in known:
                get("scanner", name)  # did-you-mean
        if "badsnn" in self.population and self.badsnn_options().v_threshold_t is None:
            raise ConfigError("attack_options.badsnn.v_threshold_t must be set for a scan "
                              "population (no clean model is trained per BadSNN member)")
        check_range("poison_ratio", self.poison_ratio, 0.0, 1.0, low_open=True)
        check_range("defender_fraction", self.defender_fraction, 0.0, 0.9, low_open=True)

    def plan(self, attack: str):
        return attack_plan(attack, self.train, self.attack_options.get(attack, {}))

    def badsnn_options(self):
        return self.plan("badsnn").options


def members(config: ScanExperiment, num_classes: int) -> list[dict]:
    """Every model of the population: name, attack, seed and target (targets cycle over
    the classes, each attack from its own offset)."""
    out = []
    for a, (attack, count) in enumerate(config.population.items()):
        for i in range(count):
            seed = config.seed + 1000 * (a + 1) + i
            target = None if attack == "clean" else (3 * i + a) % num_classes
            out.append({"member": f"{attack}_{i}", "attack": attack, "seed": seed,
                        "target": target})
    return out


def _train_member(config: ScanExperiment, data, device, member: dict):
    attack, seed, target = member["attack"], member["seed"], member["target"]
    if attack == "clean":
        cfg = _with_seed(config, seed)
        return train_clean(cfg, data, device, description=member["member"])
    if attack == "badsnn":
        plan = config.plan("badsnn")
        opts = plan.options
        recipe = replace(plan.train, seed=seed)
        seed_everything(seed)
        model = new_model(config, data.info, device)
        malicious = NeuronConfig(opts.v_threshold_t, opts.tau_t)
        model, info = train_dual_spike(model, data, recipe, malicious, target,
                                       opts.target_class_ratio, seed)
        own = data.test.subset((data.test.y == target).nonzero().flatten())
        info = {"test_accuracy": info["base_ca"], "poisoned_count": info["poisoned_count"],
                "target_recall_at_malicious": evaluate(model, own, neuron_config=malicious)}
        return model, info
    plan = config.plan(attack)
    setup = AttackSetup(data=data, build_model=lambda: new_model(config, data.info, device),
                        train=plan.train, target=target, poison_ratio=config.poison_ratio,
                        seed=seed, device=device)
    outcome = plan.component.obj(setup, plan.options)
    return outcome.model, measure(outcome.model, data.test, outcome.trigger, target)


def _with_seed(config: ScanExperiment, seed: int):
    return replace(config, seed=seed, train=replace(config.train, seed=seed))


@register_experiment("scan", ScanExperiment)
def run_scan(config: ScanExperiment, run: RunDir) -> dict:
    """Train (or reload) every member, scan it with every scanner, write the tables."""
    device = resolve_device(config.device)
    data = dataset_from_config(config, device)
    start = time.perf_counter()
    population = members(config, data.info.num_classes)
    for member in population:
        name = member["member"]
        model, info = run.model_stage(name, lambda m=member: _train_member(config, data, device,
                                                                          m), device,
                                      folder="models")
        subset = data.train.subset(defender_index(data.train.y, config.defender_fraction,
                                                  member["seed"], None))
        run.stage(f"scan_{name}", lambda m=model, s=subset, mb=member, i=info: _scan(
            config, *_shipped(config, m, data, mb), s, mb, i))
    rows = score_rows(population, {m["member"]: run.stages[f"scan_{m['member']}"]
                                   for m in population})
    atomic_write_json(run.path / "scores.json", {"rows": rows})
    metrics = {"members": len(population), "seconds_this_call":
               round(time.perf_counter() - start, 1)}
    run.write_metrics(metrics)
    render_scan(run.path)
    return metrics


def _shipped(config: ScanExperiment, model, data, member: dict) -> tuple:
    """The model as its attacker ships it, and where: a BadSNN member at the attack config
    S_a = the largest V_thr^a of its grid whose val CA stays within `ca_tolerance` of the
    nominal one (a choice on clean validation data only: no trigger is fitted here)."""
    if member["attack"] != "badsnn":
        return model, None
    opts = config.badsnn_options()
    base = evaluate(model, data.val)
    fine = [v for v in sorted(opts.v_thresholds_a)
            if evaluate(model, data.val, neuron_config=NeuronConfig(v)) >= base - opts.ca_tolerance]
    v_a = max(fine, default=None)
    if v_a is not None:
        set_neuron_params(model, v_threshold=v_a)
    return model, {"v_threshold": v_a, "val_base_ca": base}


def _scan(config: ScanExperiment, model, deployed, subset, member: dict, info: dict) -> dict:
    result = scan_model(model, subset, detectors=config.scanners,
                        options=config.scanner_options, seed=member["seed"])
    record = result.as_dict()
    return {**member, "model": info, "deployed": deployed, "verdict": record["verdict"],
            "suspected": record["target"], "detectors": record["detectors"]}
