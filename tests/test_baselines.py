"""Poisoning baselines: poisoned subsets, WaNet cross samples, Clean-Label PGD, a real backdoor."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snnbackdoor.attacks.base import measure
from snnbackdoor.attacks.baselines import (
    OUTCOMES,
    check_options,
    clean_label_outcome,
    make_trigger,
    pgd_attack,
    wanet_batch_loss,
    wanet_cross_loss,
)
from snnbackdoor.data import load_dataset
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.training import TrainConfig, evaluate, train
from snnbackdoor.triggers.image import BadNetTrigger, WaNetTrigger

NO_TRAINING = TrainConfig(epochs=0, progress=False)


def spec_for(digits):
    return model_spec(ModelConfig(), digits.info)


FIXED = {"wanet": {"poison_mode": "fixed"}}


@pytest.mark.parametrize("name", ["badnet", "blend", "wanet"])
def test_dirty_label_subset_has_the_ratio_only_non_target_sources_and_the_trigger(digits, name):
    outcome = OUTCOMES[name](digits, spec_for(digits), NO_TRAINING, target=3, poison_ratio=0.05,
                             seed=1, options=FIXED.get(name))
    index = outcome.poisoned.poisoned_index
    assert len(index) == round(0.05 * len(digits.train)) == outcome.info["poison_count"]
    assert len(set(index.tolist())) == len(index)
    assert bool((digits.train.y[index] != 3).all())  # sources: non-target classes only
    assert bool((outcome.poisoned.split.y[index] == 3).all())  # relabelled to the target
    clean_x = digits.train.floats()
    assert torch.allclose(outcome.poisoned.split.x[index], outcome.trigger(clean_x[index]))
    rest = torch.ones(len(clean_x), dtype=torch.bool)
    rest[index] = False
    assert torch.equal(outcome.poisoned.split.x[rest], clean_x[rest])
    assert torch.equal(outcome.poisoned.split.y[rest], digits.train.y[rest])


def test_clean_label_poisons_target_samples_within_eps_and_keeps_labels(digits,
                                                                        clean_digits_model):
    options = {"steps": 5}
    outcome = clean_label_outcome(digits, spec_for(digits), NO_TRAINING, target=0,
                                  poison_ratio=0.05, seed=0, options=options,
                                  clean_model=clean_digits_model)
    index = outcome.poisoned.poisoned_index
    target_count = int((digits.train.y == 0).sum())
    assert len(index) == min(target_count, round(0.05 * len(digits.train)))
    assert bool((digits.train.y[index] == 0).all())  # drawn from the target class
    assert torch.equal(outcome.poisoned.split.y, digits.train.y)  # no label changed
    poisoned = outcome.poisoned.split.x[index]
    clean = digits.train.floats(index)
    assert torch.equal(outcome.trigger(poisoned), poisoned)  # the four corner stamps are on
    corners = torch.zeros_like(clean, dtype=torch.bool)
    for rows in (slice(0, 3), slice(-3, None)):
        for cols in (slice(0, 3), slice(-3, None)):
            corners[..., rows, cols] = True
    inside = (poisoned - clean)[~corners]
    assert 0 < float(inside.abs().max()) <= 8 / 255 + 1e-6  # the PGD step, within eps


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
    outcome = OUTCOMES["wanet"](digits, spec_for(digits), NO_TRAINING)
    assert len(outcome.poisoned.poisoned_index) == 0  # the stored split stays clean
    assert outcome.info["poisoned_per_epoch"] == round(0.05 * len(digits.train))


def test_badnet_backdoor_on_digits_has_high_asr_and_keeps_clean_accuracy():
    digits8 = load_dataset("digits", size=8)  # 8x8 digits: four times cheaper to train
    recipe = TrainConfig(epochs=4, batch_size=32, lr=3e-3, progress=False)
    spec = spec_for(digits8)
    outcome = OUTCOMES["badnet"](digits8, spec, recipe, target=0, poison_ratio=0.05)
    result = measure(outcome.model, digits8.test, outcome.trigger, 0)
    clean = build_model(spec)
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
    runs = [OUTCOMES["blend"](digits8, spec_for(digits8), recipe, seed=seed) for seed in (4, 4, 5)]
    weights = [torch.cat([p.detach().flatten() for p in o.model.parameters()]) for o in runs]
    assert torch.equal(weights[0], weights[1])  # initial weights and batch order are seeded
    assert not torch.equal(weights[0], weights[2])


def test_options_are_checked_and_a_user_blend_pattern_is_used(digits, tmp_path):
    with pytest.raises(ValueError, match="valid options"):
        check_options("badnet", {"sise": 3})
    with pytest.raises(ValueError):
        check_options("blend", {"alpha": 1.5})
    with pytest.raises(KeyError, match="unknown poisoning attack"):
        make_trigger("badnets", {}, digits.info)
    pattern = np.zeros((8, 8), dtype=np.float32)
    pattern[:, :4] = 1.0
    path = tmp_path / "pattern.npy"
    np.save(path, pattern)
    trigger = make_trigger("blend", {"alpha": 0.5, "pattern": str(path)}, digits.info)
    out = trigger(torch.zeros(2, 1, 16, 16))
    assert out.shape == (2, 1, 16, 16)
    assert float(out[..., :, :6].min()) == pytest.approx(0.5)  # left half: white pattern
    assert float(out[..., :, 10:].max()) == 0.0
    assert make_trigger("badnet", {"position": [0, 0]}, digits.info).position == (0, 0)
