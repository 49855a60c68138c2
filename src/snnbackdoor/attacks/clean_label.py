"""Clean-Label (Turner et al. 2019): target-class samples made hard by PGD against a clean
surrogate, then stamped with a four-corner checkerboard; labels are kept (docs/methods.md 2).

`round(poison_ratio * len(train))` samples are drawn by seed from the target class only
(capped at its size), so at 5% on a 10-class set about half of the target class is
poisoned, as in the common DNN benchmark. The surrogate is `setup.clean_model()` (the run's
clean model, same recipe), or one trained here when the setup has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.bundle import DatasetInfo
from ..registry import register
from ..training import autocast, evaluate, model_device
from ..triggers.image import CleanLabelStamp
from .base import AttackOutcome, AttackSetup
from .dirty_label import Poisoning, check_image_data, options_record, train_poisoned, train_recipe
from .poisoning import poison_split


@dataclass(frozen=True)
class CleanLabelOptions:
    """Corner stamps of `size`; PGD L_inf eps 8/255, step 1.5/255, 100 steps, no random
    start, `batch_size` samples at a time."""

    size: int = 3
    eps: float = 8 / 255
    step: float = 1.5 / 255
    steps: int = 100
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"clean_label size must be >= 1, got {self.size}")
        if not (self.eps >= 0 and self.step > 0 and self.steps >= 0 and self.batch_size >= 1):
            raise ValueError("clean_label needs eps >= 0, step > 0, steps >= 0 and "
                             "batch_size >= 1")

    def trigger(self, info: DatasetInfo, seed: int = 0) -> CleanLabelStamp:
        """The test-time trigger: the stamp alone (PGD belongs to poisoning)."""
        return CleanLabelStamp(self.size)


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
               step: float = 1.5 / 255, steps: int = 100, batch_size: int = 256) -> torch.Tensor:
    """Untargeted L_inf PGD (no random start) that raises the model's loss on `(x, y)`.

    Each step adds `step * sign(grad CE)` and projects back onto the eps-ball around `x`
    and onto [0, 1]. Gradients flow through the surrogate spike functions; the model runs
    in eval mode at its current neuron config and its weights are not touched.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            clean = x[start : start + batch_size].to(device).float()
            labels = y[start : start + batch_size].to(device)
            adv = clean.clone()
            for _ in range(steps):
                adv.requires_grad_(True)
                with autocast(device):
                    loss = F.cross_entropy(model(adv).float(), labels)
                (grad,) = torch.autograd.grad(loss, adv)
                adv = adv.detach() + step * grad.sign()
                adv = torch.min(torch.max(adv, clean - eps), clean + eps).clamp(0, 1)
            out.append(adv.detach())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else x.clone()


@dataclass(frozen=True)
class PGDThenStamp:
    """The clean-label poisoning transform: PGD against a clean model, then the stamp."""

    model: nn.Module
    target: int
    stamp: CleanLabelStamp
    eps: float
    step: float
    steps: int
    batch_size: int = 256

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.full((len(x),), int(self.target), dtype=torch.long)
        hard = pgd_attack(self.model, x, labels, self.eps, self.step, self.steps,
                          self.batch_size)
        return self.stamp(hard.to(x.device))


def clean_label_poisoning(setup: AttackSetup, options: CleanLabelOptions,
                          surrogate: nn.Module) -> Poisoning:
    """Target-class samples (labels kept) made hard against `surrogate`, then stamped."""
    transform = PGDThenStamp(surrogate, setup.target, options.trigger(setup.data.info),
                             options.eps, options.step, options.steps, options.batch_size)
    poisoned = poison_split(setup.data.train, transform, setup.target, setup.poison_ratio,
                            setup.seed, relabel=False, from_target=True)
    return Poisoning(poisoned, info={"clean_model_val_accuracy": evaluate(surrogate,
                                                                          setup.data.val)})


def surrogate_model(setup: AttackSetup) -> nn.Module:
    """The setup's clean model, or one trained here with the setup's recipe."""
    if setup.clean_model is not None:
        return setup.clean_model()
    model, _ = train_recipe(setup, setup.data.train, description="clean")
    return model


@register("attack", "clean_label", options=CleanLabelOptions)
def clean_label(setup: AttackSetup, options: CleanLabelOptions | None = None) -> AttackOutcome:
    """Clean-Label: PGD-hardened target-class samples stamped in four corners, labels kept.

    PGD (L_inf 8/255, 100 steps) runs against the clean surrogate, then the checkerboards.
    """
    options = options or CleanLabelOptions()
    check_image_data(setup, "clean_label")
    trigger = options.trigger(setup.data.info, setup.seed)
    return train_poisoned(
        "clean_label", setup, trigger,
        lambda: clean_label_poisoning(setup, options, surrogate_model(setup)),
        options_record(options))
