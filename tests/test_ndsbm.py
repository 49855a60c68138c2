"""NDSBM: the replayed membrane potential, the dendrite discovery, and a BadNet repair."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import neuron

from snnbackdoor.attacks.poisoning import poison_split, triggered_non_target
from snnbackdoor.data import stratified_split
from snnbackdoor.defenses import NDSBMOptions, ndsbm_repair
from snnbackdoor.defenses.ndsbm import dendrite_pairs, membrane_sequence
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.training import TrainConfig, evaluate, predict, train
from snnbackdoor.triggers.image import BadNetTrigger

TARGET = 0


@pytest.mark.parametrize("make", [
    lambda: neuron.LIFNode(tau=2.0, step_mode="m"),
    lambda: neuron.LIFNode(tau=3.0, v_reset=None, decay_input=False, step_mode="m"),
    lambda: neuron.IFNode(v_threshold=0.7, step_mode="m"),
    lambda: neuron.ParametricLIFNode(init_tau=1.5, step_mode="m"),
])
def test_replayed_potential_matches_spikingjelly(make):
    node = make()
    node.store_v_seq = True
    x = torch.randn(6, 5, 7, generator=torch.Generator().manual_seed(0)) * 1.5
    with torch.no_grad():
        spikes = node(x)
    h = membrane_sequence(node, x, spikes)
    assert torch.equal(spikes, (h >= node.v_threshold).float())  # H is what fired
    after = (h - spikes * node.v_threshold if node.v_reset is None
             else h * (1 - spikes) + node.v_reset * spikes)
    assert torch.allclose(after, node.v_seq, atol=1e-6)  # and what SpikingJelly kept
    assert spikes.any() and not spikes.all()


def test_dendrites_found_by_data_flow(digits):
    model = build_model(model_spec(ModelConfig(T=2), digits.info)).eval()
    pairs = dendrite_pairs(model, digits.train.floats(slice(0, 2)))
    # conv1 spikes -> (pool) conv2, conv2 spikes -> (pool, flatten) fc1, fc1 spikes -> readout
    assert [(p.node_name, p.target_name) for p in pairs] == [
        ("body.2", "body.4"), ("body.6", "body.9"), ("body.10", "body.11")]
    assert [type(m).__name__ for m in pairs[1].between] == ["AvgPool2d", "Flatten"]


@pytest.fixture(scope="module")
def badnet_model(digits):
    """digits_net (T = 4) with a BadNet backdoor: 10% poisoning, 4 epochs (ASR ~0.98)."""
    poisoned = poison_split(digits.train, BadNetTrigger(), TARGET, 0.1, seed=0)
    torch.manual_seed(0)
    model = build_model(model_spec(ModelConfig(T=4), digits.info))
    train(model, poisoned.split, TrainConfig(epochs=4, lr=3e-3, progress=False))
    return model.eval()


def test_ndsbm_lowers_badnet_asr_and_keeps_clean_accuracy(badnet_model, digits):
    _, held = stratified_split(digits.train.y.numpy(), 0.05, 0)
    subset = digits.train.subset(torch.from_numpy(held))
    triggered = triggered_non_target(digits.test, BadNetTrigger(), TARGET).x

    def asr(model) -> float:
        return float((predict(model, triggered) == TARGET).float().mean())

    saved = badnet_model.body[9].weight.detach().clone()
    result = ndsbm_repair(badnet_model, subset, None, {"progress": False})
    assert asr(badnet_model) > 0.9
    assert asr(result.model) < 0.5  # 0.22 measured: the lowest-TMP dendrites carry the trigger
    assert evaluate(result.model, digits.test) >= evaluate(badnet_model, digits.test) - 0.02
    assert torch.equal(badnet_model.body[9].weight, saved)  # the input model is untouched

    layers = {layer["dendrites_of"]: layer for layer in result.info["layers"]}
    assert set(layers) == {"body.4", "body.9"}  # the readout's dendrites are left alone
    fc = layers["body.9"]
    assert fc["fraction"] > 0 and len(fc["suppressed"]) == int(fc["fraction"] * 1024)
    weight = result.model.body[9].weight
    cut = torch.tensor(fc["suppressed"])
    kept = torch.ones(1024, dtype=torch.bool)
    kept[cut] = False
    assert torch.all(weight[:, cut] == 0)  # bound 0: those dendrites are cut
    assert torch.equal(weight[:, kept], saved[:, kept])  # and no other
    assert result.info["clamped_sources"] == sum(len(v["suppressed"]) for v in layers.values())
    path = result.info["path"]  # the shares grew one grid step at a time, within the budget
    assert all(step["shift"] <= 0.02 and step["agreement"] >= 0.95 for step in path)
    assert [s["fraction"] for s in path if s["dendrites_of"] == "body.9"][-1] == fc["fraction"]


@pytest.mark.parametrize("bad", [{"fraction_grid": ()}, {"fraction_grid": (0.0,)},
                                 {"max_disagreement": 2.0}, {"bound": -1.0},
                                 {"quantile": 1.5}, {"max_shift": -0.1}])
def test_bad_options_fail_early(bad):
    with pytest.raises(ValueError):
        NDSBMOptions(**bad)
