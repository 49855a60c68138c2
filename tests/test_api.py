"""The public API on model objects: a user's own SpikingJelly network (LIF, PLIF, IF) goes
through training, neuron control, attacks, repairs, detectors and save/load unregistered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import layer, neuron, surrogate

import snnbackdoor as sb
from snnbackdoor.attacks.badnet import BadNetOptions
from snnbackdoor.checkpoint import CheckpointError
from snnbackdoor.config import ConfigError
from snnbackdoor.experiments.table2 import defender_index
from snnbackdoor.neurons import get_neuron_params
from snnbackdoor.registry import UnknownComponentError, lookup

QUICK = sb.TrainConfig(epochs=2, lr=3e-3, progress=False, seed=0)
MEAN, STD = (0.3,), (0.35,)


class MyLIF(neuron.LIFNode):
    """A user's own LIF variant (a subclass): tau is still its setting."""


NODES = {
    "lif": lambda: MyLIF(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True,
                         step_mode="m"),
    "plif": lambda: neuron.ParametricLIFNode(init_tau=2.0, surrogate_function=surrogate.ATan(),
                                             detach_reset=True, step_mode="m"),
    "if": lambda: neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True,
                                step_mode="m"),
}


def user_body(kind: str, width: int = 8) -> nn.Module:
    node = NODES[kind]
    return nn.Sequential(
        layer.Conv2d(1, width, 3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(width, step_mode="m"), node(), layer.AvgPool2d(2, step_mode="m"),
        layer.Conv2d(width, 2 * width, 3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(2 * width, step_mode="m"), node(), layer.AvgPool2d(2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(2 * width * 16, 10, step_mode="m"),
    )


def builder(kind: str, T: int = 4, width: int = 8):
    return lambda: sb.SpikingClassifier(user_body(kind, width), T, MEAN, STD)


def build_plif() -> nn.Module:
    """Importable by path: `test_api:build_plif`."""
    return builder("plif")()


@pytest.mark.parametrize("kind", ["plif", "if", "lif"])
def test_a_user_body_trains_takes_neuron_control_a_backdoor_and_a_round_trip(
        kind, digits, tmp_path):
    build = builder(kind)
    torch.manual_seed(0)
    model = build()
    sb.train(model, digits.train, QUICK)
    ca = sb.evaluate(model, digits.test)
    assert ca > 0.5
    before = get_neuron_params(model)
    assert len(before) == 2
    x = digits.test.floats()[:32]
    spikes = sb.count_spikes(model, x)["total"].sum()
    with sb.neuron_params(model, v_threshold=3.0):
        assert {p["v_threshold"] for p in get_neuron_params(model).values()} == {3.0}
        assert sb.count_spikes(model, x)["total"].sum() < spikes
    assert get_neuron_params(model) == before
    if kind == "lif":  # a subclass of LIFNode: tau is a setting
        with sb.neuron_params(model, tau=3.0):
            assert {p["tau"] for p in get_neuron_params(model).values()} == {3.0}
    else:
        with pytest.raises(ValueError, match="no LIFNode"):
            sb.set_neuron_params(model, tau=3.0)

    outcome = sb.attack("badnet", digits, build, {"size": 4}, target=3, poison_ratio=0.1,
                        seed=0, train={**QUICK.__dict__, "epochs": 3})
    figures = sb.measure(outcome.model, digits.test, outcome.trigger, 3)
    assert figures["asr"] > 0.5 and outcome.poisoned_index

    sb.set_neuron_params(outcome.model, v_threshold=1.1)  # a deployed config to keep
    path = sb.save_model(outcome.model, tmp_path / "mine.safetensors")
    sidecar = json.loads((tmp_path / "mine.json").read_text())
    assert "spec" not in sidecar and sidecar["user_built"] == {
        "class": "SpikingClassifier", "T": 4, "encoding": "direct"}
    again = sb.load_model(path, build=build)
    assert not again.training
    assert torch.equal(again(x), outcome.model.eval()(x))
    assert get_neuron_params(again) == get_neuron_params(outcome.model)


def test_loading_a_user_built_model_needs_the_callers_constructor_that_matches(
        digits, tmp_path, monkeypatch):
    model = build_plif()
    with torch.no_grad():
        model.body[2].w.fill_(0.7)  # a learned PLIF tau the file must bring back
    path = sb.save_model(model, tmp_path / "p.safetensors")
    with pytest.raises(CheckpointError, match="build="):
        sb.load_model(path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    again = sb.load_model(path, build="test_api:build_plif")  # named by the caller
    assert float(again.body[2].w) == pytest.approx(0.7)
    with pytest.raises(CheckpointError, match="constructor the model was saved from"):
        sb.load_model(path, build=builder("plif", width=4))  # other shapes
    with pytest.raises(CheckpointError, match="build\\(\\) made"):
        sb.load_model(path, build=builder("plif", T=8))  # T lives outside the weights
    with pytest.raises(CheckpointError, match="unexpected"):
        sb.load_model(path, build=builder("if"))  # IF nodes have no learned tau w
    with pytest.raises(CheckpointError, match="cannot import"):
        sb.load_model(path, build="no_such_module_here:build")
    with pytest.raises(CheckpointError, match="module:function"):
        sb.load_model(path, build="not a path")
    built = sb.build_model("digits_net")
    spec_path = sb.save_model(built, tmp_path / "b.safetensors")
    again = sb.load_model(spec_path, build=build_plif)  # its spec rebuilds it: build ignored
    assert type(again) is type(built) and again.spec == built.spec


def test_a_hostile_user_built_sidecar_is_refused_and_names_no_code(tmp_path):
    path = sb.save_model(build_plif(), tmp_path / "p.safetensors")
    side = tmp_path / "p.json"
    meta = json.loads(side.read_text())
    for record in ({"class": "X", "builder": "os:system"}, {"class": "X", "T": 0},
                   {"class": "X", "encoding": "pickle"}, ["os:system"]):
        side.write_text(json.dumps({**meta, "user_built": record}))
        with pytest.raises(CheckpointError, match="sidecar"):
            sb.load_model(path, build=build_plif)
    side.write_text(json.dumps({**meta, "neuron_params": {"x": {"v_threshold": -1, "tau": 2}}}))
    with pytest.raises(CheckpointError, match="neuron_params"):
        sb.load_model(path, build=build_plif)


def test_attack_is_the_registered_attack_with_its_options_parsed(digits):
    recipe = sb.TrainConfig(epochs=1, progress=False)
    ours = sb.attack("badnet", digits, builder("if"), {"size": 2}, target=1, seed=3,
                     train=recipe)
    theirs = lookup("attack", "badnet")(
        sb.AttackSetup(data=digits, build_model=builder("if"), train=recipe, target=1, seed=3),
        BadNetOptions(size=2))
    assert ours.poisoned_index == theirs.poisoned_index
    for key, value in ours.model.state_dict().items():
        assert torch.equal(value, theirs.model.state_dict()[key]), key
    with pytest.raises(ConfigError, match="Did you mean 'size'"):
        sb.attack("badnet", digits, builder("if"), {"sise": 2})
    with pytest.raises(UnknownComponentError, match="Did you mean 'badnet'"):
        sb.attack("badnett", digits, builder("if"))
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        sb.attack_setup(digits, builder("if"), train={"epoch": 1})
    options = sb.parse_component_options("attack", "badsnn", {"unet": {"epochs": 3}})
    assert isinstance(options, sb.BadSNNOptions) and options.unet.epochs == 3
    assert sb.parse_component_options("attack", "badnet", BadNetOptions(size=5)).size == 5
    with pytest.raises(TypeError, match="BadNetOptions"):
        sb.parse_component_options("attack", "badnet", [("size", 2)])


def test_repair_and_detect_on_a_user_model_never_change_it(digits):
    torch.manual_seed(0)
    model = builder("lif")()
    sb.train(model, digits.train, QUICK)
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    defender = sb.defender_subset(digits.train, 0.1, seed=0, exclude=list(range(50)))
    assert len(defender.y.unique()) == 10 and len(defender) < len(digits.train) // 5
    repaired = sb.repair("finetune", model, defender, {"epochs": 1, "progress": False})
    assert isinstance(repaired, sb.Repaired) and repaired.model is not model
    assert repaired.info["defense"] == "finetune"
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        sb.repair("finetune", model, defender, {"epoch": 1})
    x = digits.test.floats()[:64]
    scores = sb.detect("strip", model, defender, x, x.clamp(min=0.5), {"overlays": 4,
                                                                       "progress": False})
    report = sb.detection_report(scores)
    assert 0.0 <= report["auroc"] <= 1.0 and len(scores.clean) == 64
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_the_defender_subset_leaves_out_what_the_attack_poisoned(digits):
    poisoned = list(range(0, len(digits.train), 3))
    subset = sb.defender_subset(digits.train, 0.2, seed=1, exclude=poisoned)
    index = defender_index(digits.train.y, 0.2, 1, poisoned)
    assert not set(index.tolist()) & set(poisoned)
    assert torch.equal(subset.y, digits.train.y[index])
    with pytest.raises(ValueError, match="fraction"):
        sb.defender_subset(digits.train, 1.5)


def test_an_attack_on_a_user_model_resumes_from_its_workdir(digits, tmp_path):
    """The second call reloads the saved user-built model into its constructor: same
    weights, no retraining (the stage is logged as reused)."""
    recipe = sb.TrainConfig(epochs=1, progress=False)
    first = sb.attack("badnet", digits, builder("lif"), target=2, train=recipe,
                      workdir=tmp_path / "badnet")
    again = sb.attack("badnet", digits, builder("lif"), target=2, train=recipe,
                      workdir=tmp_path / "badnet")
    for (name, a), (_, b) in zip(first.model.state_dict().items(),
                                 again.model.state_dict().items()):
        assert torch.equal(a.cpu(), b.cpu()), name
    log = (tmp_path / "badnet" / "log.jsonl").read_text()
    assert '"status": "reused"' in log
