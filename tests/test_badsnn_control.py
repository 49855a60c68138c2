"""BadSNN's collapse class (refused, avoided or allowed as a target), the eps rule on the
control, and the registered `badsnn_control` attack (the clean model at BadSNN's S_a)."""

import pytest
import torch

from snnbackdoor.attacks.badsnn import (
    BadSNNOptions,
    CollapseTargetError,
    badsnn,
    badsnn_control,
    collapse_record,
    resolve_target,
)
from snnbackdoor.attacks.base import AttackSetup, measure
from snnbackdoor.config import read_yaml
from snnbackdoor.errors import UserError
from snnbackdoor.experiments.badsnn import demo_options
from snnbackdoor.experiments.base import ModelConfig, model_spec, parse_config
from snnbackdoor.models import build_model
from snnbackdoor.neurons import NeuronConfig, get_neuron_params
from snnbackdoor.registry import lookup
from snnbackdoor.training import TrainConfig
from snnbackdoor.triggers.optimised import UNetConfig

MALICIOUS = NeuronConfig(1.8, 2.0)


def test_target_policies_on_a_collapse_class():
    record = {"collapse_class": 3, "collapse_class_malicious": 4}
    assert resolve_target(1, record, 10, "refuse") == 1
    with pytest.raises(CollapseTargetError, match="collapse class") as err:
        resolve_target(3, record, 10, "refuse")
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    with pytest.raises(CollapseTargetError):
        resolve_target(4, record, 10, "refuse")  # the answer at S_t counts too
    assert resolve_target(3, record, 10, "avoid") == 5  # next class that is neither
    assert resolve_target(9, {"collapse_class": 9, "collapse_class_malicious": 0}, 10,
                          "avoid") == 1
    assert resolve_target(3, record, 10, "allow") == 3
    with pytest.raises(ValueError, match="collapse_target"):
        BadSNNOptions(collapse_target="ignore")


def test_collapse_class_is_the_silent_heads_bias(clean_digits_model, digits):
    """With every neuron silent the readout is the last layer's bias alone."""
    record = collapse_record(clean_digits_model, digits.val, MALICIOUS)
    head_bias = [m for m in clean_digits_model.modules()
                 if isinstance(m, torch.nn.Linear)][-1].bias
    assert record["collapse_class"] == int(head_bias.argmax())
    assert record["collapse_share"] == 1.0
    assert 0 <= record["collapse_class_malicious"] < 10


def _setup(digits, clean, target):
    return AttackSetup(
        data=digits, build_model=lambda: build_model(model_spec(ModelConfig(), digits.info)),
        train=TrainConfig(epochs=2, lr=3e-3, progress=False), target=target, seed=0,
        clean_model=lambda: clean,
    )


TINY = dict(v_threshold_t=1.8, v_thresholds_a=[1.0, 1.3], ca_tolerance=0.2,
            deepfool_samples=32, deepfool_max_iter=5, keep_weight=1.0, eps_grid=[0.3, 0.1],
            eps_control_max=0.0, unet_patience=1,
            unet=UNetConfig(epochs=2, width=8, adv_config="attack", progress=False))


def test_a_collapse_target_is_refused_before_backdoor_training(clean_digits_model, digits):
    silent = collapse_record(clean_digits_model, digits.val, MALICIOUS)["collapse_class"]
    with pytest.raises(CollapseTargetError, match="collapse_target"):
        badsnn(_setup(digits, clean_digits_model, silent), BadSNNOptions(**TINY))


def test_badsnn_control_registers_and_ships_the_clean_model_at_s_a(clean_digits_model, digits):
    """The outcome is a copy of the clean model deployed at BadSNN's S_a, triggered by T_o
    re-fitted against it under the eps the rule chose; the shared clean model is untouched."""
    assert lookup("attack", "badsnn_control") is badsnn_control
    silent = collapse_record(clean_digits_model, digits.val, MALICIOUS)["collapse_class"]
    options = BadSNNOptions(**{**TINY, "collapse_target": "avoid", "control": False})
    outcome = badsnn_control(_setup(digits, clean_digits_model, silent), options)
    info = outcome.info
    assert outcome.target != silent and info["collapse"]["target_requested"] == silent
    assert outcome.model is not clean_digits_model
    assert all(p["v_threshold"] == 1.0 for p in get_neuron_params(clean_digits_model).values())
    assert outcome.deployed["v_threshold"] == info["selected"]["v_threshold_a"]
    # eps_control_max 0: no budget qualifies unless the control is fully dormant; tried
    # largest first, the smallest is kept when none does.
    search = info["eps_search"]
    assert [r["eps"] for r in search["rows"]] == [0.3, 0.1][:len(search["rows"])]
    assert info["eps"] == search["eps"] and (search["within"] or search["eps"] == 0.1)
    attacked = measure(outcome.model, digits.test, outcome.trigger, outcome.target)
    assert attacked["asr"] == pytest.approx(info["asr_o_clean_model"])
    assert set(outcome.triggers) == {"T_p", "T_o"}
    assert {"asr_o_transfer", "asr_o_nominal", "collapse_class"} <= set(info)


def test_demo_defaults_are_the_demo_config():
    config = parse_config(read_yaml("configs/badsnn_digits.yaml"))
    assert config.badsnn == demo_options()
    assert parse_config({"kind": "badsnn", "name": "demo"}).badsnn == demo_options()


def test_run_records_controls_curves_and_draws_them(tmp_path):
    """A tiny demo-style run: collapse class, eps chosen on the control, the transfer and
    nominal controls, both curves in metrics.json, the report and the sweep figures."""
    from snnbackdoor.experiments.base import run_experiment
    from snnbackdoor.report.badsnn_curves import sweep_curves

    config = parse_config({
        "kind": "badsnn", "name": "tiny", "train": {"epochs": 2, "progress": False},
        "figures": False, "eps_curve": [0.1, 0.3], "target": 3,
        "badsnn": {**{k: v for k, v in TINY.items() if k != "unet"}, "collapse_target": "avoid",
                   "unet": {"epochs": 2, "width": 8, "adv_config": "attack",
                            "progress": False}}})
    metrics = run_experiment(config, tmp_path).metrics
    assert metrics["collapse_class"] == metrics["collapse"]["collapse_class"] != metrics["target"]
    assert metrics["eps"] in (0.3, 0.1) and metrics["eps_search"]["rows"][0]["eps"] == 0.3
    for key in ("asr_o", "asr_o_clean_model", "asr_o_transfer", "asr_o_nominal"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["eps_curve"]) == {"0.1", "0.3"}
    assert set(metrics["eps_curve"]["0.1"]) == {"asr_o", "asr_o_nominal", "asr_o_clean_model",
                                                "asr_o_clean_model_nominal"}
    v = metrics["threshold_curve"]["1.3/2"]
    assert v["ca"] == metrics["grid"][1]["ca"] and 0 <= v["clean_asr_p"] <= 1
    matched = [r for r in metrics["threshold_curve"].values() if "clean_asr_p_ca_matched" in r]
    assert matched, metrics["threshold_curve"]  # the clean grid runs on to S_t's V_thr 1.8
    for r in matched:
        assert abs(r["clean_ca_ca_matched"] - r["ca"]) <= 0.02
        assert 1.0 <= r["clean_v_ca_matched"] <= 1.8 and 0 <= r["clean_asr_p_ca_matched"] <= 1
    report = (tmp_path / "report.md").read_text()
    assert "Controls of T_o" in report and "Collapse class" in report
    paths = sweep_curves([metrics, metrics], tmp_path / "sweep")
    assert [p.name for p in paths] == ["eps_curves.png", "threshold_curves.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
