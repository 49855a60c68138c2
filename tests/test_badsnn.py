"""BadSNN: dual-spike backdoor, DeepFool, blending, U-Net, attack-config selection, and the
registered attack run from Python on a model object (no run directory)."""

import os

import pytest
import torch

from snnbackdoor.attacks.badsnn import (
    BadSNNOptions,
    badsnn,
    choose_poisoned_target_samples,
    dual_spike_loss,
    resolve_trigger,
    select_attack_config,
)
from snnbackdoor.attacks.badsnn.stages import asr_at
from snnbackdoor.attacks.badsnn.trigger_fit import fit_trigger_unet
from snnbackdoor.attacks.base import AttackSetup, measure
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.neurons import (
    NeuronConfig,
    count_spikes,
    get_neuron_params,
    logits_and_spike_totals,
)
from snnbackdoor.registry import lookup
from snnbackdoor.report.badsnn_figures import grid_figure
from snnbackdoor.training import TrainConfig, predict, seed_everything, train
from snnbackdoor.triggers.deepfool import deepfool
from snnbackdoor.triggers.image import PowerTrigger
from snnbackdoor.triggers.optimised import (
    ConditionalUNet,
    OptimisedTrigger,
    UNetConfig,
    blend_targets,
    load_generator,
    save_generator,
)

MALICIOUS = NeuronConfig(v_threshold=1.8, tau=2.0)


@pytest.fixture(scope="module")
def target(clean_digits_model, digits):
    """A class the clean model does not drift to by itself under S_t.

    A clean net whose neurons fall silent at a high threshold answers with its head's bias,
    i.e. one arbitrary class; planting the backdoor on that class would prove nothing.
    """
    pred = predict(clean_digits_model, digits.val.x, neuron_config=MALICIOUS)
    return int(torch.bincount(pred.cpu(), minlength=10).argmin())


@pytest.fixture(scope="module")
def backdoored(digits, target):
    """digits_net trained with dual-spike learning, 40% of the target under S_t = (1.8, 2.0)."""
    seed_everything(0)
    poisoned = choose_poisoned_target_samples(digits.train.y, target, 0.4, seed=0)
    mask = torch.zeros(len(digits.train), dtype=torch.bool)
    mask[poisoned] = True
    model = build_model(model_spec(ModelConfig(), digits.info))
    # Fewer epochs plant it only where the target is the class a silent net answers anyway.
    train(model, digits.train, TrainConfig(epochs=12, lr=3e-3, progress=False),
          loss_fn=dual_spike_loss(mask, MALICIOUS))
    return model.eval()


def test_poisoned_subset_is_target_only_with_the_set_ratio(digits):
    y = digits.train.y
    index = choose_poisoned_target_samples(y, 3, 0.25, seed=1)
    assert torch.all(y[index] == 3)
    assert len(index) == round(0.25 * int((y == 3).sum()))
    assert torch.equal(index, choose_poisoned_target_samples(y, 3, 0.25, seed=1))
    assert not torch.equal(index, choose_poisoned_target_samples(y, 3, 0.25, seed=2))


def test_malicious_config_collapses_backdoored_not_clean(
    backdoored, clean_digits_model, digits, target
):
    x = digits.val.x[digits.val.y != target]
    to_target = lambda m: float((predict(m, x, neuron_config=MALICIOUS) == target).float().mean())  # noqa: E731,E501
    assert to_target(backdoored) > 0.8
    assert to_target(clean_digits_model) < 0.5
    nominal = float((predict(backdoored, digits.val.x) == digits.val.y).float().mean())
    assert nominal > 0.9  # the backdoor costs little clean accuracy at S_n


