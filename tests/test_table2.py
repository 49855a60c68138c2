"""The attack x defense matrix: outputs, what defenses receive, resuming, configs."""

import copy
import csv
import json
import math

import pytest
import torch

import snnbackdoor.defenses as defenses
from snnbackdoor.config import ConfigError
from snnbackdoor.data import load_dataset
from snnbackdoor.experiments.base import load_config, parse_config, run_experiment
from snnbackdoor.experiments.table2 import AttackSection, badsnn_config, defender_index


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


def test_matrix_writes_tables_hands_defenses_the_right_data_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"repair": [], "detect": []}

    def identity_repair(model, clean_subset, val_split, options, seed):
        calls["repair"].append((clean_subset, val_split, options, seed))
        if options.get("fail_once") and len(calls["repair"]) == 1:
            raise Interrupt("simulated crash in the middle of the matrix")
        repaired = copy.deepcopy(model)
        repaired.defense_info = {"defense": "identity", "big": list(range(5))}
        return repaired

    def fake_detector(model, clean_subset, clean_inputs, triggered_inputs, options, seed):
        calls["detect"].append((clean_inputs, triggered_inputs, options))
        return {"detection_rate": 0.5, "auroc": 0.75, "threshold": torch.tensor(1.0)}

    monkeypatch.setitem(defenses.REPAIRS, "identity", identity_repair)
    monkeypatch.setitem(defenses.DETECTORS, "fake", fake_detector)

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
    events = log_events(out)[before:]
    status = {e["stage"]: e["status"] for e in events}
    assert status["attack_badnet"] == "reused"  # the attacked model is trained once
    assert status["clean"] == "reused"
    assert status["cell/badnet/none"] == "reused"
    assert status["cell/badnet/identity"] == "done"
    assert status["detect/badnet/fake"] == "done"
    assert not any(e["status"] == "done" and e["stage"].startswith("attack_") for e in events)

    # What the defense received: the defender's clean subset, the validation split, options.
    subset, val_split, options, seed = calls["repair"][-1]
    data = load_dataset("digits", size=8)
    assert options == {"fail_once": True, "knob": 3} and seed == 0
    assert len(subset) == len(defender_index(data.train.y, 0.05, 0))
    assert torch.equal(val_split.y, data.val.y)
    stages = json.loads((out / "stages.json").read_text())
    poisoned = set(stages["attack_badnet"]["poisoned_index"])
    assert len(stages["attack_badnet"]["history"]) == 2 and len(stages["clean"]["history"]) == 1
    assert len(poisoned) == round(0.1 * len(data.train))
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
    assert read_csv(out / "detection.csv")[1] == ["badnet", "fake", "0.5", "0.75"]
    cell = second.metrics["cells"]["cell/badnet/identity"]
    assert cell["defense_info"] == {"defense": "identity"}  # scalars only in the metrics
    report = (out / "report.md").read_text()
    assert "| badnet |" in report and "## Detection" in report

    # A finished run does no work on resume.
    before = len(log_events(out))
    third = run_experiment(parse_config(bigger), out)
    assert all(e["status"] == "reused" for e in log_events(out)[before:])
    assert third.metrics["table"] == second.metrics["table"]


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
    with pytest.raises(ConfigError, match="unknown defense"):
        parse_config(tiny(defenses=["none", "fine_tuning"]))
    with pytest.raises(ConfigError, match="unknown detector"):
        parse_config(tiny(detectors=["stripp"]))
    with pytest.raises(ConfigError, match="unknown attack in attack_options 'blnd'"):
        parse_config(tiny(attack_options={"blnd": {"alpha": 0.1}}))
    with pytest.raises(ConfigError, match="unknown defense_options"):
        parse_config(tiny(defense_options={"fintune": {}}))
    with pytest.raises(ConfigError, match="valid options"):  # checked though not listed
        parse_config(tiny(attack_options={"blend": {"alpah": 0.1}}))
    parse_config(tiny(attack_options={"blend": {"alpha": 0.1}}))  # options of an unlisted one
    with pytest.raises(ConfigError, match="valid options"):
        parse_config(tiny(attack_options={"badnet": {"sise": 4}}))
    with pytest.raises(ConfigError, match="poison_ratio"):
        parse_config(tiny(poison_ratio=1.5))
    with pytest.raises(ConfigError, match="attack_options.badnet.train"):
        parse_config(tiny(attack_options={"badnet": {"train": {"epoch": 3}}}))
    with pytest.raises(ConfigError, match="attack_options.badsnn"):
        parse_config(tiny(attacks=["badsnn"], attack_options={"badsnn": {"badsnn": {"P": 1}}}))


def test_presets_parse_and_badsnn_gets_the_matrix_recipe(tmp_path):
    digits = load_config("configs/table2_digits.yaml")
    assert set(digits.attacks) == {"badnet", "blend", "wanet", "clean_label", "badsnn"}
    assert {"none", "finetune", "clp", "anp", "nad", "tsbd", "fine_pruning"} <= set(
        digits.defenses)
    assert set(digits.detectors) == {"strip", "spectral"}
    for name in ("cifar10", "gtsrb", "cifar100"):
        config = load_config(f"configs/table2_{name}.yaml", [f"dataset.root={tmp_path}"])
        assert config.poison_ratio == 0.05 and config.model.T == 4
        assert config.dataset.name == name
    section = AttackSection(name="m", device="cpu", dataset=digits.dataset, model=digits.model,
                            train=digits.train, target=2, poison_ratio=0.05,
                            options=digits.attack_options.get("badsnn", {}),
                            clean_model=lambda: None)
    config = badsnn_config(section, seed=7)
    assert config.kind == "badsnn" and config.seed == 7
    assert config.badsnn.target == 2
    assert config.train.epochs == digits.train.epochs
    assert config.model == digits.model
