"""The attack x defense matrix: outputs, what attacks, defenses and detectors receive,
resuming, configs, and a matrix of components it has never heard of."""

import copy
import csv
import json
import math
from dataclasses import dataclass

import pytest
import torch

from snnbackdoor import registry
from snnbackdoor.attacks.base import AttackOutcome, AttackSetup
from snnbackdoor.config import ConfigError, read_yaml
from snnbackdoor.data import load_dataset
from snnbackdoor.defenses.base import Repaired
from snnbackdoor.detectors.scoring import Scores
from snnbackdoor.experiments.base import load_config, parse_config, run_experiment
from snnbackdoor.experiments.table2 import defender_index
from snnbackdoor.report.table2 import render_table2


def tiny(**extra) -> dict:
    config = {
        "kind": "table2",
        "name": "tiny",
        "device": "cpu",
        "dataset": {"name": "digits", "options": {"size": 8}},  # 8x8: four times faster
        "train": {"epochs": 1, "batch_size": 256, "progress": False},
        "attacks": ["badnet"],
        "defenses": ["none"],
        "detectors": [],
        "poison_ratio": 0.1,
    }
    config.update(extra)
    return config


def read_csv(path):
    with open(path) as handle:
        return list(csv.reader(handle))


def log_events(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


class Interrupt(Exception):
    pass


@pytest.fixture
def scratch_registry(monkeypatch):
    """Components registered inside a test are forgotten after it."""
    registry.discover()
    for kind in registry.KINDS:
        monkeypatch.setitem(registry._TABLE, kind, dict(registry._TABLE[kind]))


def test_matrix_writes_tables_hands_defenses_the_right_data_and_resumes(tmp_path,
                                                                        scratch_registry):
    out = tmp_path / "run"
    calls = {"repair": [], "detect": []}

    @registry.register("defense", "identity")
    def identity_repair(model, clean_subset, val_split, options, seed):
        """Changes nothing (a plugin defense without an options dataclass)."""
        calls["repair"].append((clean_subset, val_split, options, seed))
        if options.get("fail_once") and len(calls["repair"]) == 1:
            raise Interrupt("simulated crash in the middle of the matrix")
        return Repaired(copy.deepcopy(model), {"defense": "identity", "big": list(range(5))})

    @registry.register("detector", "fake")
    def fake_detector(model, clean_subset, clean_inputs, triggered_inputs, options, seed):
        """Scores that separate clean from triggered inputs only in part."""
        calls["detect"].append((clean_inputs, triggered_inputs, options))
        return Scores(torch.arange(100.0), torch.tensor([0.0, 99.5]),
                      torch.tensor([50.0, 99.5, 120.0, 130.0]), frr=0.1,
                      info={"detector": "fake", "threshold_tensor": torch.tensor(1.0)})

    recipe = {"badnet": {"train": {"epochs": 2}}}  # the attack's own recipe change
    first = run_experiment(parse_config(tiny(attack_options=recipe)), out)
    rows = read_csv(out / "table.csv")
    assert rows[0] == ["attack", "defense", "ca", "asr", "ra"]
    assert rows[1][:2] == ["badnet", "none"]
    values = [float(v) for v in rows[1][2:]]
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in values)
    assert read_csv(out / "detection.csv") == [["attack", "detector", "detection_rate", "auroc"]]
    assert "| Attack | none (before) |" in (out / "report.md").read_text()
    assert (out / "figures" / "table2_asr.png").stat().st_size > 1000
    assert first.metrics["table"][0]["ca"] == pytest.approx(values[0], abs=1e-6)
    assert 0 < first.metrics["clean_ca"] <= 1

    # Add a defense and a detector; the first attempt crashes inside the new cell.
    bigger = tiny(defenses=["none", "identity"], detectors=["fake"], attack_options=recipe,
                  defense_options={"identity": {"fail_once": True, "knob": 3}})
    with pytest.raises(Interrupt):
        run_experiment(parse_config(bigger), out)
    before = len(log_events(out))
    second = run_experiment(parse_config(bigger), out)
    status = {e["stage"]: e["status"] for e in log_events(out)[before:]}
    assert status["clean"] == "reused"
    assert status["attack/badnet"] == "reused"
    assert status["cell/badnet/none"] == "reused"
    assert status["cell/badnet/identity"] == "done"
    assert status["detect/badnet/fake"] == "done"
    # the attacked model was trained once, in its own folder, and loaded on every resume
    attack_dir = out / "attacks" / "badnet"
    assert [e["status"] for e in log_events(attack_dir)] == ["done", "reused", "reused"]

    # What the defense received: the defender's clean subset and options, no other data.
    subset, val_split, options, seed = calls["repair"][-1]
    data = load_dataset("digits", size=8)
    assert options == {"fail_once": True, "knob": 3} and seed == 0
    assert len(subset) == len(defender_index(data.train.y, 0.05, 0))
    assert val_split is None
    budget = second.metrics["defender_budget"]
    assert budget["subset"] == {"badnet": len(subset)} and budget["fraction"] == 0.05
    model_stage = json.loads((attack_dir / "stages.json").read_text())["model"]
    poisoned = set(model_stage["poisoned_index"])
    stages = json.loads((out / "stages.json").read_text())
    assert len(model_stage["history"]) == 2 and len(stages["clean"]["history"]) == 1
    assert len(poisoned) == round(0.1 * len(data.train))
    assert stages["attack/badnet"]["poisoned_count"] == len(poisoned)
    train_x = data.train.floats()
    matches = [int(torch.nonzero((train_x == x).flatten(1).all(1)).flatten()[0])
               for x in subset.x.float()]
    assert not poisoned & set(matches)  # disjoint from the poisoned samples
    assert torch.equal(subset.y, data.train.y[matches])  # clean labels
    # What the detector received: clean test inputs and BadNet-triggered non-target ones.
    clean_inputs, triggered_inputs, _ = calls["detect"][-1]
    assert len(clean_inputs) == len(data.test)
    assert len(triggered_inputs) == int((data.test.y != 0).sum())
    assert bool((triggered_inputs[..., -3:, -3:] == 1).all())

    rows = read_csv(out / "table.csv")
    assert [r[:2] for r in rows[1:]] == [["badnet", "none"], ["badnet", "identity"]]
    assert rows[2][2:] == rows[1][2:]  # an identity repair changes nothing
    # threshold: the 0.9 quantile of 0..99 (89.1); flagged 99.5, 120, 130 of 4; AUROC 6.5/8
    assert read_csv(out / "detection.csv")[1] == ["badnet", "fake", "0.75", "0.8125"]
    cell = second.metrics["cells"]["cell/badnet/identity"]
    assert cell["defense_info"] == {"defense": "identity"}  # scalars only in the metrics
    detect = second.metrics["cells"]["detect/badnet/fake"]
    assert detect["threshold_tensor"] == 1.0 and detect["false_rejection_rate"] == 0.5
    report = (out / "report.md").read_text()
    assert "| badnet † |" in report and "## Detection" in report  # its own train.epochs
    assert "ratio 10% of the training split" in report and "75.00 / 81.25" in report

    # A finished run does no work on resume.
    before = len(log_events(out))
    third = run_experiment(parse_config(bigger), out)
    assert all(e["status"] == "reused" for e in log_events(out)[before:])
    assert third.metrics["table"] == second.metrics["table"]

    # The report is rendered from the run directory alone, and again on demand.
    (out / "report.md").unlink()
    written = render_table2(out)
    assert {p.name for p in written} == {"table.csv", "detection.csv", "report.md",
                                         "table2_asr.png"}
    assert (out / "report.md").read_text() == report