def test_deepfool_flips_with_small_perturbations(clean_digits_model, digits):
    x = digits.val.floats()[:64]
    before = predict(clean_digits_model, x)
    delta, flipped = deepfool(clean_digits_model, x, max_iter=50)
    assert flipped.float().mean() > 0.9
    after = predict(clean_digits_model, x + delta)
    assert torch.equal(after != before, flipped)
    size = delta.flatten(1).norm(dim=1)
    noise = torch.randn_like(x)
    noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * size.view(-1, 1, 1, 1)
    random_flip = (predict(clean_digits_model, (x + noise).clamp(0, 1)) != before).float().mean()
    assert random_flip < 0.3  # the same L2 in a random direction rarely flips: DeepFool is minimal


def test_blending_picks_the_smallest_perturbation_that_reaches_the_target():
    class AlwaysTarget(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([5.0, 0.0]).expand(len(x), 2) + 0 * self.w

    x = torch.rand(3, 1, 4, 4)
    delta_df = 0.01 * torch.ones_like(x)
    delta, alpha, reached = blend_targets(AlwaysTarget(), x, delta_df, 2.0, 0, None, k=5)
    assert reached.all() and torch.all(alpha == 1.0)  # alpha=1 is x + delta_DF: the smallest
    assert torch.allclose(delta, (x + delta_df).clamp(0, 1) - x)
    absolute, _, _ = blend_targets(AlwaysTarget(), x, -delta_df, 2.0, 0, None, k=5, sign="abs")
    assert torch.all(absolute >= 0)


def test_unet_loss_falls_and_generator_round_trips(tmp_path, clean_digits_model, digits):
    x = digits.val.floats()[:96]
    delta = (x - x ** 3).abs()
    generator, history = fit_trigger_unet(clean_digits_model, x, delta, 0, 10,
                                          UNetConfig(epochs=6, width=8, progress=False),
                                          None, None)
    assert history[-1]["loss"] < history[0]["loss"]
    out = generator(x, 0)
    assert out.abs().max() <= 0.2 + 1e-6  # the L_inf budget holds
    save_generator(generator, tmp_path / "g.safetensors")
    loaded, _ = load_generator(tmp_path / "g.safetensors")
    trigger, again = OptimisedTrigger(generator, 0), OptimisedTrigger(loaded, 0)
    assert torch.allclose(trigger(x), again(x), atol=1e-6)


def test_power_trigger_is_exact():
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(PowerTrigger(3.0)(x), x ** 3.0)


def test_selection_respects_the_ca_bound_on_validation():
    rows = [
        {"v_threshold_a": 1.0, "tau_a": 2.0, "val_ca": 0.98, "val_asr_o": 0.3},
        {"v_threshold_a": 1.1, "tau_a": 2.0, "val_ca": 0.95, "val_asr_o": 0.8},
        {"v_threshold_a": 1.2, "tau_a": 2.0, "val_ca": 0.50, "val_asr_o": 1.0},
    ]
    choice = select_attack_config(rows, 0.98, 0.05, "val_asr_o")
    assert choice.row["v_threshold_a"] == 1.1 and choice.within_tolerance
    assert choice.config == NeuronConfig(1.1, 2.0) and choice.candidates == 2


def test_selection_breaks_a_saturated_asr_tie_toward_the_nominal_config():
    rows = [
        {"v_threshold_a": 1.0, "tau_a": 2.0, "val_ca": 0.954, "val_asr_s": 1.0},
        {"v_threshold_a": 1.25, "tau_a": 2.0, "val_ca": 0.958, "val_asr_s": 1.0},  # val noise
        {"v_threshold_a": 1.3, "tau_a": 2.0, "val_ca": 0.944, "val_asr_s": 0.9},
    ]
    assert select_attack_config(rows, 0.954, 0.03, "val_asr_s").row["v_threshold_a"] == 1.0


def test_selection_without_any_config_in_tolerance_is_recorded_or_refused():
    rows = [
        {"v_threshold_a": 1.2, "tau_a": 2.0, "val_ca": 0.60, "val_asr_o": 0.9},
        {"v_threshold_a": 1.3, "tau_a": 2.0, "val_ca": 0.70, "val_asr_o": 0.5},
    ]
    choice = select_attack_config(rows, 0.98, 0.03, "val_asr_o")
    assert choice.row["v_threshold_a"] == 1.3  # the highest val CA, not the highest ASR
    record = choice.record()
    assert record["within_tolerance"] is False and "highest val CA" in record["rule"]
    with pytest.raises(ValueError, match="no attack config keeps val CA"):
        select_attack_config(rows, 0.98, 0.03, "val_asr_o", fallback=False)


def test_trigger_auto_resolves_by_data_kind_and_mismatches_are_refused():
    assert resolve_trigger(BadSNNOptions(), "image") == "optimised"
    assert resolve_trigger(BadSNNOptions(), "events") == "noise"
    assert resolve_trigger(BadSNNOptions(trigger="thinning"), "events") == "thinning"
    with pytest.raises(ValueError, match="for images"):
        resolve_trigger(BadSNNOptions(trigger="optimised"), "events")
    with pytest.raises(ValueError, match="for event frames"):
        resolve_trigger(BadSNNOptions(trigger="noise"), "image")


def test_grid_figure_draws_curves_for_one_tau_and_a_heat_map_for_several(tmp_path):
    one_tau = [{"v_threshold_a": v, "tau_a": 2.0, "ca": 1 - v / 3, "asr_o": v / 2}
               for v in (1.0, 1.2, 1.4, 1.6)]
    plif = [{**r, "tau_a": None} for r in one_tau]  # learned tau: no tau axis at all
    both = [{**r, "tau_a": t} for r in one_tau for t in (1.5, 2.0, 3.0)]
    for name, rows in (("curves", one_tau), ("plif", plif), ("heat", both)):
        path = grid_figure(rows, ["ca", "asr_o"], tmp_path / f"{name}.png", rows[1])
        assert path.stat().st_size > 1000


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="tau"):
        BadSNNOptions(tau_t=0.5)
    with pytest.raises(ValueError, match="target_class_ratio"):
        BadSNNOptions(target_class_ratio=0.0)
    with pytest.raises(ValueError, match="trigger"):
        BadSNNOptions(trigger="optimized")
    with pytest.raises(ValueError):
        ConditionalUNet(1, 10, eps=0.1)(torch.rand(2, 1, 8, 8), 10)  # unknown target class
    for bad, key in (({"form": "brighten"}, "unet.form"), ({"objective": "class"}, "objective"),
                     ({"eps": 1.5}, "L_inf budget")):
        with pytest.raises(ValueError, match=key):
            UNetConfig(**bad)
    with pytest.raises(ValueError, match="ca_reference"):
        BadSNNOptions(ca_reference="test")
    with pytest.raises(ValueError, match="eps_nominal_max"):
        BadSNNOptions(eps_nominal_max=1.2)


