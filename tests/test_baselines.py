"""Poisoning baselines: poisoned subsets, WaNet cross samples, Clean-Label PGD, a real backdoor,
options checked when parsed, resumable attack stages."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snnbackdoor import registry
from snnbackdoor.attacks.badnet import BadNetOptions, badnet
from snnbackdoor.attacks.base import AttackSetup, measure
from snnbackdoor.attacks.blend import BlendOptions
from snnbackdoor.attacks.clean_label import (
    CleanLabelOptions,
    adversarial_loss,
    clean_label_poisoning,
    pgd_attack,
)
from snnbackdoor.attacks.dirty_label import dirty_label_poisoning
from snnbackdoor.attacks.poisoning import choose_poison_index
from snnbackdoor.attacks.wanet import WaNetOptions, wanet_batch_loss, wanet_cross_loss
from snnbackdoor.config import ConfigError, parse_dataclass
from snnbackdoor.data import load_dataset
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.training import TrainConfig, evaluate, train
from snnbackdoor.triggers.image import BadNetTrigger, CleanLabelStamp, WaNetTrigger

NO_TRAINING = TrainConfig(epochs=0, progress=False)
BASELINES = ["badnet", "blend", "wanet", "clean_label"]


def setup_for(data, train=NO_TRAINING, **extra) -> AttackSetup:
    spec = model_spec(ModelConfig(), data.info)
    return AttackSetup(data=data, build_model=lambda: build_model(spec), train=train, **extra)


def run_attack(name: str, setup: AttackSetup, **options):
    component = registry.get("attack", name)
    return component.obj(setup, component.options(**options))


def test_every_baseline_is_registered_with_its_options_dataclass():
    for name in BASELINES:
        component = registry.get("attack", name)
        assert dataclasses.is_dataclass(component.options)
        assert component.description
    defaults = registry.describe("attack")["attack"]["badnet"]["options"]
    assert defaults == {"size": 3, "position": "bottom_right", "value": 1.0}


@pytest.mark.parametrize("name", ["badnet", "blend", "wanet"])
def test_dirty_label_subset_has_the_ratio_only_non_target_sources_and_the_trigger(digits, name):
    setup = setup_for(digits, target=3, poison_ratio=0.05, seed=1)
    options = {"poison_mode": "fixed"} if name == "wanet" else {}
    trigger = registry.get("attack", name).options(**options).trigger(digits.info, seed=1)
    poisoned = dirty_label_poisoning(setup, trigger).poisoned
    index = poisoned.poisoned_index
    assert len(index) == round(0.05 * len(digits.train))
    assert len(set(index.tolist())) == len(index)
    assert bool((digits.train.y[index] != 3).all())  # sources: non-target classes only
    assert bool((poisoned.split.y[index] == 3).all())  # relabelled to the target
    clean_x = digits.train.floats()
    assert torch.allclose(poisoned.split.x[index], trigger(clean_x[index]))
    rest = torch.ones(len(clean_x), dtype=torch.bool)
    rest[index] = False
    assert torch.equal(poisoned.split.x[rest], clean_x[rest])
    assert torch.equal(poisoned.split.y[rest], digits.train.y[rest])
    # the attack itself poisons exactly these samples and records them
    outcome = run_attack(name, setup, **options)
    assert outcome.poisoned_index == index.tolist() and outcome.info["poison_count"] == len(index)
    assert outcome.target == 3 and outcome.info["test"].keys() == {"ca", "asr", "ra"}
    assert torch.equal(outcome.trigger(clean_x[:4]), trigger(clean_x[:4]))


def test_clean_label_poisons_target_samples_within_eps_and_keeps_labels(digits,
                                                                        clean_digits_model):
    setup = setup_for(digits, target=0, poison_ratio=0.05, seed=0)
    poisoning = clean_label_poisoning(setup, CleanLabelOptions(steps=5), clean_digits_model)
    poisoned = poisoning.poisoned
    index = poisoned.poisoned_index
    target_count = int((digits.train.y == 0).sum())
    assert len(index) == min(target_count, round(0.05 * len(digits.train)))
    assert bool((digits.train.y[index] == 0).all())  # drawn from the target class
    assert torch.equal(poisoned.split.y, digits.train.y)  # no label changed
    x = poisoned.split.x[index]
    clean = digits.train.floats(index)
    assert torch.equal(CleanLabelStamp()(x), x)  # the four corner stamps are on
    corners = torch.zeros_like(clean, dtype=torch.bool)
    for rows in (slice(0, 3), slice(-3, None)):
        for cols in (slice(0, 3), slice(-3, None)):
            corners[..., rows, cols] = True
    inside = (x - clean)[~corners]
    assert 0 < float(inside.abs().max()) <= 8 / 255 + 1e-6  # the PGD step, within eps
    assert poisoning.info["surrogate_val_accuracy"] == evaluate(clean_digits_model, digits.val)
    # how hard PGD made them for the surrogate, measured on the perturbed, unstamped samples
    hard = pgd_attack(clean_digits_model, clean, torch.zeros(len(index), dtype=torch.long),
                      8 / 255, 1.5 / 255, 5)
    expected = float((clean_digits_model(hard).argmax(1) == 0).float().mean())
    assert poisoning.info["surrogate_accuracy_on_poison"] == pytest.approx(expected)
    assert poisoning.info["surrogate_accuracy_on_clean_poison"] == 1.0
    assert poisoning.info["surrogate_accuracy_on_poison"] < 1.0


def test_clean_label_uses_the_setups_clean_model_as_surrogate(digits, clean_digits_model):
    calls = []

    def surrogate():
        calls.append(1)
        return clean_digits_model

    setup = setup_for(digits, clean_model=surrogate)
    outcome = run_attack("clean_label", setup, steps=1, surrogate="clean")
    assert calls == [1]  # asked once, while poisoning
    assert outcome.info["surrogate_val_accuracy"] == evaluate(clean_digits_model, digits.val)
    assert outcome.info["options"]["steps"] == 1 and outcome.info["surrogate"] == "clean"


def test_clean_label_crafts_on_an_adversarially_trained_surrogate_by_default(
        digits, clean_digits_model, tmp_path):
    setup = setup_for(digits, train=TrainConfig(epochs=1, progress=False),
                      clean_model=lambda: pytest.fail("the clean model is not the surrogate"),
                      workdir=tmp_path)
    outcome = run_attack("clean_label", setup, steps=2, adv_steps=1)
    assert outcome.info["surrogate"] == "adversarial"
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert {"surrogate", "model"} <= set(stages)  # its own resumable stage
    assert (tmp_path / "surrogate.safetensors").exists()
    # PGD training's loss is the loss at PGD examples: above the clean loss of the same batch
    x, y = digits.val.floats()[:32], digits.val.y[:32]
    loss = adversarial_loss(CleanLabelOptions(adv_eps=8 / 255, adv_steps=3), 0)
    with torch.no_grad():
        clean_loss = F.cross_entropy(clean_digits_model(x), y)
    assert float(loss(clean_digits_model, x, y, None)) > float(clean_loss) + 0.05


def test_clean_label_options_fail_early():
    with pytest.raises(ValueError, match="surrogate"):
        CleanLabelOptions(surrogate="robust")


def test_pgd_raises_the_clean_models_loss_within_eps(digits, clean_digits_model):
    x = digits.val.floats()[:48]
    y = digits.val.y[:48]
    adv = pgd_attack(clean_digits_model, x, y, eps=8 / 255, step=1.5 / 255, steps=8)
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        before = F.cross_entropy(clean_digits_model(x), y)
        after = F.cross_entropy(clean_digits_model(adv), y)
    assert float(after) > float(before) + 0.05
    assert clean_digits_model.training is False  # mode restored, weights untouched


class Recorder(nn.Module):
    """Stands in for a model: remembers what the loss function fed it."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.bias.expand(len(x), -1)


