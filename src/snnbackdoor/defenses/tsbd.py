"""TSBD, two-stage backdoor defense (Lin et al., NeurIPS 2024): weight change and activeness.

Stage 1: clean unlearning by gradient *ascent* on the clean subset (SGD lr 1e-4, momentum
0.9) until clean accuracy is <= 10%. Each conv output channel ("neuron") scores the L1 norm
of its weight change; the top n fraction of channels (ranked over all conv layers except the
residual blocks' projection shortcuts, as the reference code does) are selected and, within
them, the top m = 0.7 fraction of weights by change are set to zero in the *original* model.
Stage 2: activeness-aware fine-tuning on the clean subset: per batch `g1 = grad L(theta)`,
`theta' = theta + r * g1 / ||g1||` (per tensor), `g2 = grad L(theta')` (BN running statistics
frozen at the perturbed weights), step along `(1 - a) g1 + a g2`; r = 0.05, a = 0.7, lr 0.01,
20 epochs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.bundle import Split
from ..training import evaluate, make_optimizer, seed_everything
from .base import RepairJob, holdout_split, repair, repair_copy
from .discovery import conv_layers, exact_accuracy, on_device, probe_input, sgd_config

N_GRID = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 0.9)  # the reference's sweep


@dataclass
class TSBDOptions:
    """The paper's settings; `n` is chosen on clean validation data unless given."""

    unlearn_lr: float = 1e-4
    unlearn_momentum: float = 0.9
    accuracy_bound: float = 0.10
    max_unlearn_steps: int = 5000
    batch_size: int = 64
    n: float | None = None  # fraction of conv channels to re-initialise; None: chosen
    n_grid: tuple[float, ...] = N_GRID
    max_val_drop: float = 0.10  # n keeps zeroed-model hold-out accuracy >= original - this
    holdout: float = 0.3  # of the clean subset, held out to choose n (unlearning: the rest)
    m: float = 0.7
    r: float = 0.05
    a: float = 0.7
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0  # the reference code uses none in stage 2
    epochs: int = 20
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.m <= 1.0:
            raise ValueError(f"tsbd m must be in (0, 1], got {self.m}")
        if self.n is not None and not 0.0 <= self.n <= 1.0:
            raise ValueError(f"tsbd n must be in [0, 1], got {self.n}")
        if not 0.0 <= self.a <= 1.0 or self.r < 0:
            raise ValueError("tsbd a must be in [0, 1] and r >= 0")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"tsbd holdout must be in (0, 1), got {self.holdout}")


# --------------------------------------------------------------------------- stage 1


@dataclass
class Unlearning:
    """How clean unlearning went: accuracy after each step (step 0 = before)."""

    accuracies: list[float]
    reached_bound: bool

    @property
    def steps(self) -> int:
        return len(self.accuracies) - 1


def clean_unlearning(
    model: nn.Module, clean_subset: Split, opts: TSBDOptions, seed: int
) -> Unlearning:
    """Gradient ascent on the clean loss, in place, until clean-subset accuracy <= bound.

    Accuracy is measured (eval mode, the whole clean subset) after every step, so the
    ascent stops at the first step that reaches the bound.
    """
    data = on_device(clean_subset, model)
    generator = seed_everything(seed)
    opt = torch.optim.SGD(model.parameters(), lr=opts.unlearn_lr, momentum=opts.unlearn_momentum)
    accuracies = [exact_accuracy(model, data)]
    bar = tqdm(
        total=opts.max_unlearn_steps,
        desc="tsbd unlearning",
        unit="step",
        disable=not opts.progress,
        leave=False,
    )
    reached = accuracies[0] <= opts.accuracy_bound
    while not reached and len(accuracies) <= opts.max_unlearn_steps:
        for x, y in data.batches(opts.batch_size, shuffle=True, generator=generator):
            model.train()
            loss = -F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            accuracies.append(exact_accuracy(model, data))
            bar.update(1)
            bar.set_postfix(acc=round(accuracies[-1], 3))
            reached = accuracies[-1] <= opts.accuracy_bound
            if reached or len(accuracies) > opts.max_unlearn_steps:
                break
    bar.close()
    model.eval()
    return Unlearning(accuracies, reached)