def test_registered_attack_runs_from_python_on_a_model_object(
    digits, clean_digits_model, target, tmp_path, monkeypatch
):
    """No workdir, no config: the outcome is deployed at the S_a it reports, and its T_o
    sends more non-target inputs to the target than on the clean model."""
    assert lookup("attack", "badsnn") is badsnn
    monkeypatch.chdir(tmp_path)
    setup = AttackSetup(
        data=digits, build_model=lambda: build_model(model_spec(ModelConfig(), digits.info)),
        train=TrainConfig(epochs=12, lr=3e-3, progress=False), target=target, seed=0,
        clean_model=lambda: clean_digits_model,
    )
    options = BadSNNOptions(
        target_class_ratio=0.4, v_threshold_t=1.8, v_thresholds_a=[1.0, 1.4],
        ca_tolerance=0.1, deepfool_samples=128, deepfool_max_iter=10, control=False,
        unet=UNetConfig(epochs=20, batch_size=32, width=8, progress=False),
    )
    outcome = badsnn(setup, options)
    assert os.listdir(tmp_path) == []  # nothing written without a workdir
    selected = outcome.info["selected"]
    assert outcome.deployed == {"v_threshold": selected["v_threshold_a"], "tau": 2.0}
    params = get_neuron_params(outcome.model).values()
    assert all(p["v_threshold"] == selected["v_threshold_a"] for p in params)
    assert set(outcome.triggers) == {"T_p", "T_o"} and outcome.trigger is outcome.triggers["T_o"]
    assert outcome.info["trigger"] == "optimised" and outcome.target == target
    attacked = measure(outcome.model, digits.test, outcome.trigger, target)
    clean = measure(clean_digits_model, digits.test, outcome.trigger, target)
    assert attacked["asr"] == pytest.approx(selected["asr_o"])
    assert selected["v_threshold_a"] == 1.4  # S_n gives T_o nothing to work with
    assert attacked["asr"] > clean["asr"] + 0.3


