"""Defenses: known answers that fail when a method is wrong, on SNNs and on the ANN twins."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import layer, neuron

from snnbackdoor import registry
from snnbackdoor.attacks.poisoning import poison_split, triggered_non_target
from snnbackdoor.data import Split, stratified_split
from snnbackdoor.defenses import (
    FineTuneOptions,
    Repaired,
    block_outputs,
    clean_unlearning,
    clp_prune,
    conv_bn_pairs,
    fine_prune,
    fine_tune,
    nad_repair,
    prune_by_masks,
)
from snnbackdoor.defenses.anp import NeuronMasks, adversarial_noise_step, anp_prune
from snnbackdoor.defenses.base import run_repair
from snnbackdoor.defenses.discovery import FeatureRecorder, last_conv_unit
from snnbackdoor.defenses.nad import attention_loss
from snnbackdoor.defenses.tsbd import TSBDOptions, neuron_scores, zero_reinit
from snnbackdoor.detectors import (
    Scores,
    auroc,
    detection_report,
    spectral_detect,
    spectral_removal,
    spectral_scores_from_features,
    strip_detect,
)
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import SpikingClassifier, build_model
from snnbackdoor.models.bodies import BasicBlock
from snnbackdoor.models.kit import LayerKit
from snnbackdoor.neurons import get_neuron_params, set_neuron_params
from snnbackdoor.training import TrainConfig, evaluate, predict, train
from snnbackdoor.triggers.image import BadNetTrigger

QUIET = {"progress": False}
TARGET = 0


def _badnet(digits, ann: bool, epochs: int, T: int = 4):
    poisoned = poison_split(digits.train, BadNetTrigger(), TARGET, 0.1, seed=0)
    torch.manual_seed(0)
    model = build_model(model_spec(ModelConfig(T=T), digits.info, ann=ann))
    train(model, poisoned.split, TrainConfig(epochs=epochs, lr=3e-3, progress=False))
    return model.eval()


@pytest.fixture(scope="session")
def badnet_snn(digits):
    """digits_net SNN (T = 4) with a BadNet backdoor: 10% poisoning, 4 epochs; CA ~0.94,
    ASR ~0.99."""
    return _badnet(digits, ann=False, epochs=4, T=4)


@pytest.fixture(scope="session")
def badnet_ann(digits):
    """The ANN twin with the same BadNet backdoor (3 epochs: it learns faster)."""
    return _badnet(digits, ann=True, epochs=3)


@pytest.fixture(scope="session")
def clean_subset(digits):
    """The defender's 5% clean subset of the training split (stratified: 6 per class)."""
    _, held = stratified_split(digits.train.y.numpy(), 0.05, 0)
    return digits.train.subset(torch.from_numpy(held))


@pytest.fixture(scope="session")
def small_val(digits):
    return digits.val.subset(torch.arange(80))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