def weight_changes(
    original: nn.Module, unlearned: nn.Module, conv_names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """|W_unlearned - W_original| per conv layer, as `[out_channels, weights per channel]`."""
    a, b = dict(original.named_modules()), dict(unlearned.named_modules())
    return {
        name: (b[name].weight.detach() - a[name].weight.detach()).abs().flatten(1).float().cpu()
        for name in conv_names
    }


def neuron_scores(changes: dict[str, torch.Tensor]) -> list[tuple[float, str, int]]:
    """(score, layer, channel) for every conv channel, highest weight change first."""
    rows = [
        (float(score), name, channel)
        for name, change in changes.items()
        for channel, score in enumerate(change.sum(1))
    ]
    return sorted(rows, key=lambda row: -row[0])


@torch.no_grad()
def zero_reinit(
    model: nn.Module,
    changes: dict[str, torch.Tensor],
    ranking: list[tuple[float, str, int]],
    n: float,
    m: float,
) -> int:
    """Zero, in place, the top `m` fraction (by change) of the weights of the top `n`
    fraction of channels; returns how many weights were zeroed."""
    top = ranking[: int(len(ranking) * n)]
    if not top:
        return 0
    pooled = torch.cat([changes[name][channel] for _, name, channel in top])
    count = int(len(pooled) * m)
    if count == 0:
        return 0
    cutoff = pooled.topk(count).values.min()
    modules = dict(model.named_modules())
    zeroed = 0
    for _, name, channel in top:
        chosen = changes[name][channel] >= cutoff
        weight = modules[name].weight
        flat = weight[channel].view(-1)
        flat[chosen.to(flat.device)] = 0.0
        zeroed += int(chosen.sum())
    return zeroed


# --------------------------------------------------------------------------- stage 2


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module):
    """Batch norms still normalise with batch statistics but leave their running
    statistics alone (momentum 0), as SAM-style second passes do."""
    saved = [(m, m.momentum) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for module, _ in saved:
        module.momentum = 0.0
    try:
        yield
    finally:
        for module, momentum in saved:
            module.momentum = momentum


def activeness_aware_fine_tune(
    model: nn.Module, clean_subset: Split, opts: TSBDOptions, seed: int
) -> None:
    """Stage 2, in place: step along `(1 - a) g1 + a g2`, g2 taken at `theta + r g1/||g1||`."""
    data = on_device(clean_subset, model)
    generator = seed_everything(seed)
    config = sgd_config(
        opts.epochs,
        opts.lr,
        opts.momentum,
        opts.weight_decay,
        opts.batch_size,
        seed,
        opts.progress,
        schedule="constant",
    )
    steps = opts.epochs * math.ceil(len(data) / opts.batch_size)
    opt, sched = make_optimizer(model, config, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for _ in tqdm(
        range(opts.epochs),
        desc="tsbd fine-tune",
        unit="epoch",
        disable=not opts.progress,
        leave=False,
    ):
        for x, y in data.batches(opts.batch_size, shuffle=True, generator=generator):
            g1 = torch.autograd.grad(F.cross_entropy(model(x), y), params, allow_unused=True)
            shifts = []
            with torch.no_grad():
                for p, g in zip(params, g1):
                    norm = g.norm() if g is not None else None
                    if norm is None or not norm > 0:
                        shifts.append(None)
                        continue
                    shift = opts.r * g / norm
                    p.add_(shift)
                    shifts.append(shift)
            with frozen_bn_statistics(model):  # no running-stat update at theta'
                g2 = torch.autograd.grad(F.cross_entropy(model(x), y), params,
                                         allow_unused=True)
            with torch.no_grad():
                for p, shift in zip(params, shifts):
                    if shift is not None:
                        p.sub_(shift)
            for p, a_grad, b_grad in zip(params, g1, g2):
                if a_grad is None and b_grad is None:
                    p.grad = None
                    continue
                a_grad = torch.zeros_like(p) if a_grad is None else a_grad
                b_grad = torch.zeros_like(p) if b_grad is None else b_grad
                p.grad = (1 - opts.a) * a_grad + opts.a * b_grad
            opt.step()
            sched.step()
    model.eval()


# --------------------------------------------------------------------------- the defense


def choose_n(
    model: nn.Module,
    changes: dict[str, torch.Tensor],
    ranking: list[tuple[float, str, int]],
    opts: TSBDOptions,
    holdout: Split,
) -> tuple[float, list[dict]]:
    """The largest n of the grid whose zeroed model (before stage 2) keeps clean hold-out
    accuracy >= the original's minus `max_val_drop`; the smallest grid value if none does."""
    base = evaluate(model, holdout)
    sweep, chosen = [], None
    for n in sorted(opts.n_grid):
        candidate = repair_copy(model)
        zeroed = zero_reinit(candidate, changes, ranking, n, opts.m)
        accuracy = evaluate(candidate, holdout)
        sweep.append({"n": n, "zeroed_weights": zeroed, "holdout_accuracy": accuracy})
        if accuracy >= base - opts.max_val_drop:
            chosen = n
    return (chosen if chosen is not None else min(opts.n_grid)), sweep


@repair("tsbd", TSBDOptions)
def tsbd_repair(job: RepairJob) -> dict:
    """TSBD: zero the weights clean unlearning moves most, then activeness-aware fine-tuning.

    Works on a copy of the model, with the defender's clean subset only.
    n (the fraction of conv channels re-initialised) is chosen inside the subset: `holdout`
    (0.3) of it is held out, unlearning runs on the rest, and n is the largest value of the
    reference's grid whose zeroed model, before stage 2, keeps hold-out accuracy within
    `max_val_drop` (0.10) of the original's. With `n` given, the whole subset unlearns and
    nothing is chosen. Stage 2 fine-tunes on the whole subset. `val_split` is only measured;
    the test split and ASR are never looked at. `info` holds the unlearning curve, the n
    sweep, the choice and `budget` (samples per use).
    """
    repaired, model, clean_subset = job.copy, job.model, job.clean_subset
    opts, seed = job.options, job.seed
    convs = [name for name, _ in conv_layers(model, probe_input(clean_subset, model),
                                             skip_shortcuts=True)]
    if not convs:
        raise ValueError("TSBD needs Conv2d layers (its neurons are conv output channels)")
    fit, held = (clean_subset, None) if opts.n is not None else holdout_split(
        clean_subset, opts.holdout, seed)
    unlearned = repair_copy(model)
    unlearning = clean_unlearning(unlearned, fit, opts, seed)
    changes = weight_changes(model, unlearned, convs)
    ranking = neuron_scores(changes)
    del unlearned
    sweep: list[dict] = []
    if held is None:
        n = opts.n
    else:
        n, sweep = choose_n(model, changes, ranking, opts, held)
    zeroed = zero_reinit(repaired, changes, ranking, n, opts.m)
    activeness_aware_fine_tune(repaired, clean_subset, opts, seed)
    budget = {"unlearn": len(fit), "fine_tune": len(clean_subset)}
    if held is not None:
        budget["choose_n"] = len(held)
    return {
        "budget": budget,
        "conv_layers": len(convs),
        "unlearn_steps": unlearning.steps,
        "unlearn_accuracies": unlearning.accuracies,
        "unlearn_reached_bound": unlearning.reached_bound,
        "n": n,
        "n_sweep": sweep,
        "reinit_channels": int(len(ranking) * n),
        "zeroed_weights": zeroed,
    }
