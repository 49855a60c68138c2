"""The matrix's protocol (issue 15): one defender budget, residual-aware Fine-Pruning, TSBD's
shortcut and BN rules, ANP's convergence report, the spectral default, deviations beside
the table, and BadSNN's backdoor-attributable ASR in the report."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from snnbackdoor.data import Split
from snnbackdoor.defenses.anp import ANPOptions, anp_prune
from snnbackdoor.defenses.base import holdout_split
from snnbackdoor.defenses.discovery import (
    FeatureRecorder,
    channel_sources,
    conv_layers,
    last_conv_unit,
    shortcut_convs,
)
from snnbackdoor.defenses.fine_pruning import channel_masks, fine_prune
from snnbackdoor.defenses.tsbd import frozen_bn_statistics
from snnbackdoor.detectors.spectral import SpectralOptions
from snnbackdoor.experiments.base import load_config
from snnbackdoor.io import atomic_write_json
from snnbackdoor.models import build_model
from snnbackdoor.neurons import set_neuron_params
from snnbackdoor.report.table2 import attributable_rows, render_table2

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def clean_subset(digits):
    """A 5% defender subset of the training split, as the matrix draws it."""
    from snnbackdoor.api import defender_subset

    return defender_subset(digits.train, 0.05, seed=0)


# --------------------------------------------------------------------------- the budget


def test_holdout_split_stays_inside_the_subset_and_holds_out_every_class(digits):
    subset = digits.train.subset(torch.arange(100))
    fit, held = holdout_split(subset, 0.3, seed=0)
    assert len(fit) + len(held) == len(subset)
    rows = {tuple(r.flatten().tolist()) for r in subset.x}
    assert all(tuple(r.flatten().tolist()) in rows for r in torch.cat([fit.x, held.x]))
    assert set(held.y.tolist()) == set(subset.y.tolist())  # every class held out
    assert set(fit.y.tolist()) == set(subset.y.tolist())  # and every class kept
    again = holdout_split(subset, 0.3, seed=0)[1]
    assert torch.equal(again.x, held.x)  # seeded
    with pytest.raises(ValueError, match="too small"):
        holdout_split(Split(subset.x[:3], torch.tensor([0, 1, 2])), 0.3, 0)


# --------------------------------------------------------------------------- fine-pruning


def _resnet(ann: bool) -> nn.Module:
    torch.manual_seed(0)
    return build_model("spiking_resnet19", ann=ann, num_classes=10, image_size=8, T=2).eval()


def _act_output(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), FeatureRecorder(model, [name]) as recorder:
        model(x)
    return recorder.features[name]  # [N, C, H, W] (time mean for the SNN)


@pytest.mark.parametrize("ann", [True, False])
def test_fine_pruning_silences_a_pruned_channel_behind_an_identity_shortcut(ann):
    model = _resnet(ann)
    x = torch.rand(6, 3, 8, 8) * 3
    unit = last_conv_unit(model, x[:2])
    assert unit.act_name == "body.10.act2"  # after the sum with an identity shortcut
    sources = channel_sources(model, x[:2], unit.act_name)
    assert sources == ["body.10.bn2", "body.9.bn2", "body.9.shortcut.1"]
    modules = dict(model.named_modules())
    with torch.no_grad():  # make the last two blocks fire, and a lone shortcut spike count
        for name in sources:
            modules[name].bias += 1.0
    if not ann:
        set_neuron_params(model, v_threshold=0.3)
    activity = _act_output(model, unit.act_name, x).mean(dim=(0, 2, 3))
    firing = torch.nonzero(activity > 0).flatten()[:4].tolist()
    assert len(firing) == 4, "the test needs channels that fire before pruning"
    branch_only = copy.deepcopy(model)  # the old pruning: the block's own conv and BN
    channel_masks(branch_only, unit, firing)
    assert _act_output(branch_only, unit.act_name, x)[:, firing].abs().sum() > 0
    pruned = copy.deepcopy(model)
    channel_masks(pruned, unit, firing, sources)
    assert _act_output(pruned, unit.act_name, x)[:, firing].abs().sum() == 0


def test_fine_prune_on_resnet19_keeps_the_pruned_channels_silent_after_fine_tuning():
    model = _resnet(ann=False)
    torch.manual_seed(1)
    subset = Split(torch.rand(20, 3, 8, 8), torch.arange(20) % 10)
    result = fine_prune(model, subset, None, {"prune_count": 5, "epochs": 1, "batch_size": 10,
                                              **QUIET}, 0)
    info = result.info
    assert info["silenced_sources"] == ["body.10.bn2", "body.9.bn2", "body.9.shortcut.1"]
    assert info["budget"] == {"activity": 20, "fine_tune": 20}
    out = _act_output(result.model, "body.10.act2", torch.rand(6, 3, 8, 8) * 3)
    assert out[:, info["pruned"]].abs().sum() == 0
    modules = dict(result.model.named_modules())
    for name in info["silenced_sources"]:
        assert (modules[name].weight[info["pruned"]] == 0).all()


def test_fine_pruning_chooses_inside_the_subset(clean_digits_model, clean_subset):
    result = fine_prune(clean_digits_model, clean_subset, None,
                        {"epochs": 1, "step": 16, **QUIET}, 0)
    budget = result.info["budget"]
    assert budget["activity"] + budget["choose_count"] == len(clean_subset)
    assert budget["fine_tune"] == len(clean_subset)
    assert result.info["sweep"][0]["pruned"] == 0 and "holdout_accuracy" in result.info["sweep"][0]
    assert "val_accuracy" not in result.info  # no validation split was given


# --------------------------------------------------------------------------- TSBD


def test_tsbd_leaves_projection_shortcuts_out():
    model = _resnet(ann=True)
    x = torch.rand(2, 3, 8, 8)
    assert shortcut_convs(model, x) == ["body.6.shortcut.0", "body.9.shortcut.0"]
    kept = [name for name, _ in conv_layers(model, x, skip_shortcuts=True)]
    assert len(kept) == len(conv_layers(model, x)) - 2 and not any("shortcut" in n for n in kept)


def test_perturbed_passes_leave_bn_running_statistics_alone(digits):
    model = build_model("digits_net", num_classes=10, in_channels=1, image_size=16).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    x = digits.train.floats(torch.arange(16))
    with frozen_bn_statistics(model):
        model(x)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before))
    assert all(m.momentum == 0.1 for m in bns)  # restored
    model(x)
    assert not all(torch.equal(m.running_mean, b) for m, b in zip(bns, before))


def test_tsbd_chooses_n_on_a_holdout_of_the_subset(clean_digits_model, clean_subset):
    from snnbackdoor.defenses.tsbd import tsbd_repair

    result = tsbd_repair(clean_digits_model, clean_subset, None, {
        "unlearn_lr": 3e-2, "max_unlearn_steps": 60, "epochs": 1, **QUIET}, 0)
    budget = result.info["budget"]
    assert budget["unlearn"] + budget["choose_n"] == len(clean_subset)
    assert budget["fine_tune"] == len(clean_subset)
    assert result.info["n_sweep"] and "holdout_accuracy" in result.info["n_sweep"][0]


# --------------------------------------------------------------------------- ANP


def test_anp_stops_when_its_masks_converge_and_reports_them(clean_digits_model, clean_subset):
    opts = ANPOptions(iterations=400, stop_tolerance=1.0, stop_window=5, **QUIET)
    info = anp_prune(clean_digits_model, clean_subset, None, opts, 0).info
    assert info["converged"] and info["iterations"] == 5  # masks move < 1 in any window
    assert 0.0 <= info["mask_min"] <= info["mask_mean"] <= 1.0
    assert info["channels"] == sum(len(m) for m in info["masks"].values())
    assert info["pruned_count"] == sum(v < 0.2 for m in info["masks"].values() for v in m)
    fixed = anp_prune(clean_digits_model, clean_subset, None, ANPOptions(iterations=3, **QUIET), 0)
    assert fixed.info["iterations"] == 3 and not fixed.info["converged"]


# --------------------------------------------------------------------------- the matrix


def test_spectral_default_is_tran_et_al_projection_score():
    assert SpectralOptions().score == "projection"


def test_deviations_list_what_a_preset_changes_from_the_papers():
    config = load_config("configs/table2_digits.yaml")
    deviations = config.deviations()
    assert "spike_stats" in config.detectors
    for method, changed in deviations.items():
        assert changed, method
        for key, entry in changed.items():
            assert entry["value"] != entry["default"], (method, key)
    assert "wanet" in deviations and deviations["wanet"]["s"]["default"] == 0.5
    assert "badnet" not in deviations and "strip" not in deviations
    assert set(config.deviation_notes) >= set(deviations) - {"badsnn"}


def _row(attack, defense, asr):
    return {"attack": attack, "defense": defense, "ca": 0.9, "asr": asr, "ra": 0.1}


def test_report_shows_badsnn_minus_its_control_per_defense(tmp_path):
    config = load_config("configs/table2_digits.yaml")
    attacks = ["badnet", "badsnn", "badsnn_control"]
    table = [_row(a, d, asr) for a, asr0 in zip(attacks, (0.99, 0.92, 0.80))
             for d, asr in (("none", asr0), ("finetune", asr0 - 0.10))]
    rows = attributable_rows(table)
    assert [(r["defense"], round(r["attributable_asr"], 6)) for r in rows] == [
        ("none", 0.12), ("finetune", 0.12)]
    (tmp_path / "config.yaml").write_text(json.dumps(
        {"name": "t", "attacks": attacks, "defenses": ["none", "finetune"], "detectors": [],
         "dataset": {"name": "digits"}, "model": {"name": "digits_net", "neuron": "lif",
                                                  "T": 4},
         "seed": 0, "target": 0, "poison_ratio": 0.05, "defender_fraction": 0.05}))
    atomic_write_json(tmp_path / "metrics.json", {
        "table": table, "detection": [], "clean_ca": 0.98, "warnings": [],
        "defender": {"count": 61}, "deviations": config.deviations(),
        "deviation_notes": config.deviation_notes,
        "defender_budget": {"fraction": 0.05, "subset": {"badnet": 61},
                            "uses": {"defense/finetune": {"badnet": {"fine_tune": 61}}}}})
    render_table2(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Backdoor-attributable ASR" in report
    assert "| badsnn | 92.00 / 80.00 / +12.00 | 82.00 / 70.00 / +12.00 |" in report
    assert "`defense/finetune`: fine_tune 61" in report
    assert "## Deviations" in report and "s 2 (default 0.5)" in report
    csv = (tmp_path / "attributable.csv").read_text().splitlines()
    assert csv[0] == "attack,control,defense,asr,control_asr,attributable_asr"
    assert len(csv) == 3


def test_wanet_augments_after_the_warp(digits):
    from snnbackdoor.attacks.wanet import wanet_batch_loss
    from snnbackdoor.triggers.image import WaNetTrigger

    trigger = WaNetTrigger(4, 2.0, 1.0, 0)
    seen = []

    def augment(x):
        seen.append(x.clone())
        return x

    class Logits(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10, requires_grad=True)

    x, y = digits.train.floats(torch.arange(32)), digits.train.y[:32]
    loss = wanet_batch_loss(trigger, 0, 1.0, cross_ratio=0.0, augment=augment)
    loss(Logits(), x, y, torch.arange(32))
    non_target = y != 0
    assert torch.allclose(seen[0][non_target], trigger(x[non_target]))  # warped, then augmented