def _fresh_digits_net(digits, ann: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return build_model(model_spec(ModelConfig(), digits.info, ann=ann)).eval()


def _asr(model, digits) -> float:
    triggered = triggered_non_target(digits.test, BadNetTrigger(), TARGET)
    return float((predict(model, triggered.x) == TARGET).float().mean())


# --------------------------------------------------------------------------- CLP


def test_clp_prunes_the_planted_channel_and_no_other(digits, clean_subset):
    model = _fresh_digits_net(digits)
    untouched = clp_prune(model, clean_subset, None, QUIET)
    assert untouched.info["pruned_count"] == 0  # a fresh net has no outlier channel

    with torch.no_grad():
        model.body[4].weight[7] *= 25.0  # outsized Lipschitz constant, BN left as it was
    saved = _state(model)
    result = clp_prune(model, clean_subset, None, QUIET)
    assert result.info["pruned"] == {"body.5": [7]}
    repaired = result.model
    bn, original = repaired.body[5], model.body[5]
    assert bn.weight[7] == 0 and bn.bias[7] == 0
    others = torch.arange(64) != 7
    assert torch.equal(bn.weight[others], original.weight[others])
    assert torch.equal(repaired.body[1].weight, model.body[1].weight)  # first layer untouched
    assert _same_state(model, saved)  # the input model is not modified


def test_bn_that_does_not_follow_a_conv_is_not_paired():
    kit = LayerKit()
    body = nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1, bias=False, step_mode="m"),
        neuron.LIFNode(step_mode="m"),
        layer.BatchNorm2d(8, step_mode="m"),  # after the spike node, not after the conv
        neuron.LIFNode(step_mode="m"),
        BasicBlock(kit, 8, 16, stride=2),  # conv1-bn1, conv2-bn2, shortcut conv-bn
        layer.Flatten(step_mode="m"),
        layer.Linear(16 * 4 * 4, 10, step_mode="m"),
    )
    model = SpikingClassifier(body, T=2).eval()
    x = torch.rand(2, 1, 8, 8)
    pairs = [(p.conv_name, p.bn_name) for p in conv_bn_pairs(model, x)]
    assert pairs == [
        ("body.4.conv1", "body.4.bn1"),
        ("body.4.conv2", "body.4.bn2"),
        ("body.4.shortcut.0", "body.4.shortcut.1"),
    ]
    with torch.no_grad():
        body[0].weight[3] *= 50.0  # would be flagged if body.2 were wrongly paired with body.0
    result = clp_prune(model, Split(x, torch.zeros(2)), None, QUIET)
    assert "body.2" not in result.info["pruned"]
    assert torch.equal(result.model.body[2].weight, body[2].weight)


# --------------------------------------------------------------------------- STRIP / spectral


def test_strip_separates_badnet_inputs(badnet_snn, digits, clean_subset):
    clean_x = digits.test.floats(torch.arange(60))
    triggered_x = triggered_non_target(digits.test, BadNetTrigger(), TARGET).x[:60]
    scores = strip_detect(
        badnet_snn, clean_subset, clean_x, triggered_x, {"overlays": 8, **QUIET}, seed=0
    )
    assert scores.clean_subset.shape == (len(clean_subset),) and len(scores.triggered) == 60
    report = detection_report(scores)
    assert _asr(badnet_snn, digits) > 0.9  # the fixture is backdoored
    assert report["auroc"] > 0.9
    # At 5% FRR fitted on 60 clean scores the rate moves by a few points with the thread
    # count (0.78-0.87 seen); a broken STRIP flags ~5%.
    assert report["detection_rate"] > 0.7
    assert report["false_rejection_rate"] < 0.25


def test_spectral_scores_single_out_the_shifted_cluster():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 20, generator=generator)
    direction = torch.randn(20, generator=generator)
    features[:5] += 6.0 * direction / direction.norm()  # 5 "poisoned" samples of class 0
    labels = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    scores = spectral_scores_from_features(features, labels)
    assert set(scores[:100].topk(5).indices.tolist()) == set(range(5))
    removed = spectral_removal(scores, labels, epsilon=0.05)  # 1.5 * 0.05 * 100 = 8 per class
    assert len(removed) == 16 and set(range(5)) <= set(removed.tolist())
    assert (removed < 100).sum() == 8


def test_spectral_detector_flags_badnet_inputs(badnet_snn, digits, clean_subset):
    clean_x = digits.test.floats(torch.arange(100))
    triggered_x = triggered_non_target(digits.test, BadNetTrigger(), TARGET).x[:100]
    report = detection_report(spectral_detect(badnet_snn, clean_subset, clean_x, triggered_x,
                                              {}, seed=0))
    assert report["layer"] == "body.11"  # the input of the last Linear: time-mean spikes
    assert report["score"] == "projection" and report["auroc"] > 0.75  # Tran et al.'s score
    residual = detection_report(spectral_detect(badnet_snn, clean_subset, clean_x, triggered_x,
                                                {"score": "residual"}, seed=0))
    assert residual["score"] == "residual" and residual["auroc"] > 0.75


