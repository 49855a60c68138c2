"""Neuron-parameter repair: a dual-spike (BadSNN-style) model loses its malicious config."""

from __future__ import annotations

import pytest
import torch

from snnbackdoor.attacks.badsnn import choose_poisoned_target_samples, dual_spike_loss
from snnbackdoor.data import stratified_split
from snnbackdoor.defenses import NeuronParamOptions, fine_tune, neuron_param_repair
from snnbackdoor.defenses.neuron_param import draw_config
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.neurons import NeuronConfig, get_neuron_params, set_neuron_params
from snnbackdoor.training import TrainConfig, evaluate, predict, seed_everything, train

MALICIOUS = NeuronConfig(v_threshold=1.8, tau=2.0)  # S_t
ATTACK = 1.4  # V_thr of S_a, where the model is shipped
TARGET = 3


@pytest.fixture(scope="module")
def dual_spike_model(digits):
    """digits_net (T = 2) trained with dual-spike learning, 40% of class 3 also under S_t
    = (1.8, 2.0), then shipped at V_thr 1.4: every input goes to the target at S_t."""
    seed_everything(0)
    poisoned = choose_poisoned_target_samples(digits.train.y, TARGET, 0.4, seed=0)
    mask = torch.zeros(len(digits.train), dtype=torch.bool)
    mask[poisoned] = True
    model = build_model(model_spec(ModelConfig(T=2), digits.info))
    train(model, digits.train, TrainConfig(epochs=6, lr=3e-3, progress=False),
          loss_fn=dual_spike_loss(mask, MALICIOUS))
    set_neuron_params(model, v_threshold=ATTACK)
    return model.eval()


@pytest.fixture(scope="module")
def subset(digits):
    _, held = stratified_split(digits.train.y.numpy(), 0.05, 0)
    return digits.train.subset(torch.from_numpy(held))


def _target_share(model, digits, config) -> float:
    x = digits.val.x[digits.val.y != TARGET]
    return float((predict(model, x, neuron_config=config) == TARGET).float().mean())


def test_repair_removes_the_malicious_config_where_fine_tuning_does_not(
        dual_spike_model, digits, subset):
    assert _target_share(dual_spike_model, digits, MALICIOUS) > 0.9  # the backdoor is there
    before_ca = evaluate(dual_spike_model, digits.val)
    saved = {k: v.clone() for k, v in dual_spike_model.state_dict().items()}

    repaired = neuron_param_repair(dual_spike_model, subset, digits.val, {"progress": False})
    # the control: the same steps at the deployed config only keep the backdoor
    control = fine_tune(dual_spike_model, subset, None,
                        {"progress": False, "epochs": 20, "batch_size": 16, "lr": 0.005})
    assert _target_share(control.model, digits, MALICIOUS) > 0.5
    assert _target_share(repaired.model, digits, MALICIOUS) < 0.2
    assert repaired.info["val_accuracy"] >= before_ca - 0.05  # at the deployed config
    assert all(p["v_threshold"] == ATTACK for p in get_neuron_params(repaired.model).values())
    info = repaired.info
    assert info["v_threshold_range"] == pytest.approx([0.7, 2.1])
    assert info["steps"] == 20 * 4 and info["steps_per_epoch"] == 4  # 61 samples, batch 16
    low, high = info["drawn_v_threshold"]
    assert 0.7 <= low < 1.0 and 1.8 < high <= 2.1  # the draws cover S_n and S_t
    state = dual_spike_model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)  # the input model is untouched


def test_drawn_configs_stay_in_range():
    opts = NeuronParamOptions(v_threshold_range=0.2, tau_range=0.9, min_tau=1.1)
    generator = torch.Generator().manual_seed(0)
    configs = [draw_config(1.5, 2.0, opts, generator) for _ in range(300)]
    thresholds = torch.tensor([c.v_threshold for c in configs])
    taus = torch.tensor([c.tau for c in configs])
    assert thresholds.min() >= 1.2 and thresholds.max() <= 1.8
    assert thresholds.max() - thresholds.min() > 0.5  # spread over the range, not a constant
    assert taus.min() == pytest.approx(1.1) and taus.max() <= 3.8
    assert draw_config(1.0, None, opts, generator).tau is None  # no tau to draw (IF, PLIF)


@pytest.mark.parametrize("bad", [{"v_threshold_range": 1.5}, {"min_tau": 1.0},
                                 {"batch_size": 0}, {"lr": 0.0}])
def test_bad_options_fail_early(bad):
    with pytest.raises(ValueError):
        NeuronParamOptions(**bad)