def test_wanet_cross_samples_are_noise_warped_and_keep_true_labels(digits):
    trigger = WaNetTrigger(k=4, s=0.5, seed=0)
    x = digits.train.floats()[:64]
    y = digits.train.y[:64].clone()
    poisoned_index = torch.tensor([3, 10, 20, 41, 100])  # 4 of them inside the batch
    index = torch.arange(64)
    x_batch = x.clone()
    x_batch[poisoned_index[:4]] = trigger(x[poisoned_index[:4]])
    y_batch = y.clone()
    y_batch[poisoned_index[:4]] = 0
    loss_fn = wanet_cross_loss(trigger, poisoned_index, len(digits.train), cross_ratio=2.0)
    model = Recorder()
    loss = loss_fn(model, x_batch, y_batch, index)
    assert torch.allclose(loss, F.cross_entropy(model.bias.expand(64, -1), y_batch))
    changed = torch.nonzero((model.seen - x_batch).flatten(1).abs().amax(1) > 0).flatten()
    assert len(changed) == 8  # cross_ratio 2 x the 4 poisoned samples of the batch
    assert not set(changed.tolist()) & set(poisoned_index[:4].tolist())  # poisoned untouched
    exact = trigger(x[changed])
    assert float((model.seen[changed] - exact).abs().amax()) > 1e-3  # noise, not the trigger
    # the loss used the batch's labels: cross samples keep their true labels
    assert torch.equal(y_batch[changed], digits.train.y[changed])
    loss_fn(model, x, y, torch.arange(200, 264))  # no poisoned sample: nothing changes
    assert torch.equal(model.seen, x)
    off = wanet_cross_loss(trigger, poisoned_index, len(digits.train), cross_ratio=0.0)
    off(model, x_batch, y_batch, index)
    assert torch.equal(model.seen, x_batch)


