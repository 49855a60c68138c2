"""ANP, adversarial neuron pruning (Wu & Wang, NeurIPS 2021).

Every BN channel gets a mask m (init 1) on its weight and multiplicative noise on weight and
bias: `gamma * (m + d)`, `beta * (1 + d_b)`, `|d| <= eps`. Per batch: one sign-gradient
ascent step on the noise from a uniform random start, then one SGD step on the masks for
`alpha * CE(clean) + (1 - alpha) * CE(noisy)`, masks clipped to [0, 1]. Channels whose mask
ends below a threshold are pruned from the original model by zeroing their BN weight (as
the reference code does; the bias is kept). With `stop_tolerance` set, the optimisation
stops once the masks' mean move over the last `stop_window` iterations is below it
(converged: single masks keep jittering under the fresh noise, their distribution does not);
the paper runs a fixed 2000. `info` reports the mask statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..data.bundle import Split
from ..training import seed_everything
from .base import RepairJob, repair, repair_copy
from .discovery import on_device


@dataclass
class ANPOptions:
    """eps 0.4, alpha 0.2 (the ANP default; BadSNN used 0.5), mask threshold 0.2,
    2000 iterations (batches), mask SGD lr 0.2 momentum 0.9, noise lr eps / noise_steps."""

    eps: float = 0.4
    alpha: float = 0.2
    iterations: int = 2000
    batch_size: int = 128
    mask_lr: float = 0.2
    noise_steps: int = 1
    threshold: float = 0.2
    prune_count: int | None = None  # prune this many lowest masks instead of thresholding
    stop_tolerance: float | None = None  # stop when the mean mask move over stop_window < this
    stop_window: int = 100
    progress: bool = True

    def __post_init__(self) -> None:
        if self.stop_tolerance is not None and not (self.stop_tolerance > 0
                                                    and self.stop_window >= 1):
            raise ValueError("anp stop_tolerance must be > 0 and stop_window >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"anp alpha must be in [0, 1], got {self.alpha}")
        if self.eps < 0 or self.iterations < 0 or self.noise_steps < 1:
            raise ValueError("anp eps and iterations must be >= 0 and noise_steps >= 1")


class _MaskedNoisyWeight(nn.Module):
    """Parametrisation of a BN weight: `w * mask`, or `w * (mask + noise)` when perturbed."""

    def __init__(self, channels: int, device) -> None:
        super().__init__()
        self.mask = nn.Parameter(torch.ones(channels, device=device))
        self.noise = nn.Parameter(torch.zeros(channels, device=device))
        self.perturbed = False

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * (self.mask + self.noise if self.perturbed else self.mask)


class _NoisyBias(nn.Module):
    """Parametrisation of a BN bias: `b * (1 + noise)` when perturbed, else `b`."""

    def __init__(self, channels: int, device) -> None:
        super().__init__()
        self.noise = nn.Parameter(torch.zeros(channels, device=device))
        self.perturbed = False

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return bias * (1.0 + self.noise) if self.perturbed else bias


class NeuronMasks:
    """The ANP masks and noises attached (by parametrisation) to every affine BatchNorm2d."""

    def __init__(self, model: nn.Module) -> None:
        self.weights: dict[str, _MaskedNoisyWeight] = {}
        self.biases: dict[str, _NoisyBias] = {}
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d) and module.weight is not None:
                device = module.weight.device
                self.weights[name] = _MaskedNoisyWeight(module.num_features, device)
                self.biases[name] = _NoisyBias(module.num_features, device)
                parametrize.register_parametrization(module, "weight", self.weights[name])
                parametrize.register_parametrization(module, "bias", self.biases[name])
        if not self.weights:
            raise ValueError("ANP needs BatchNorm2d layers (its neurons are BN channels)")

    def mask_parameters(self) -> list[nn.Parameter]:
        return [w.mask for w in self.weights.values()]

    def noise_parameters(self) -> list[nn.Parameter]:
        return [w.noise for w in self.weights.values()] + [b.noise for b in self.biases.values()]

    def perturb(self, on: bool) -> None:
        for module in (*self.weights.values(), *self.biases.values()):
            module.perturbed = on

    @torch.no_grad()
    def random_noise(self, eps: float, generator: torch.Generator) -> None:
        for p in self.noise_parameters():
            noise = torch.rand(p.shape, generator=generator) * 2 - 1
            p.copy_(noise.to(p.device) * eps)

    @torch.no_grad()
    def clip(self, eps: float) -> None:
        for p in self.mask_parameters():
            p.clamp_(0.0, 1.0)
        for p in self.noise_parameters():
            p.clamp_(-eps, eps)

    def values(self) -> dict[str, torch.Tensor]:
        return {name: w.mask.detach().cpu().clone() for name, w in self.weights.items()}


def adversarial_noise_step(
    model: nn.Module,
    masks: NeuronMasks,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    noise_opt: torch.optim.Optimizer,
) -> None:
    """One sign-gradient *ascent* step of the clean loss on the neuron noise."""
    masks.perturb(True)
    loss = -F.cross_entropy(model(x), y)
    noise_opt.zero_grad(set_to_none=True)
    loss.backward()
    for p in masks.noise_parameters():
        if p.grad is not None:
            p.grad.sign_()
    noise_opt.step()
    masks.clip(eps)


def optimise_masks(
    model: nn.Module, clean_subset: Split, opts: ANPOptions, seed: int,
    trace: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Run ANP's mask optimisation on a working copy; return the final mask per BN name.
    `trace`, when given, receives `iterations` (run), `converged` (stopped early) and
    `history`: every `stop_window` iterations, the masks' mean, how many are below the
    threshold and the largest and mean move since the last record."""
    work = repair_copy(model)
    for p in work.parameters():
        p.requires_grad_(False)
    masks = NeuronMasks(work)
    generator = seed_everything(seed)
    noise_generator = torch.Generator().manual_seed(seed + 1)
    mask_opt = torch.optim.SGD(masks.mask_parameters(), lr=opts.mask_lr, momentum=0.9)
    noise_opt = torch.optim.SGD(masks.noise_parameters(), lr=opts.eps / opts.noise_steps)
    data = on_device(clean_subset, work)
    work.train()  # as the reference: BN uses batch statistics while masks are optimised
    per_epoch = math.ceil(len(data) / opts.batch_size)
    bar = tqdm(
        total=opts.iterations, desc="anp masks", unit="it", disable=not opts.progress, leave=False
    )
    done, converged, history = 0, False, []
    anchor = torch.cat([m.detach().flatten() for m in masks.mask_parameters()]).clone()
    while done < opts.iterations and not converged:
        for x, y in data.batches(opts.batch_size, shuffle=True, generator=generator):
            if done >= opts.iterations:
                break
            if opts.eps > 0:
                masks.random_noise(opts.eps, noise_generator)
                for _ in range(opts.noise_steps):
                    adversarial_noise_step(work, masks, x, y, opts.eps, noise_opt)
                masks.perturb(True)
                loss_robust = F.cross_entropy(work(x), y)
            else:
                loss_robust = torch.zeros((), device=x.device)
            masks.perturb(False)
            loss_natural = F.cross_entropy(work(x), y)
            loss = opts.alpha * loss_natural + (1 - opts.alpha) * loss_robust
            mask_opt.zero_grad(set_to_none=True)
            loss.backward()
            mask_opt.step()
            masks.clip(opts.eps)
            done += 1
            bar.update(1)
            if done % opts.stop_window == 0:
                now = torch.cat([m.detach().flatten() for m in masks.mask_parameters()])
                move = (now - anchor).abs()
                history.append({"iteration": done, "mean": round(float(now.mean()), 4),
                                "below_threshold": int((now < opts.threshold).sum()),
                                "max_move": round(float(move.max()), 4),
                                "mean_move": round(float(move.mean()), 5)})
                anchor = now.clone()
                if opts.stop_tolerance is not None and float(move.mean()) < opts.stop_tolerance:
                    converged = True
                    break
        if per_epoch == 0:
            break
    bar.close()
    if trace is not None:
        trace.update(iterations=done, converged=converged, history=history)
    return masks.values()