def test_auroc_known_values():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    assert auroc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == 0.75


def test_scores_become_verdicts_at_the_clean_subsets_threshold():
    fit = torch.arange(100, dtype=torch.float64)  # the 0.9 quantile is 89.1
    scores = Scores(fit, clean=torch.tensor([0.0, 50.0, 95.0, 99.0]),
                    triggered=torch.tensor([10.0, 89.0, 90.0, 200.0, 300.0]), frr=0.1,
                    info={"detector": "toy"})
    report = detection_report(scores)
    assert report["threshold"] == pytest.approx(89.1)
    assert report["detection_rate"] == pytest.approx(3 / 5)  # 90, 200, 300
    assert report["false_rejection_rate"] == pytest.approx(2 / 4)  # measured on clean inputs
    assert report["auroc"] == pytest.approx(auroc(scores.clean, scores.triggered))
    assert report["detector"] == "toy" and report["frr_target"] == 0.1


# --------------------------------------------------------------------------- TSBD


def test_tsbd_unlearning_stops_at_the_accuracy_bound(badnet_snn, clean_subset):
    model = copy.deepcopy(badnet_snn)
    opts = TSBDOptions(unlearn_lr=3e-2, max_unlearn_steps=100, **QUIET)  # paper: 1e-4
    result = clean_unlearning(model, clean_subset, opts, seed=0)
    assert result.reached_bound and result.steps < 100
    assert result.accuracies[-1] <= 0.10  # stopped at the bound ...
    assert all(a > 0.10 for a in result.accuracies[:-1])  # ... at the first step reaching it
    assert evaluate(model, clean_subset) <= 0.10 + 1e-6


def test_tsbd_zeroes_top_m_weights_of_top_n_channels():
    model = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    changes = {"0": torch.tensor([[9.0], [1.0], [8.0], [2.0]])}  # one weight per channel
    ranking = neuron_scores(changes)
    assert [channel for _, _, channel in ranking] == [0, 2, 3, 1]
    zeroed = zero_reinit(model, changes, ranking, n=0.5, m=0.5)  # channels 0, 2; top weight
    assert zeroed == 1
    assert model[0].weight.flatten().tolist() == [0.0, 1.0, 1.0, 1.0]


# --------------------------------------------------------------------------- ANP


def test_anp_noise_step_is_adversarial(badnet_snn, clean_subset):
    model = copy.deepcopy(badnet_snn).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    masks = NeuronMasks(model)
    masks.random_noise(0.4, torch.Generator().manual_seed(0))
    x, y = clean_subset.floats(), clean_subset.y
    masks.perturb(True)
    with torch.no_grad():
        before = nn.functional.cross_entropy(model(x), y)
    opt = torch.optim.SGD(masks.noise_parameters(), lr=0.4)
    adversarial_noise_step(model, masks, x, y, 0.4, opt)
    masks.perturb(True)
    with torch.no_grad():
        after = nn.functional.cross_entropy(model(x), y)
    assert after > before
    assert all(p.abs().max() <= 0.4 + 1e-6 for p in masks.noise_parameters())