def test_spike_starving_trigger_fires_on_the_backdoor_and_not_on_the_clean_model(
        backdoored, clean_digits_model, digits, target, tmp_path):
    """T_o with `objective: spikes` names no class in its loss and may only dim pixels: at
    S_a it sends the backdoored model's inputs to the target (what that model answers when
    starved of spikes), while the same fit against the clean model sends them nowhere."""
    x = digits.train.floats()[:192]
    attack, nominal = NeuronConfig(1.3, 2.0), NeuronConfig(1.0, 2.0)
    config = UNetConfig(eps=0.7, epochs=8, width=8, batch_size=32, lr=0.02,
                        weights=[0.0, 5.0, 0.0], adv_config="attack", form="dimming",
                        objective="spikes", progress=False)
    asr = {}
    for name, model in (("backdoored", backdoored), ("clean", clean_digits_model)):
        generator, history = fit_trigger_unet(model, x, x ** 3 - x, target, 10, config, attack,
                                              nominal, keep_weight=0.3)
        assert history[-1]["loss"] < history[0]["loss"]
        perturbation = generator(x, target)
        assert (perturbation <= 0).all() and (perturbation >= -0.7 * x - 1e-6).all()
        asr[name] = asr_at(model, digits.val, OptimisedTrigger(generator, target), target,
                           attack)
    assert asr["backdoored"] >= 0.8 and asr["clean"] <= 0.1, asr
    save_generator(generator, tmp_path / "g.safetensors")
    loaded, _ = load_generator(tmp_path / "g.safetensors")
    assert loaded.form == "dimming" and torch.allclose(loaded(x, target), generator(x, target))


def test_spike_totals_match_the_counter_and_carry_gradients(clean_digits_model, digits):
    x = digits.val.floats()[:16].requires_grad_(True)
    logits, totals = logits_and_spike_totals(clean_digits_model, x)
    assert torch.allclose(totals.detach(), count_spikes(clean_digits_model, x.detach())["total"])
    totals.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # surrogate gradients reach the input


def test_eps_search_skips_a_budget_whose_backdoored_trigger_fires_at_s_n(
        monkeypatch, clean_digits_model, digits):
    """With `eps_nominal_max`, a budget whose control passes is still refused when the
    backdoored T_o answers y_t at S_n on validation; the next budget is taken."""
    from types import SimpleNamespace

    from snnbackdoor.attacks.badsnn import optimise

    class NoChange(torch.nn.Module):
        def forward(self, x, target):
            return torch.zeros_like(x)

    monkeypatch.setattr(optimise, "control_generator", lambda *a, **k: (NoChange(), {}))
    options = BadSNNOptions(eps_grid=[0.7, 0.5, 0.3], eps_control_max=0.1, eps_nominal_max=0.2)
    nominal = NeuronConfig(1.0, 2.0)
    at_s_n = {0.7: 0.5, 0.5: 0.1, 0.3: 0.0}
    search = optimise.choose_eps(SimpleNamespace(workdir=None), clean_digits_model, digits,
                                 options, 3, nominal, nominal, 0, None,
                                 nominal_asr=at_s_n.__getitem__)
    assert search["eps"] == 0.5 and search["within"]
    assert [r["val_asr_o_nominal"] for r in search["rows"]] == [0.5, 0.1]
    assert all(r["val_asr_o_clean_model"] <= 0.1 for r in search["rows"])
