import pytest
import torch
from spikingjelly.activation_based import neuron

from snnbackdoor.models import build_model
from snnbackdoor.neurons import (
    NeuronConfig,
    count_spikes,
    get_neuron_params,
    neuron_params,
    set_neuron_params,
)


@pytest.mark.parametrize("kind", ["lif", "plif", "if"])
def test_set_threshold_reaches_every_node(kind):
    model = build_model("digits_net", neuron=kind)
    set_neuron_params(model, v_threshold=1.7)
    values = get_neuron_params(model)
    assert len(values) == 3
    assert all(v["v_threshold"] == 1.7 for v in values.values())


def test_tau_only_on_lif_and_plif_learned_tau_untouched():
    lif = build_model("digits_net", neuron="lif")
    set_neuron_params(lif, tau=3.0)
    assert all(v["tau"] == 3.0 for v in get_neuron_params(lif).values())
    plif = build_model("digits_net", neuron="plif", tau=2.0)
    with pytest.raises(ValueError, match="PLIF learns tau"):
        set_neuron_params(plif, tau=3.0)
    assert all(abs(v["tau"] - 2.0) < 1e-5 for v in get_neuron_params(plif).values())


@pytest.mark.parametrize("tau", [1.0, 0.5, -2.0])
def test_tau_at_most_one_is_refused_with_the_mapping(tau):
    model = build_model("digits_net")
    with pytest.raises(ValueError, match="paper tau 0.5 -> tau=2.0"):
        set_neuron_params(model, tau=tau)
    with pytest.raises(ValueError, match="1 / paper_tau"):
        NeuronConfig(tau=tau)
    assert all(v["tau"] == 2.0 for v in get_neuron_params(model).values())


def test_context_manager_restores_even_on_error():
    model = build_model("digits_net")
    with pytest.raises(RuntimeError):
        with neuron_params(model, v_threshold=2.5, tau=4.0):
            assert all(v["v_threshold"] == 2.5 for v in get_neuron_params(model).values())
            raise RuntimeError("boom")
    assert all(v == {"v_threshold": 1.0, "tau": 2.0} for v in get_neuron_params(model).values())


def test_layers_selects_by_name_and_unknown_name_fails():
    model = build_model("digits_net")
    first = next(iter(get_neuron_params(model)))
    set_neuron_params(model, v_threshold=1.3, layers=[first])
    values = get_neuron_params(model)
    assert values[first]["v_threshold"] == 1.3
    assert sum(v["v_threshold"] == 1.0 for v in values.values()) == 2
    with pytest.raises(KeyError, match="no spiking layer"):
        set_neuron_params(model, v_threshold=1.3, layers=["nope"])


def test_count_spikes_matches_a_manual_count():
    torch.manual_seed(0)
    model = build_model("digits_net").eval()
    x = torch.rand(5, 1, 16, 16)
    recorded = []
    nodes = [m for m in model.modules() if isinstance(m, neuron.LIFNode)]
    handles = [n.register_forward_hook(lambda m, i, o: recorded.append(o)) for n in nodes]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    manual = sum(o.flatten(2).sum(dim=(0, 2)) for o in recorded)
    counts = count_spikes(model, x, batch_size=2)
    assert torch.allclose(counts["total"], manual)
    assert counts["total"].shape == (5,)
    assert set(counts) == set(get_neuron_params(model)) | {"total"}


def test_higher_threshold_means_fewer_spikes():
    torch.manual_seed(0)
    model = build_model("digits_net").eval()
    x = torch.rand(8, 1, 16, 16) * 6  # strong enough input for an untrained net to fire
    low = count_spikes(model, x)["total"].sum()
    with neuron_params(model, v_threshold=2.0):
        high = count_spikes(model, x)["total"].sum()
    assert high < low