def test_wanet_per_batch_poisons_a_fresh_share_and_adds_cross_samples(digits, monkeypatch):
    trigger = WaNetTrigger(k=4, s=0.5, seed=0)
    x = digits.train.floats()[:100]
    y = digits.train.y[:100]
    loss_fn = wanet_batch_loss(trigger, target=0, poison_ratio=0.05, cross_ratio=2.0, seed=0)
    model = Recorder()
    seen_labels = {}
    original = F.cross_entropy

    def recording_cross_entropy(logits, labels):
        seen_labels["y"] = labels
        return original(logits, labels)

    monkeypatch.setattr(F, "cross_entropy", recording_cross_entropy)
    relabelled_sets = []
    for _ in range(2):
        loss_fn(model, x, y, torch.arange(100))
        relabelled = torch.nonzero(seen_labels["y"] != y).flatten()
        assert len(relabelled) == 5  # 5% of 100
        assert bool((y[relabelled] != 0).all()) and bool((seen_labels["y"][relabelled] == 0).all())
        assert torch.allclose(model.seen[relabelled], trigger(x[relabelled]))
        changed = torch.nonzero((model.seen - x).flatten(1).abs().amax(1) > 0).flatten()
        cross = sorted(set(changed.tolist()) - set(relabelled.tolist()))
        assert len(cross) == 10  # cross_ratio 2 x 5, with their true labels
        assert torch.equal(seen_labels["y"][cross], y[cross])
        relabelled_sets.append(set(relabelled.tolist()))
    assert relabelled_sets[0] != relabelled_sets[1]  # drawn afresh every batch
    monkeypatch.undo()
    outcome = run_attack("wanet", setup_for(digits))
    assert outcome.poisoned_index == []  # the stored split stays clean
    assert outcome.info["poisoned_per_epoch"] == round(0.05 * len(digits.train))
    assert outcome.info["options"]["seed"] == 0  # an unset grid seed is the run's