@torch.no_grad()
def prune_by_masks(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    threshold: float = 0.2,
    prune_count: int | None = None,
) -> dict[str, list[int]]:
    """Zero the BN weight of channels whose mask is below `threshold` (or of the
    `prune_count` lowest masks overall); returns {BN name: pruned channels}."""
    modules = dict(model.named_modules())
    if prune_count is not None:
        flat = [(float(v), name, i) for name, m in masks.items() for i, v in enumerate(m)]
        chosen = sorted(flat)[: max(0, int(prune_count))]
        selected: dict[str, list[int]] = {}
        for _, name, i in chosen:
            selected.setdefault(name, []).append(i)
    else:
        selected = {
            name: torch.nonzero(m < threshold).flatten().tolist() for name, m in masks.items()
        }
    pruned = {}
    for name, index in selected.items():
        if index:
            bn = modules[name]
            bn.weight[torch.tensor(sorted(index), device=bn.weight.device)] = 0.0
            pruned[name] = sorted(index)
    return pruned


@repair("anp", ANPOptions)
def anp_prune(job: RepairJob) -> dict:
    """ANP: prune the BN channels most sensitive to adversarial neuron perturbation.

    Works on a copy of the model.
    The masks are optimised on the clean subset only; the pruning rule is the fixed mask
    threshold (0.2) or a fixed count, never tuned on the test split or on ASR. `val_split`
    is only measured for the report. `info` holds the masks and pruned channels.
    """
    repaired, model, clean_subset = job.copy, job.model, job.clean_subset
    opts, seed = job.options, job.seed
    run: dict = {}
    masks = optimise_masks(model, clean_subset, opts, seed, run)
    pruned = prune_by_masks(repaired, masks, opts.threshold, opts.prune_count)
    flat = torch.cat([m.flatten() for m in masks.values()])
    return {
        "budget": {"masks": len(clean_subset)},
        "iterations": run["iterations"],
        "converged": run["converged"],
        "mask_mean": float(flat.mean()),
        "mask_min": float(flat.min()),
        "masks_below_half": int((flat < 0.5).sum()),
        "channels": len(flat),
        "masks": {name: m.tolist() for name, m in masks.items()},
        "pruned": pruned,
        "pruned_count": sum(len(v) for v in pruned.values()),
    }