def test_anp_prunes_masks_below_threshold(badnet_snn, badnet_ann, digits, clean_subset):
    model = copy.deepcopy(badnet_snn)
    masks = {"body.1": torch.ones(32), "body.5": torch.ones(64)}
    masks["body.1"][[3, 9]] = torch.tensor([0.1, 0.19])
    masks["body.5"][[5, 6]] = torch.tensor([0.05, 0.21])  # 0.21 is kept
    pruned = prune_by_masks(model, masks, threshold=0.2)
    assert pruned == {"body.1": [3, 9], "body.5": [5]}
    zero1 = torch.nonzero(model.body[1].weight == 0).flatten().tolist()
    zero5 = torch.nonzero(model.body[5].weight == 0).flatten().tolist()
    assert zero1 == [3, 9] and zero5 == [5]
    assert torch.equal(model.body[5].bias, badnet_snn.body[5].bias)  # ANP zeroes weights only
    assert torch.isfinite(predict(model, digits.test.x[:8]).float()).all()

    # end to end (ANN twin, few iterations): masks barely move, so a threshold near 1 makes
    # the rule prune something; exactly the channels below it lose their BN weight
    options = {"iterations": 4, "threshold": 0.999, **QUIET}
    result = anp_prune(badnet_ann, clean_subset, None, options, seed=0)
    repaired, info = result.model, result.info
    assert 0 < info["pruned_count"] < 96
    for name, values in info["masks"].items():
        values = torch.tensor(values)
        assert ((values >= 0) & (values <= 1)).all()
        expected = torch.nonzero(values < 0.999).flatten().tolist()
        assert info["pruned"].get(name, []) == expected
        weight = dict(repaired.named_modules())[name].weight
        assert torch.nonzero(weight == 0).flatten().tolist() == expected
    assert not any("parametrizations" in k for k in repaired.state_dict())


# --------------------------------------------------------------------------- NAD


def test_nad_attention_loss_zero_for_identical_positive_otherwise(badnet_snn, clean_subset):
    layers = block_outputs(badnet_snn, clean_subset.floats(slice(0, 2)))
    assert layers == ["body.2", "body.6"]  # the spiking outputs at 16x16 and 8x8
    x = clean_subset.floats()
    twin = copy.deepcopy(badnet_snn)

    def maps(model):
        with torch.no_grad(), FeatureRecorder(model, layers) as recorder:
            model(x)
        return recorder.ordered()

    teacher = maps(badnet_snn)
    assert float(attention_loss(maps(twin), teacher, (500, 1000, 1000))) == 0.0
    with torch.no_grad():
        twin.body[4].weight[:8] *= -1.0
    assert float(attention_loss(maps(twin), teacher, (500, 1000, 1000))) > 0.0


def test_block_outputs_are_stage_outputs_on_a_resnet(digits):
    model = build_model("spiking_resnet19", ann=True, num_classes=10).eval()
    names = block_outputs(model, torch.rand(1, 3, 32, 32))
    assert names == ["body.5.act2", "body.8.act2", "body.10.act2"]


# --------------------------------------------------------------------------- fine-tuning


def test_fine_tune_returns_a_copy_at_the_deployed_config(badnet_snn, digits, clean_subset):
    model = copy.deepcopy(badnet_snn)
    set_neuron_params(model, v_threshold=1.05)  # a non-nominal deployed config
    saved, params = _state(model), get_neuron_params(model)
    before = evaluate(model, digits.test)
    result = fine_tune(model, clean_subset, None, FineTuneOptions(epochs=3, progress=False), 0)
    repaired = result.model
    assert repaired is not model and _same_state(model, saved)
    assert result.info["epochs"] == 3 and not repaired.training
    assert get_neuron_params(repaired) == params == get_neuron_params(model)
    assert not _same_state(repaired, saved)
    assert evaluate(repaired, digits.test) >= before - 0.05


def test_run_repair_hands_back_an_eval_copy_at_the_deployed_config(badnet_snn, small_val):
    model = copy.deepcopy(badnet_snn)
    set_neuron_params(model, v_threshold=1.1)  # deployed away from the nominal config
    params, saved = get_neuron_params(model), _state(model)

    def careless_repair(work: nn.Module) -> dict:
        work.train()
        set_neuron_params(work, v_threshold=2.0, tau=3.0)
        return {"touched": True}

    result = run_repair("toy", model, small_val, careless_repair)
    assert get_neuron_params(result.model) == params and not result.model.training
    assert _same_state(model, saved) and get_neuron_params(model) == params
    assert result.info == {"defense": "toy", "touched": True,
                           "val_accuracy": evaluate(model, small_val)}


# --------------------------------------------------------------------------- fine-pruning