def test_badnet_backdoor_on_digits_has_high_asr_and_keeps_clean_accuracy():
    digits8 = load_dataset("digits", size=8)  # 8x8 digits: four times cheaper to train
    recipe = TrainConfig(epochs=4, batch_size=32, lr=3e-3, progress=False)
    setup = setup_for(digits8, recipe, target=0, poison_ratio=0.05)
    outcome = badnet(setup, BadNetOptions())
    result = measure(outcome.model, digits8.test, outcome.trigger, 0)
    clean = setup.build_model()
    train(clean, digits8.train, recipe)
    clean_ca = evaluate(clean, digits8.test)
    assert result["asr"] >= 0.9
    assert result["ca"] >= clean_ca - 0.03
    assert result["ra"] <= 0.1
    # the clean model ignores the stamp: the backdoor comes from the poisoning
    assert measure(clean, digits8.test, BadNetTrigger(), 0)["asr"] < 0.2
    assert outcome.info["test"] == result


def test_an_attack_is_reproducible_from_its_seed():
    digits8 = load_dataset("digits", size=8)
    recipe = TrainConfig(epochs=1, batch_size=128, progress=False)
    runs = [run_attack("blend", setup_for(digits8, recipe, seed=seed)) for seed in (4, 4, 5)]
    weights = [torch.cat([p.detach().flatten() for p in o.model.parameters()]) for o in runs]
    assert torch.equal(weights[0], weights[1])  # initial weights and batch order are seeded
    assert not torch.equal(weights[0], weights[2])


def test_a_workdir_makes_the_attack_resumable(tmp_path):
    digits8 = load_dataset("digits", size=8)
    recipe = TrainConfig(epochs=1, batch_size=128, progress=False)
    setup = setup_for(digits8, recipe, workdir=tmp_path / "badnet", poison_ratio=0.1)
    first = run_attack("badnet", setup)
    second = run_attack("badnet", setup)  # loaded from the workdir, not retrained
    lines = (tmp_path / "badnet" / "log.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in lines]
    assert [e["status"] for e in log] == ["done", "reused"]
    assert second.poisoned_index == first.poisoned_index
    assert second.poisoned_index == choose_poison_index(digits8.train.y, 0, 0.1, 0).tolist()
    x = digits8.test.floats()[:16]
    assert torch.equal(first.model(x), second.model(x))


def test_options_are_checked_when_parsed_and_a_user_blend_pattern_is_used(digits, tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'size'"):
        parse_dataclass(BadNetOptions, {"sise": 3}, "attack_options.badnet")
    for bad in ({"position": "bottom_rigth"}, {"size": 0}, {"position": [1, -2]}):
        with pytest.raises(ValueError, match="badnet"):
            BadNetOptions(**bad)
    with pytest.raises(ValueError, match="alpha"):
        BlendOptions(alpha=1.5)
    with pytest.raises(ValueError, match="does not exist"):
        BlendOptions(pattern=str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="poison_mode"):
        WaNetOptions(poison_mode="sometimes")
    with pytest.raises(ValueError, match="step > 0"):
        CleanLabelOptions(step=0.0)
    pattern = np.zeros((8, 8), dtype=np.float32)
    pattern[:, :4] = 1.0
    path = tmp_path / "pattern.npy"
    np.save(path, pattern)
    trigger = BlendOptions(alpha=0.5, pattern=str(path)).trigger(digits.info)
    out = trigger(torch.zeros(2, 1, 16, 16))
    assert out.shape == (2, 1, 16, 16)
    assert float(out[..., :, :6].min()) == pytest.approx(0.5)  # left half: white pattern
    assert float(out[..., :, 10:].max()) == 0.0
    parsed = parse_dataclass(BadNetOptions, {"position": [0, 0]})
    assert parsed.trigger(digits.info).position == (0, 0)  # YAML's list -> (row, col)


def test_image_attacks_refuse_event_data():
    events = load_dataset("ndigits")
    with pytest.raises(ValueError, match="image attack"):
        run_attack("badnet", setup_for(events))