@dataclass(frozen=True)
class StripeOptions:
    """A bright last row."""

    value: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 1:
            raise ValueError(f"stripe value must be in [0, 1], got {self.value}")


def test_the_matrix_runs_an_attack_it_has_never_heard_of(tmp_path, scratch_registry):
    seen = {}

    @registry.register("attack", "stripe", options=StripeOptions)
    def stripe(setup: AttackSetup, options: StripeOptions) -> AttackOutcome:
        """A test attack: no training, a bright last row as its trigger."""
        seen.update(setup=setup, options=options)

        def trigger(x):
            x = x.clone()
            x[..., -1, :] = options.value
            return x

        model = copy.deepcopy(setup.clean_model())  # attacks the next class, as BadSNN's
        return AttackOutcome("stripe", model, trigger, setup.target + 1,  # collapse 'avoid'
                             info={"summary": "a stripe that does nothing", "nested": {"a": 1}},
                             poisoned_index=[0, 1, 2], deployed={"v_threshold": 1.0})

    config = parse_config(tiny(attacks=["stripe"], target=2, seed=3, detectors=["spike_stats"],
                               attack_options={"stripe": {"value": 0.5,
                                                          "train": {"epochs": 3}}}))
    result = run_experiment(config, tmp_path / "run")
    setup = seen["setup"]
    assert seen["options"] == StripeOptions(0.5)  # parsed into its dataclass
    assert setup.train.epochs == 3 and config.train.epochs == 1  # per-attack recipe only
    assert (setup.target, setup.seed, setup.poison_ratio) == (2, 3, 0.1)
    assert setup.workdir == tmp_path / "run" / "attacks" / "stripe"
    attack = result.metrics["attacks"]["stripe"]
    assert attack["summary"] == "a stripe that does nothing" and "nested" not in attack
    assert attack["poisoned_count"] == 3 and attack["deployed"] == {"v_threshold": 1.0}
    assert attack["target"] == 3  # measured at the class it attacked, and said so
    assert any("stripe attacked class 3, not the matrix's target 2" in w
               for w in result.metrics["warnings"])
    assert result.metrics["table"][0]["attack"] == "stripe"
    (row,) = result.metrics["detection"]  # the spike-statistics detector, registered too
    assert row["detector"] == "spike_stats" and 0 <= row["auroc"] <= 1
    assert "- `stripe`: a stripe that does nothing" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(ConfigError, match="Did you mean 'value'"):
        parse_config(tiny(attacks=["stripe"], attack_options={"stripe": {"valeu": 0.5}}))
    with pytest.raises(ConfigError, match="stripe value"):
        parse_config(tiny(attacks=["stripe"], attack_options={"stripe": {"value": 2.0}}))


