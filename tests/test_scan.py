"""Model-level detectors (registry kind `scanner`): their statistics on constructed inputs,
their registration and options, and scan_model's verdict on real planted backdoors."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from snnbackdoor import registry
from snnbackdoor.cli import main
from snnbackdoor.detectors.model_base import ModelScore, mad_anomaly
from snnbackdoor.detectors.neuron_scan import class_evidence, class_rates
from snnbackdoor.detectors.tmpbd import gamma_p_values
from snnbackdoor.models import build_model
from snnbackdoor.scanning import ScanResult, scan_model

SCANNERS = {"tmpbd", "trigger_inversion", "neuron_scan"}


@pytest.fixture(scope="module")
def net():
    """An untrained digits_net (the statistics' contracts need no training)."""
    torch.manual_seed(0)
    return build_model("digits_net", num_classes=10, in_channels=1, image_size=16, T=2)


def test_scanners_are_their_own_kind_and_listed_apart():
    assert set(registry.names("scanner")) >= SCANNERS
    assert not SCANNERS & set(registry.names("detector"))  # a matrix cannot name them
    out = CliRunner().invoke(main, ["list", "scanner"]).output
    assert "[scanner]" in out and all(name in out for name in SCANNERS)
    assert registry.get("scanner", "tmpbd").meta["needs_data"] is False


@pytest.mark.parametrize("name, options", [("tmpbd", {"alpha": 2.0}),
                                           ("tmpbd", {"stepz": 3}),
                                           ("trigger_inversion", {"steps": 0}),
                                           ("neuron_scan", {"powers": [-1.0]})])
def test_bad_options_fail_before_any_work(name, options, net):
    with pytest.raises(ValueError):
        registry.lookup("scanner", name)(net, None, options)


def test_gamma_p_value_singles_out_an_outlying_margin():
    flat = torch.tensor([1.0, 1.4, 0.7, 1.2, 0.9, 1.1, 0.8, 1.3, 0.95, 1.05])
    assert min(gamma_p_values(flat)) > 0.01
    spiked = flat.clone()
    spiked[6] = 4.0
    p = gamma_p_values(spiked)
    assert min(range(10), key=p.__getitem__) == 6 and p[6] < 1e-3


def test_mad_anomaly_finds_the_small_mask():
    norms = torch.tensor([30.0, 28.0, 33.0, 31.0, 3.0, 29.0, 32.0, 30.5, 27.0, 31.5])
    index, k = mad_anomaly(norms)
    assert k == 4 and index > 5
    assert mad_anomaly(torch.tensor([30.0, 28.0, 33.0, 31.0, 29.0]))[0] < 2


def _row(margins, taken=None, accuracy=0.5):
    return {"axis": "v_threshold", "value": 1.5, "accuracy": accuracy, "margin": margins,
            "taken": taken or [0.0] * len(margins), "mean_margin": sum(margins) / len(margins)}


def test_neuron_evidence_scores_kept_margins_not_a_silent_collapse():
    deployed = _row([2.0] * 4, accuracy=1.0)
    kept = _row([0.1, 0.0, 1.2, 0.05])  # class 2 keeps its own inputs while the rest fall
    evidence, where = class_evidence([deployed, kept], 4)
    assert max(range(4), key=evidence.__getitem__) == 2
    assert evidence[2] == pytest.approx((1.2 - 0.1) / 2.0)
    # silence: one class takes every input, but by a constant bias, not by its inputs
    silent = _row([0.02, -0.02, -0.02, -0.02], taken=[1.0, 0.0, 0.0, 0.0], accuracy=0.25)
    assert max(class_evidence([deployed, silent], 4)[0]) < 0.05


def test_class_rates_counts_margins_and_takes():
    logits = torch.tensor([[3.0, 1.0], [2.0, 0.0], [1.0, 2.0]])
    rates = class_rates(logits, torch.tensor([0, 1, 1]), 2)
    assert rates["accuracy"] == pytest.approx(2 / 3)
    assert rates["margin"] == pytest.approx([2.0, (-2.0 + 1.0) / 2])
    assert rates["taken"] == pytest.approx([0.5, 0.0])


def test_verdict_is_any_fixed_rule_and_target_the_strongest_flag():
    quiet = ScanResult({"a": ModelScore(0.1, 3, 1.0), "b": ModelScore(1.0, 2, 2.0)})
    assert quiet.verdict == "clean" and quiet.target is None
    loud = ScanResult({"a": ModelScore(3.0, 3, 1.0), "b": ModelScore(5.0, 7, 2.0)})
    assert loud.verdict == "backdoored" and loud.target == 3  # 3x its level beats 2.5x
    assert loud.as_dict()["detectors"]["b"]["flagged"] is True


def test_data_free_scanner_runs_without_data(net):
    result = scan_model(net, None, options={"tmpbd": {"steps": 3}})
    assert list(result.detectors) == ["tmpbd"]  # the others need the clean subset
    assert 0 <= result.detectors["tmpbd"].target < 10
    assert len(result.detectors["tmpbd"].info["margins"]) == 10
    # the smallest of 10 p-values is tested: alpha 0.05 / 10 (Bonferroni)
    assert result.detectors["tmpbd"].threshold == pytest.approx(-math.log10(0.005))


def test_neuron_scan_names_a_dual_spike_target_and_passes_the_clean_model(
        digits, clean_digits_model):
    """BadSNN's dual-spike model (same recipe as the clean fixture, target 7) is flagged
    with its target; the clean model is not (the level was set on other clean models)."""
    from snnbackdoor import NeuronConfig, TrainConfig, defender_subset, train_dual_spike
    from snnbackdoor.experiments.base import ModelConfig, model_spec
    from snnbackdoor.training import seed_everything

    seed_everything(0)
    backdoored = build_model(model_spec(ModelConfig(), digits.info))
    train_dual_spike(backdoored, digits, TrainConfig(epochs=6, batch_size=64, lr=3e-3,
                                                     progress=False),
                     NeuronConfig(1.6, 2.0), target=7, target_class_ratio=0.5, seed=0)
    subset = defender_subset(digits.train, 0.1, seed=0)
    scan = registry.lookup("scanner", "neuron_scan")
    found = scan(backdoored, subset)
    assert found.flagged and found.target == 7
    assert not scan(clean_digits_model, subset).flagged


def test_trigger_inversion_recovers_a_badnet_patch_and_passes_the_clean_model(
        digits, clean_digits_model):
    """A 3x3 BadNet patch (target 3) is reverse-engineered as a mask of about 9 pixels, an
    outlier among the classes' masks; the clean model's smallest mask is no outlier."""
    from snnbackdoor import TrainConfig, defender_subset, poison_split
    from snnbackdoor.experiments.base import ModelConfig, model_spec
    from snnbackdoor.training import seed_everything, train
    from snnbackdoor.triggers.image import BadNetTrigger

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the trained model (and so the index) depends on float order
    seed_everything(0)
    backdoored = build_model(model_spec(ModelConfig(), digits.info))
    poisoned = poison_split(digits.train, BadNetTrigger(size=3), target=3, ratio=0.05, seed=0)
    train(backdoored, poisoned.split, TrainConfig(epochs=6, batch_size=64, lr=3e-3,
                                                   progress=False))
    torch.set_num_threads(threads)
    subset = defender_subset(digits.train, 0.1, seed=0)
    scan = registry.lookup("scanner", "trigger_inversion")
    found = scan(backdoored, subset)
    assert found.flagged and found.target == 3
    assert min(found.info["mask_l1"]) < 15 < sorted(found.info["mask_l1"])[1]
    assert not scan(clean_digits_model, subset).flagged
