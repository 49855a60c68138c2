"""The fixed metric vocabulary (docs/methods.md 1.5): success rates and trigger visibility.

Everything here is a pure function of predictions or tensors, returns plain floats (or
per-sample tensors) and is safe to write to JSON: PSNR is capped at ``PSNR_CAP_DB`` instead
of being infinite for identical inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP_DB = 100.0
"""PSNR reported for identical inputs (and the ceiling of every PSNR), so JSON stays finite."""

_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_CHUNK = 64


# --------------------------------------------------------------------------- rates


def _labels(values: Tensor, name: str) -> Tensor:
    labels = torch.as_tensor(values).detach().cpu()
    if labels.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D tensor of class indices, got shape "
            f"{tuple(labels.shape)} (take argmax of logits first)"
        )
    return labels.long()


def _non_target(pred: Tensor, y: Tensor, target: int) -> tuple[Tensor, Tensor]:
    pred, y = _labels(pred, "pred"), _labels(y, "y")
    if pred.shape != y.shape:
        raise ValueError(f"pred and y must have the same length, got {len(pred)} and {len(y)}")
    keep = y != int(target)
    if not bool(keep.any()):
        raise ValueError(
            f"no non-target sample (every label is the target {target}): the attack "
            "success rate is undefined"
        )
    return pred[keep], y[keep]


def accuracy(pred: Tensor, y: Tensor) -> float:
    """Share of samples whose prediction equals the label (clean accuracy, ``ca``)."""
    pred, y = _labels(pred, "pred"), _labels(y, "y")
    if pred.shape != y.shape or len(y) == 0:
        raise ValueError(
            f"pred and y must be non-empty and equally long, got {len(pred)}, {len(y)}"
        )
    return float((pred == y).double().mean())


def attack_success_rate(pred: Tensor, y: Tensor, target: int) -> float:
    """ASR: share of triggered **non-target** samples predicted as ``target``.

    ``pred`` are predictions on triggered inputs, ``y`` their true labels; target-class
    samples are excluded because predicting the target there is no attack.
    """
    pred, _ = _non_target(pred, y, target)
    return float((pred == int(target)).double().mean())


def robust_accuracy(pred: Tensor, y: Tensor, target: int) -> float:
    """RA: share of triggered non-target samples still given their true label."""
    pred, y = _non_target(pred, y, target)
    return float((pred == y).double().mean())


# --------------------------------------------------------------------------- visibility


def _check_pair(clean: Tensor, triggered: Tensor) -> None:
    if not isinstance(clean, Tensor) or not isinstance(triggered, Tensor):
        raise ValueError("clean and triggered must be tensors")
    if clean.shape != triggered.shape or clean.ndim not in (4, 5):
        raise ValueError(
            "expected clean and triggered of one shape, images [N, C, H, W] or frames "
            f"[N, T, P, H, W]; got {tuple(clean.shape)} and {tuple(triggered.shape)}"
        )


def sample_data_range(clean: Tensor) -> Tensor:
    """Per-sample data range [N]: 1.0 for images, the clean sample's max count for frames.

    An all-zero frame sample gets range 1.0 so SSIM and PSNR stay defined.
    """
    if clean.ndim == 4:
        return torch.ones(clean.shape[0], dtype=torch.float64)
    peak = clean.detach().flatten(1).amax(dim=1).double().cpu()
    return torch.where(peak > 0, peak, torch.ones_like(peak))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1-D Gaussian window (the SSIM paper's 11 taps, sigma 1.5)."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def _ssim_batch(x: Tensor, y: Tensor, ranges: Tensor, window: Tensor) -> Tensor:
    """Mean SSIM per sample of [n, C, H, W] float64 batches over the valid window positions."""
    channels = x.shape[1]
    size = window.numel()
    col = window.view(1, 1, size, 1).repeat(5 * channels, 1, 1, 1)
    row = window.view(1, 1, 1, size).repeat(5 * channels, 1, 1, 1)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    moments = F.conv2d(F.conv2d(stack, col, groups=5 * channels), row, groups=5 * channels)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(channels, dim=1)
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    c1 = ((_SSIM_K1 * ranges) ** 2).view(-1, 1, 1, 1)
    c2 = ((_SSIM_K2 * ranges) ** 2).view(-1, 1, 1, 1)
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)


def ssim(
    clean: Tensor,
    triggered: Tensor,
    data_range: Tensor | float | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
) -> Tensor:
    """Per-sample SSIM [N] (Wang et al. 2004, Gaussian window, per channel, valid region).

    Frames [N, T, P, H, W] are treated as T*P channels. The range defaults to
    :func:`sample_data_range`. A window larger than the image shrinks to the largest odd size that
    fits (8x8 digits use 7 taps). Matches ``skimage.metrics.structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
    """
    _check_pair(clean, triggered)
    n, height, width = clean.shape[0], clean.shape[-2], clean.shape[-1]
    x = clean.detach().reshape(n, -1, height, width).double().cpu()
    y = triggered.detach().reshape(n, -1, height, width).double().cpu()
    if data_range is None:
        ranges = sample_data_range(clean)
    else:
        ranges = torch.as_tensor(data_range, dtype=torch.float64).expand(n).clone()
    size = min(window_size, height, width)
    size -= 1 - size % 2
    window = gaussian_window(size, sigma)
    parts = [
        _ssim_batch(x[i : i + _CHUNK], y[i : i + _CHUNK], ranges[i : i + _CHUNK], window)
        for i in range(0, n, _CHUNK)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def psnr(clean: Tensor, triggered: Tensor, cap: float = PSNR_CAP_DB) -> Tensor:
    """Per-sample PSNR [N] in dB, ``10 log10(range^2 / mse)``, capped at ``cap``.

    Identical samples (mse 0, PSNR infinite) report ``cap``, so JSON stays valid.
    """
    _check_pair(clean, triggered)
    mse = (triggered.detach().double() - clean.detach().double()).flatten(1).pow(2).mean(1).cpu()
    ranges = sample_data_range(clean)
    value = 10 * torch.log10(ranges**2 / mse)  # inf where mse == 0
    return value.clamp(max=cap)


def perturbation_stats(clean: Tensor, triggered: Tensor) -> dict[str, float]:
    """Trigger size and visibility: mean per-sample ``l2``, ``linf``, ``mse``, ``ssim``, ``psnr``.

    Images use data range 1.0; frames the clean sample's max count (see :func:`sample_data_range`).
    PSNR of identical samples is ``PSNR_CAP_DB``.
    """
    _check_pair(clean, triggered)
    if clean.shape[0] == 0:
        raise ValueError("perturbation_stats needs at least one sample")
    diff = (triggered.detach().double() - clean.detach().double()).flatten(1).cpu()
    stats = {
        "l2": diff.norm(dim=1).mean(),
        "linf": diff.abs().amax(dim=1).mean(),
        "mse": diff.pow(2).mean(dim=1).mean(),
        "ssim": ssim(clean, triggered).mean(),
        "psnr": psnr(clean, triggered).mean(),
    }
    return {name: float(value) for name, value in stats.items()}


def event_count_change(clean_frames: Tensor, triggered_frames: Tensor) -> float:
    """Mean relative change of the total event count per sample, ``(after - before) / before``.

    Signed (erasing triggers give negative values); a sample with no events divides by 1.
    """
    _check_pair(clean_frames, triggered_frames)
    before = clean_frames.detach().double().flatten(1).sum(1).cpu()
    after = triggered_frames.detach().double().flatten(1).sum(1).cpu()
    change = (after - before) / before.clamp(min=1.0)
    result = float(change.mean())
    if math.isnan(result):
        raise ValueError("event_count_change needs at least one sample")
    return result


# --------------------------------------------------------------------------- sanity

DEGENERATE_SHARE = 0.8
"""Share of clean predictions one class may take before the model counts as degenerate."""

NEAR_CHANCE = 1.5
"""Accuracy at or below ``NEAR_CHANCE / num_classes`` counts as near chance."""


def degenerate_model(
    pred: Tensor, num_classes: int, accuracy: float | None = None
) -> str | None:
    """One-line warning when a model's **clean** predictions are degenerate, else None.

    Degenerate: one class takes at least ``DEGENERATE_SHARE`` of the predictions, or the
    accuracy (a fraction) is at most ``NEAR_CHANCE / num_classes``. Such a model (e.g. after one
    epoch) predicts the target everywhere, so its ASR says nothing about a backdoor.
    """
    pred = _labels(pred, "pred")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if len(pred) == 0:
        raise ValueError("degenerate_model needs at least one prediction")
    counts = torch.bincount(pred, minlength=num_classes)
    top = int(counts.argmax())
    share = float(counts[top]) / len(pred)
    problems = []
    if share >= DEGENERATE_SHARE:
        problems.append(f"class {top} takes {100 * share:.1f}% of {len(pred)} predictions")
    chance = 1.0 / num_classes
    if accuracy is not None and accuracy <= NEAR_CHANCE * chance:
        problems.append(
            f"accuracy {100 * accuracy:.1f}% is near chance ({100 * chance:.1f}%)"
        )
    if not problems:
        return None
    return (
        "degenerate model: " + "; ".join(problems)
        + " (train longer or check the data); its attack success rates are meaningless"
    )


def degenerate_warning(name: str, pred: Tensor, y: Tensor, num_classes: int) -> str | None:
    """`degenerate_model` on a model's clean predictions against the labels, prefixed with
    the model's name (what a report and the console show); None for a healthy model."""
    warning = degenerate_model(pred, num_classes, accuracy(pred, y))
    return None if warning is None else f"{name}: {warning}"
