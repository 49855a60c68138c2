"""Batched multi-class DeepFool (Moosavi-Dezfooli et al., CVPR 2016) in pixel space.

On an SNN the gradients are the surrogate gradients of BPTT: the model is used exactly as
trained. Samples that already flipped stop moving; the rest keep iterating.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..training import channels_last_layout


def _class_gradients(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] and d logit_c / dx for each of the `classes` columns: [N, k, ...]."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    picked = logits.gather(1, classes)
    grads = []
    for j in range(classes.shape[1]):
        (grad,) = torch.autograd.grad(picked[:, j].sum(), x, retain_graph=j + 1 < classes.shape[1])
        grads.append(grad)
    return logits.detach(), torch.stack(grads, 1)


def deepfool(
    model: nn.Module,
    x: torch.Tensor,
    num_candidates: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimal perturbations that flip the model's prediction: returns (delta, flipped mask).

    Standard multi-class DeepFool over the `num_candidates` top classes of the clean
    prediction, overshoot applied to the accumulated step, images kept in [0, 1].
    `progress` shows one bar of iterations over all batches (each batch may stop early).
    """
    if x.ndim < 2:
        raise ValueError(f"deepfool expects a batch of inputs, got shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    deltas, flips = [], []
    batches = range(0, len(x), batch_size)
    bar = tqdm(total=len(batches) * max_iter, desc="DeepFool", unit="it", leave=False,
               disable=not progress)
    try:
        with channels_last_layout(model):
            for start in batches:
                delta, flipped = _deepfool_batch(
                    model, x[start : start + batch_size], num_candidates, overshoot, max_iter,
                    bar,
                )
                deltas.append(delta)
                flips.append(flipped)
    finally:
        bar.close()
        model.train(was_training)
    return torch.cat(deltas), torch.cat(flips)


def _deepfool_batch(model, x, num_candidates, overshoot, max_iter, bar):
    x = x.detach()
    with torch.no_grad():
        logits = model(x)
    k = min(num_candidates, logits.shape[1])
    classes = logits.argsort(1, descending=True)[:, :k]  # column 0: the original label
    original = classes[:, 0]
    r_total = torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    view = (-1,) + (1,) * (x.ndim - 1)
    done = 0
    for _ in range(max_iter):
        index = torch.nonzero(active).flatten()
        if len(index) == 0:
            break
        bar.update()
        done += 1
        bar.set_postfix_str(f"{len(index)} of {len(x)} not flipped yet")
        x_adv = (x[index] + (1 + overshoot) * r_total[index]).clamp(0, 1)
        logits_now, grads = _class_gradients(model, x_adv, classes[index])
        still = logits_now.argmax(1) == original[index]
        active[index[~still]] = False
        index, grads = index[still], grads[still]
        if len(index) == 0:
            break
        picked = logits_now[still].gather(1, classes[index])
        f_diff = picked[:, 1:] - picked[:, :1]  # [n, k-1]
        w_diff = grads[:, 1:] - grads[:, :1]  # [n, k-1, ...]
        w_norm = w_diff.flatten(2).norm(dim=2) + 1e-8
        ratio = f_diff.abs() / w_norm
        best = ratio.argmin(1)
        rows = torch.arange(len(index), device=x.device)
        w_best = w_diff[rows, best]
        step = (ratio[rows, best] + 1e-4) / w_norm[rows, best]
        r_total[index] += step.view(view) * w_best
    bar.update(max_iter - done)  # the iterations this batch did not need
    delta = ((x + (1 + overshoot) * r_total).clamp(0, 1) - x).detach()
    with torch.no_grad():
        flipped = model(x + delta).argmax(1) != original
    return delta, flipped