def test_fine_pruning_prunes_the_least_active_channels(badnet_snn, digits, clean_subset, small_val):
    model = copy.deepcopy(badnet_snn)
    silent = [2, 11, 30, 47]
    with torch.no_grad():  # these channels of the last conv layer never fire
        model.body[5].weight[silent] = 0.0
        model.body[5].bias[silent] = -5.0
    unit = last_conv_unit(model, clean_subset.floats(slice(0, 2)))
    assert (unit.conv_name, unit.bn_name, unit.act_name) == ("body.4", "body.5", "body.6")
    result = fine_prune(model, clean_subset, small_val, {"epochs": 1, "step": 4, **QUIET}, 0)
    repaired, info = result.model, result.info
    assert sorted(info["order"][:4]) == silent  # ranked first: zero activity
    assert set(silent) <= set(info["pruned"]) and info["pruned_count"] >= 4
    pruned = torch.tensor(info["pruned"])
    assert (repaired.body[5].weight[pruned] == 0).all()  # held at zero through fine-tuning
    assert (repaired.body[5].bias[pruned] == 0).all()
    assert (repaired.body[4].weight[pruned] == 0).all()
    assert evaluate(repaired, digits.test) > 0.8


# --------------------------------------------------------------------------- ANN twins


TINY = {
    "finetune": {"epochs": 1},
    "clp": {},
    "anp": {"iterations": 2},
    "nad": {"teacher_epochs": 1, "epochs": 1},
    "tsbd": {"unlearn_lr": 3e-2, "max_unlearn_steps": 60, "epochs": 1},
    "fine_pruning": {"epochs": 1, "step": 16},
}


def test_the_registry_holds_every_repair_and_detector():
    assert set(registry.names("defense")) >= set(TINY)
    assert set(registry.names("detector")) >= {"strip", "spectral", "spike_stats"}
    for kind in ("defense", "detector"):
        for component in registry.components(kind):
            assert component.options is not None and component.description


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_repair_runs_on_the_ann_twin(name, badnet_ann, digits, clean_subset, small_val):
    saved = _state(badnet_ann)
    component = registry.get("defense", name)
    options = component.options(**TINY[name], **QUIET)
    result = component.obj(badnet_ann, clean_subset, small_val, options, 1)
    assert isinstance(result, Repaired) and not hasattr(result.model, "defense_info")
    assert result.model is not badnet_ann and _same_state(badnet_ann, saved)
    assert result.info["defense"] == name
    assert 0.0 <= result.info["val_accuracy"] <= 1.0
    assert not result.model.training
    logits = result.model(digits.test.floats(torch.arange(4)))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["strip", "spectral"])
def test_every_image_detector_runs_on_the_ann_twin(name, badnet_ann, digits, clean_subset):
    clean_x = digits.test.floats(torch.arange(30))
    triggered_x = triggered_non_target(digits.test, BadNetTrigger(), TARGET).x[:30]
    options = {"overlays": 4} if name == "strip" else {}
    scores = registry.lookup("detector", name)(badnet_ann, clean_subset, clean_x, triggered_x,
                                               options, 0)
    assert isinstance(scores, Scores) and len(scores.clean) == len(scores.triggered) == 30
    report = detection_report(scores)
    assert 0.0 <= report["detection_rate"] <= 1.0 and 0.0 <= report["auroc"] <= 1.0


def test_nad_repair_runs_on_the_snn(badnet_snn, clean_subset, small_val):
    result = nad_repair(
        badnet_snn, clean_subset, small_val, {"teacher_epochs": 1, "epochs": 1, **QUIET}, 0
    )
    assert result.info["layers"] == ["body.2", "body.6"]
    assert result.info["betas"] == [1000.0, 1000.0]
    assert 0.0 <= result.info["teacher_val_accuracy"] <= 1.0


def test_unknown_option_fails_early(badnet_ann, clean_subset):
    with pytest.raises(ValueError, match="unknown option"):
        fine_tune(badnet_ann, clean_subset, None, {"epoch": 3})
