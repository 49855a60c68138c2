"""Neural Cleanse (Wang et al., S&P 2019) through an SNN's surrogate gradients: per class,
the smallest mask and pattern that send the defender's clean inputs of other classes there.

All classes are reverse-engineered in one batched optimisation (mask m and pattern p per
class, `x' = (1 - m) x + m p`, loss = cross-entropy to the class + lam_k * mean(m)). As in the
paper, each class's cost lam_k adapts: every `patience` steps it grows x1.5 while the mask
flips >= `success` of its batch and shrinks otherwise, and the smallest mask that flipped
its batch is kept. A class whose mask L1 norm is an outlier on the small side by median
absolute deviation (anomaly index > 2, the paper's fixed rule) is the suspected target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import check_range
from ..training import channels_last_layout
from ..util import eval_mode
from .model_base import ModelScore, ScanJob, mad_anomaly, scanner


@dataclass(frozen=True)
class TriggerInversionOptions:
    """Optimisation steps, learning rate, mask-size weight, inputs per class, the rule."""

    steps: int = 150
    lr: float = 0.1
    lam: float = 0.05  # initial weight of mean(mask) against the cross-entropy to the class
    samples: int = 8  # clean inputs of other classes per class and step
    anomaly_threshold: float = 2.0
    adaptive: bool = True  # the paper's per-class cost schedule (False: lam fixed)
    patience: int = 5  # steps between cost updates
    success: float = 0.99  # batch flip rate at which a mask counts as working

    def __post_init__(self) -> None:
        check_range("trigger_inversion.steps", self.steps, 1, 100_000, integer=True)
        check_range("trigger_inversion.samples", self.samples, 1, 100_000, integer=True)
        check_range("trigger_inversion.lr", self.lr, 1e-6, 100.0)
        check_range("trigger_inversion.lam", self.lam, 0.0, 1e6)
        check_range("trigger_inversion.anomaly_threshold", self.anomaly_threshold, 0.0, 1e6)
        check_range("trigger_inversion.patience", self.patience, 1, 100_000, integer=True)
        check_range("trigger_inversion.success", self.success, 0.0, 1.0, low_open=True)


def invert_triggers(model, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                    opts: TriggerInversionOptions, seed: int) -> dict:
    """Per class: the mask L1 norm (pixels) and the share of held inputs it sends there."""
    device = x.device
    generator = torch.Generator().manual_seed(seed)
    side = x.shape[2:] if x.ndim == 4 else x.shape[-2:]
    channels = x.shape[1] if x.ndim == 4 else x.shape[-3]
    mask_raw = torch.full((num_classes, 1, *side), -2.0, device=device, requires_grad=True)
    pattern_raw = torch.randn(num_classes, channels, *side, generator=generator).to(device)
    pattern_raw.requires_grad_(True)
    pools = [torch.nonzero(y != k).flatten() for k in range(num_classes)]
    classes = torch.arange(num_classes, device=device).repeat_interleave(opts.samples)
    optimiser = torch.optim.Adam([mask_raw, pattern_raw], lr=opts.lr, betas=(0.5, 0.9))
    lam = torch.full((num_classes,), opts.lam, device=device)
    best = torch.full((num_classes,), float("inf"), device=device)
    best_mask, best_pattern = mask_raw.detach().clone(), pattern_raw.detach().clone()
    flips = torch.zeros(num_classes, device=device)
    with eval_mode(model), channels_last_layout(model), torch.enable_grad():
        for step in range(1, opts.steps + 1):
            index = torch.cat([p[torch.randint(len(p), (opts.samples,), generator=generator)]
                               for p in pools])
            logits = model(_stamp(x[index], mask_raw, pattern_raw, classes))
            mask = torch.sigmoid(mask_raw)
            size = mask.flatten(1).mean(1)
            loss = F.cross_entropy(logits, classes) + (lam * size).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if opts.adaptive:
                hit = (logits.argmax(1) == classes).float().view(num_classes, -1).mean(1)
                flips += hit
                norms_now = mask.detach().flatten(1).sum(1)
                better = (hit >= opts.success) & (norms_now < best)
                best = torch.where(better, norms_now, best)
                best_mask[better] = mask_raw.detach()[better]
                best_pattern[better] = pattern_raw.detach()[better]
                if step % opts.patience == 0:
                    working = flips / opts.patience >= opts.success
                    lam = torch.where(working, lam * 1.5, lam / 1.5 ** 1.5)
                    flips.zero_()
        if opts.adaptive:  # classes that never flipped a batch keep their last mask
            keep = torch.isfinite(best)[:, None, None, None]
            mask_raw = torch.where(keep, best_mask, mask_raw.detach())
            pattern_raw = torch.where(keep, best_pattern, pattern_raw.detach())
        with torch.no_grad():
            index = torch.cat([p[: opts.samples * 4] for p in pools])
            held = torch.arange(num_classes, device=device).repeat_interleave(
                torch.tensor([len(p[: opts.samples * 4]) for p in pools], device=device))
            pred = model(_stamp(x[index], mask_raw, pattern_raw, held)).argmax(1)
    model.zero_grad(set_to_none=True)
    norms = torch.sigmoid(mask_raw).detach().flatten(1).sum(1).cpu()
    success = [float((pred[held == k] == k).float().mean()) for k in range(num_classes)]
    return {"norms": norms, "success": success}


def _stamp(x: torch.Tensor, mask_raw, pattern_raw, classes: torch.Tensor) -> torch.Tensor:
    mask = torch.sigmoid(mask_raw)[classes]
    pattern = torch.sigmoid(pattern_raw)[classes]
    if x.ndim == 5:  # event frames [N, T, P, H, W]: one mask and pattern for every frame
        mask, pattern = mask[:, None], pattern[:, None]
    return (1 - mask) * x + mask * pattern


@scanner("trigger_inversion", TriggerInversionOptions)
def trigger_inversion(job: ScanJob) -> ModelScore:
    """Neural Cleanse: minimal mask per class by surrogate gradients, MAD anomaly index."""
    opts: TriggerInversionOptions = job.options
    x = job.clean_inputs()
    y = job.clean_subset.y.to(x.device)
    out = invert_triggers(job.model, x, y, job.num_classes, opts, job.seed)
    index, k = mad_anomaly(out["norms"], low=True)
    return ModelScore(score=index, target=k, threshold=opts.anomaly_threshold,
                      info={"mask_l1": [round(float(v), 3) for v in out["norms"]],
                            "success": [round(v, 3) for v in out["success"]]})
