"""The BadSNN experiment end to end on a tiny budget: every output, resume, re-rendering from
the run directory, and the event-frame path (T_s chosen by `trigger: auto`)."""

import json

import pytest

from snnbackdoor.checkpoint import load_model
from snnbackdoor.experiments.base import parse_config, run_experiment
from snnbackdoor.neurons import get_neuron_params
from snnbackdoor.report.badsnn import render_badsnn

TINY = {
    "kind": "badsnn",
    "name": "tiny",
    "train": {"epochs": 3, "progress": False},
    "badsnn": {"v_threshold_t": 1.8, "v_thresholds_a": [1.0, 1.3], "deepfool_samples": 48,
               "collapse_target": "avoid",
               "deepfool_max_iter": 10, "unet": {"epochs": 2, "width": 8, "progress": False}},
    "analyze": {"v_thresholds": [1.0, 2.0], "taus": [2.0], "powers": [1.0, 2.0]},
}


def test_badsnn_run_writes_every_output_and_resumes(tmp_path):
    result = run_experiment(parse_config(TINY), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"clean_ca", "base_ca", "selected", "grid", "asr_o_clean_model",
                            "seconds", "trigger", "target", "sweeps"}
    assert set(metrics["selected"]) == {"v_threshold_a", "tau_a", "ca", "asr_p", "asr_o"}
    assert len(metrics["grid"]) == 2 and all(set(r) == set(metrics["selected"])
                                             for r in metrics["grid"])
    assert 0 <= metrics["asr_o_clean_model"] <= 1 and metrics["seconds"]["total"] > 0
    assert metrics["trigger"] == "optimised" and metrics["collapse"]["target_requested"] == 0
    assert metrics["target"] == metrics["collapse"]["target"] != metrics["collapse_class"]
    assert metrics["selection"]["within_tolerance"] is True
    assert metrics["poisoning"]["target_class_ratio"] == 0.5
    report = (tmp_path / "report.md").read_text()
    assert "| Clean CA | Base CA | V_thr^a |" in report and "Control" in report
    for name in ("fig2_clean", "fig2_badsnn", "fig3_grid", "fig5_triggers"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in report
    assert (tmp_path / "trigger_o.safetensors").exists()
    deployed = load_model(tmp_path / "badsnn_deployed.safetensors")
    assert all(p["v_threshold"] == metrics["v_threshold_a"]
               for p in get_neuron_params(deployed).values())

    again = run_experiment(parse_config(TINY), tmp_path)
    assert again.metrics["selected"] == result.metrics["selected"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    reused = {e["stage"] for e in log if e.get("status") == "reused"}
    assert {"clean_model", "malicious_config", "badsnn_model", "grid_first", "trigger_o",
            "grid", "control", "spikes_and_perturbation", "figures"} <= reused

    (tmp_path / "report.md").unlink()
    (tmp_path / "figures" / "fig3_grid.png").unlink()
    paths = render_badsnn(tmp_path)  # from the run directory alone: no data, no model
    assert (tmp_path / "report.md").read_text() == report
    assert tmp_path / "figures" / "fig3_grid.png" in paths


def test_event_run_selects_with_t_s_and_records_the_trigger(tmp_path):
    config = parse_config({
        "kind": "badsnn", "name": "tiny_events",
        "dataset": {"name": "ndigits", "options": {"T": 4, "limit": 300}},
        "model": {"name": "nmnist_net"},
        "train": {"epochs": 2, "progress": False},
        "badsnn": {"v_threshold_t": 1.5, "v_thresholds_a": [1.0, 1.2], "frames": "counts",
                   "noise_beta_sweep": [0.0, 0.03]},
        "analyze": {"v_thresholds": [1.0, 2.0], "taus": [2.0]},
    })
    assert config.badsnn.trigger == "auto"  # what config.yaml records is what ran
    metrics = run_experiment(config, tmp_path).metrics
    assert metrics["trigger"] == "noise" and metrics["selection"]["key"] == "val_asr_s"
    assert set(metrics["selected"]) == {"v_threshold_a", "tau_a", "ca", "asr_s", "asr_s_unit",
                                        "asr_thin"}
    assert metrics["frames"] == "counts" and metrics["frame_scale"] == 1.0
    assert [r["beta"] for r in metrics["asr_s_by_beta"]] == [0.0, 0.03]
    assert "asr_s_clean_model" in metrics["control"]
    assert (tmp_path / "figures" / "frames.png").stat().st_size > 1000
    assert "trigger: auto" in (tmp_path / "config.yaml").read_text()


def test_an_image_trigger_on_event_data_is_refused_before_training(tmp_path):
    config = parse_config({"kind": "badsnn", "dataset": {"name": "ndigits"},
                           "model": {"name": "nmnist_net"}, "badsnn": {"trigger": "optimised"}})
    with pytest.raises(ValueError, match="for images"):
        run_experiment(config, tmp_path)
    assert not (tmp_path / "clean_model.safetensors").exists()



def test_badsnn_presets_and_matrix_blocks_parse_as_the_attack_options():
    """Every BadSNN preset parses (sweep cells included), and each matrix's
    `attack_options.badsnn` is the attack's option set, read key by key."""
    from pathlib import Path

    import yaml

    from snnbackdoor.attacks.badsnn import BadSNNOptions
    from snnbackdoor.config import parse_dataclass, set_key
    from snnbackdoor.registry import get

    configs = Path(__file__).resolve().parent.parent / "configs"
    assert get("attack", "badsnn").options is BadSNNOptions
    for path in sorted(configs.glob("badsnn_*.yaml")):
        data = yaml.safe_load(path.read_text())
        sweep = data.pop("sweep", {})
        if data["dataset"].get("root", "") is None:
            data["dataset"]["root"] = str(configs)  # any existing folder: only parsing here
        for key, values in sweep.items():
            set_key(data, key, values[0])
        parse_config(data)
    for path in sorted(configs.glob("table2_*.yaml")):
        block = yaml.safe_load(path.read_text())["attack_options"]["badsnn"]
        options = parse_dataclass(BadSNNOptions, block, "attack_options.badsnn")
        assert options.control is False and 0 < options.target_class_ratio <= 1


def test_the_attack_trains_its_clean_model_with_the_experiment_recipe(digits):
    """Without `setup.clean_model` BadSNN trains one itself: bit for bit the clean model of
    a `kind: badsnn` run with the same recipe and seed (so resuming either reuses the same)."""
    import torch

    from snnbackdoor.attacks.badsnn import train_clean_model
    from snnbackdoor.attacks.base import AttackSetup
    from snnbackdoor.experiments.base import new_model, train_clean

    config = parse_config({"kind": "badsnn", "seed": 3,
                           "train": {"epochs": 1, "progress": False}})
    device = torch.device("cpu")
    reference, _ = train_clean(config, digits, device)
    setup = AttackSetup(data=digits, build_model=lambda: new_model(config, digits.info, device),
                        train=config.train, seed=config.seed)
    model, info = train_clean_model(setup, digits)
    for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert set(info) >= {"val_accuracy", "test_accuracy"}
