"""Clean-Label (Turner et al. 2019): target-class samples made hard by PGD against a
surrogate, then stamped with a four-corner checkerboard; labels are kept (docs/methods.md 2).

`round(poison_ratio * len(train))` samples are drawn by seed from the target class only
(capped at its size), so at 5% on a 10-class set about half of the target class is
poisoned, as in the common DNN benchmark. As in Turner et al., the surrogate is
adversarially trained by default (`surrogate: adversarial`: PGD training, Madry et al., with
the setup's recipe); `surrogate: clean` uses `setup.clean_model()` (the run's clean model)
instead. The surrogate's accuracy on the perturbed target samples (before the stamp) is
recorded as `surrogate_accuracy_on_poison`: near 1 means PGD left the samples easy.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.bundle import DatasetInfo, Split
from ..registry import register
from ..training import autocast, evaluate, model_device
from ..triggers.image import CleanLabelStamp
from .base import AttackOutcome, AttackSetup, trained_stage
from .dirty_label import Poisoning, check_image_data, options_record, train_poisoned, train_recipe
from .poisoning import choose_poison_index, poison_split

SURROGATES = ("adversarial", "clean")


@dataclass(frozen=True)
class CleanLabelOptions:
    """Corner stamps of `size`; PGD L_inf eps 8/255, step 1.5/255, 100 steps, no random
    start, `batch_size` samples at a time, against an adversarially trained surrogate
    (PGD training at `adv_eps` 8/255, `adv_steps` 7 steps of `adv_step` 2/255, random
    start; Turner et al.). `surrogate: clean` crafts on the run's clean model instead."""

    size: int = 3
    eps: float = 8 / 255
    step: float = 1.5 / 255
    steps: int = 100
    batch_size: int = 256
    surrogate: str = "adversarial"  # adversarial | clean
    adv_eps: float = 8 / 255
    adv_step: float = 2 / 255
    adv_steps: int = 7

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"clean_label size must be >= 1, got {self.size}")
        if not (self.eps >= 0 and self.step > 0 and self.steps >= 0 and self.batch_size >= 1):
            raise ValueError("clean_label needs eps >= 0, step > 0, steps >= 0 and "
                             "batch_size >= 1")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"clean_label surrogate must be one of {list(SURROGATES)}, "
                             f"got {self.surrogate!r}")
        if not (self.adv_eps >= 0 and self.adv_step > 0 and self.adv_steps >= 1):
            raise ValueError("clean_label needs adv_eps >= 0, adv_step > 0, adv_steps >= 1")

    def trigger(self, info: DatasetInfo, seed: int = 0) -> CleanLabelStamp:
        """The test-time trigger: the stamp alone (PGD belongs to poisoning)."""
        return CleanLabelStamp(self.size)


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
               step: float = 1.5 / 255, steps: int = 100, batch_size: int = 256,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L_inf PGD that raises the model's loss on `(x, y)`; a uniform random
    start in the eps-ball when `generator` is given, none otherwise.

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
            if generator is not None:
                start_noise = torch.rand(clean.shape, generator=generator) * 2 - 1
                adv = (clean + eps * start_noise.to(device)).clamp(0, 1)
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


def clean_label_poisoning(setup: AttackSetup, options: CleanLabelOptions,
                          surrogate: nn.Module) -> Poisoning:
    """Target-class samples (labels kept) made hard against `surrogate`, then stamped; the
    surrogate's accuracy on the perturbed samples (before the stamp) is recorded."""
    index = choose_poison_index(setup.data.train.y, setup.target, setup.poison_ratio,
                                setup.seed, from_target=True)
    x = setup.data.train.floats(index)
    labels = torch.full((len(index),), int(setup.target), dtype=torch.long)
    hard = pgd_attack(surrogate, x, labels, options.eps, options.step, options.steps,
                      options.batch_size).to(x.device)
    surrogate_accuracy = evaluate(surrogate, Split(hard, labels.to(x.device))) if len(x) else None
    stamped = options.trigger(setup.data.info)(hard)
    poisoned = poison_split(setup.data.train, Replace(index, stamped), setup.target,
                            setup.poison_ratio, setup.seed, relabel=False, from_target=True,
                            index=index)
    return Poisoning(poisoned, info={
        "surrogate": options.surrogate,
        "surrogate_val_accuracy": evaluate(surrogate, setup.data.val),
        "surrogate_accuracy_on_poison": surrogate_accuracy,
        "surrogate_accuracy_on_clean_poison": (evaluate(surrogate, Split(x, labels.to(x.device)))
                                               if len(x) else None),
    })


@dataclass(frozen=True)
class Replace:
    """The poisoning 'trigger' that hands back precomputed samples (in `index` order)."""

    index: torch.Tensor
    samples: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) != len(self.samples):
            raise ValueError(f"{len(x)} samples to poison but {len(self.samples)} crafted")
        return self.samples.to(x.device, x.dtype)


def adversarial_loss(options: CleanLabelOptions, seed: int):
    """PGD training's loss (Madry et al.): CE on PGD examples from a random start."""
    generator = torch.Generator().manual_seed(int(seed) + 7919)

    def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
        adv = pgd_attack(net, x, y, options.adv_eps, options.adv_step, options.adv_steps,
                         len(x) or 1, generator)
        return F.cross_entropy(net(adv), y)

    return loss_fn


def surrogate_model(setup: AttackSetup, options: CleanLabelOptions | None = None) -> nn.Module:
    """The crafting surrogate: adversarially trained (PGD training with the setup's recipe,
    a resumable stage `surrogate` of the workdir), or the setup's clean model (trained here
    when the setup has none) with `surrogate: clean`."""
    options = options or CleanLabelOptions(surrogate="clean")
    if options.surrogate == "adversarial":
        def build() -> tuple[nn.Module, dict]:
            model, result = train_recipe(setup, setup.data.train,
                                         adversarial_loss(options, setup.seed),
                                         description="adversarial surrogate")
            return model, {"train_seconds": round(result.seconds, 3),
                           "options": {k: v for k, v in dataclasses.asdict(options).items()
                                       if k.startswith("adv_")}}

        return trained_stage(setup, "surrogate", build)[0]
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
    surrogate = functools.cache(lambda: surrogate_model(setup, options))
    if setup.workdir is not None and not _finished(setup.workdir, "model"):
        surrogate()  # its own resumable stage, before (not inside) the model's stage
    return train_poisoned(
        "clean_label", setup, trigger,
        lambda: clean_label_poisoning(setup, options, surrogate()),
        options_record(options))


def _finished(workdir, stage: str) -> bool:
    from ..rundir import RunDir

    return RunDir(workdir).done(stage)