def test_defender_subset_is_stratified_seeded_and_avoids_poisoned_samples(digits):
    y = digits.train.y
    index = defender_index(y, 0.05, seed=0)
    assert torch.equal(index, defender_index(y, 0.05, seed=0))
    assert not torch.equal(index, defender_index(y, 0.05, seed=1))
    for label in range(10):
        assert int((y[index] == label).sum()) == round(0.05 * int((y == label).sum()))
    exclude = index[::2]
    other = defender_index(y, 0.05, seed=0, exclude=exclude)
    assert not set(other.tolist()) & set(exclude.tolist())
    assert len(other) == len(index)
    assert len(set(other.tolist()) & set(index.tolist())) == len(index) - len(exclude)


def test_bad_matrix_configs_fail_before_any_work():
    with pytest.raises(ConfigError, match="Did you mean 'badnet'"):
        parse_config(tiny(attacks=["badnets"]))
    with pytest.raises(ConfigError, match="attacks must name at least one attack"):
        parse_config(tiny(attacks=[]))
    with pytest.raises(ConfigError, match="unknown defense"):
        parse_config(tiny(defenses=["none", "fine_tuning"]))
    with pytest.raises(ConfigError, match="unknown detector"):
        parse_config(tiny(detectors=["stripp"]))
    with pytest.raises(ConfigError, match="unknown attack in attack_options 'blnd'"):
        parse_config(tiny(attack_options={"blnd": {"alpha": 0.1}}))
    with pytest.raises(ConfigError, match="unknown defense_options"):
        parse_config(tiny(defense_options={"fintune": {}}))
    with pytest.raises(ConfigError, match="Did you mean 'alpha'"):  # checked though not listed
        parse_config(tiny(attack_options={"blend": {"alpah": 0.1}}))
    parse_config(tiny(attack_options={"blend": {"alpha": 0.1}}))  # options of an unlisted one
    with pytest.raises(ConfigError, match="badnet position"):
        parse_config(tiny(attack_options={"badnet": {"position": "bottom_rigth"}}))
    with pytest.raises(ConfigError, match="defense_options.finetune.epoch"):
        parse_config(tiny(defenses=["none", "finetune"], defense_options={"finetune":
                                                                          {"epoch": 3}}))
    with pytest.raises(ConfigError, match="strip blend"):
        parse_config(tiny(detectors=["strip"], detector_options={"strip": {"blend": "mix"}}))
    with pytest.raises(ConfigError, match="poison_ratio"):
        parse_config(tiny(poison_ratio=1.5))
    with pytest.raises(ConfigError, match="attack_options.badnet.train"):
        parse_config(tiny(attack_options={"badnet": {"train": {"epoch": 3}}}))


def test_parsed_options_reach_the_methods_and_the_config_stays_as_written():
    raw = tiny(attacks=["badnet", "wanet"], defenses=["none", "finetune"], detectors=["strip"],
               attack_options={"wanet": {"s": 2.0, "train": {"epochs": 4}},
                               "badnet": {"position": [0, 1]}},
               defense_options={"finetune": {"epochs": 2}})
    config = parse_config(raw)
    assert config.attack_plan("badnet").options.position == (0, 1)
    assert config.attack_plan("wanet").options.s == 2.0
    assert config.attack_plan("wanet").train.epochs == 4
    assert config.method_options("defense", "finetune").epochs == 2
    assert config.method_options("detector", "strip").overlays == 20  # defaults when unset
    assert config.attack_options == raw["attack_options"]  # the fields are not rewritten


def _without_badsnn(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["attacks"] = [a for a in raw["attacks"] if a != "badsnn"]
    raw["attack_options"].pop("badsnn", None)
    return raw


def test_presets_parse(tmp_path):
    for name in ("digits", "cifar10", "gtsrb", "cifar100"):
        raw = read_yaml(f"configs/table2_{name}.yaml")
        assert {"none", "finetune", "clp", "anp", "nad", "tsbd", "fine_pruning"} <= set(
            raw["defenses"])
        assert {"strip", "spectral"} <= set(raw["detectors"])
        # every baseline's options in the preset parse into its options dataclass
        config = parse_config(_without_badsnn(raw), [f"dataset.root={tmp_path}"])
        assert {"badnet", "blend", "wanet", "clean_label"} <= set(config.attacks)
        assert config.dataset.name == name
        if name != "digits":
            assert config.poison_ratio == 0.05 and config.model.T == 4
    digits = parse_config(_without_badsnn(read_yaml("configs/table2_digits.yaml")))
    assert "spike_stats" in digits.detectors
    assert digits.attack_plan("clean_label").options.surrogate == "adversarial"
    assert digits.attack_plan("wanet").train.epochs == 30
    assert digits.attack_plan("wanet").options.poison_mode == "per_batch"
    if "badsnn" not in registry.names("attack"):
        pytest.skip("attack 'badsnn' is not registered on this branch (BadSNN's own branch)")
    assert "badsnn" in load_config("configs/table2_digits.yaml").attacks
