"""The metric vocabulary: rates exclude the target class, SSIM/PSNR follow their formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from snnbackdoor.metrics import (
    PSNR_CAP_DB,
    accuracy,
    attack_success_rate,
    degenerate_model,
    event_count_change,
    gaussian_window,
    perturbation_stats,
    psnr,
    robust_accuracy,
    ssim,
)


def _images(n: int = 3, c: int = 2, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- rates


def test_asr_counts_only_non_target_samples() -> None:
    y = torch.tensor([0, 0, 1, 2, 3])
    pred = torch.tensor([0, 0, 0, 0, 1])
    assert attack_success_rate(pred, y, target=0) == pytest.approx(2 / 3)  # not 4/5


def test_asr_raises_without_non_target_samples() -> None:
    with pytest.raises(ValueError, match="non-target"):
        attack_success_rate(torch.tensor([0, 1]), torch.tensor([0, 0]), target=0)


def test_robust_accuracy_is_true_label_share_on_non_target() -> None:
    y = torch.tensor([0, 1, 2, 3, 3])
    pred = torch.tensor([1, 1, 0, 3, 0])
    assert robust_accuracy(pred, y, target=0) == pytest.approx(2 / 4)
    assert accuracy(pred, y) == pytest.approx(2 / 5)


def test_rates_reject_logits() -> None:
    with pytest.raises(ValueError, match="argmax"):
        attack_success_rate(torch.zeros(4, 10), torch.zeros(4), target=0)


# --------------------------------------------------------------------------- SSIM


def _ssim_by_the_formula(x: np.ndarray, y: np.ndarray, data_range: float, size: int = 11) -> float:
    """Reference SSIM: explicit loop over every valid size x size window of every channel."""
    g = gaussian_window(size, 1.5).numpy()
    weights = np.outer(g, g)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for xc, yc in zip(x, y):
        for i in range(xc.shape[0] - size + 1):
            for j in range(xc.shape[1] - size + 1):
                px, py = xc[i : i + size, j : j + size], yc[i : i + size, j : j + size]
                mx, my = (weights * px).sum(), (weights * py).sum()
                vx = (weights * (px - mx) ** 2).sum()
                vy = (weights * (py - my) ** 2).sum()
                cov = (weights * (px - mx) * (py - my)).sum()
                values.append(
                    (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                )
    return float(np.mean(values))


def test_ssim_of_identical_images_is_one() -> None:
    x = _images()
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_ssim_decreases_with_noise() -> None:
    x = _images(n=1, h=24, w=24)
    gen = torch.Generator().manual_seed(1)
    noise = torch.rand(x.shape, generator=gen) * 2 - 1
    scores = [float(ssim(x, (x + level * noise).clamp(0, 1))) for level in (0.01, 0.05, 0.2)]
    assert 1 > scores[0] > scores[1] > scores[2]


def test_ssim_constant_images_closed_form() -> None:
    a, b = 0.6, 0.3
    x, y = torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b)
    c1 = 0.01**2
    assert float(ssim(x, y)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)


def test_ssim_matches_the_windowed_formula() -> None:
    x = _images(n=1, c=2, h=13, w=15)
    y = (x + 0.1 * (_images(n=1, c=2, h=13, w=15, seed=3) - 0.5)).clamp(0, 1)
    expected = _ssim_by_the_formula(x[0].double().numpy(), y[0].double().numpy(), 1.0)
    assert float(ssim(x, y)) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_skimage_if_installed() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    x = _images(n=1, c=1, h=20, w=20)
    y = (x + 0.1 * (_images(n=1, c=1, h=20, w=20, seed=2) - 0.5)).clamp(0, 1)
    expected = metrics.structural_similarity(
        x[0, 0].double().numpy(),
        y[0, 0].double().numpy(),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert float(ssim(x, y)) == pytest.approx(expected, rel=1e-6)


def test_ssim_on_frames_uses_the_clean_max_as_range() -> None:
    a, b = 4.0, 3.0
    clean = torch.full((1, 2, 2, 12, 12), a)
    assert float(ssim(clean, clean)) == pytest.approx(1.0)
    c1 = (0.01 * a) ** 2  # range = clean max = 4, not 1
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert float(ssim(clean, torch.full_like(clean, b))) == pytest.approx(expected, rel=1e-6)


def test_ssim_small_images_shrink_the_window_to_odd_size() -> None:
    x = _images(n=1, c=1, h=8, w=8)
    y = (x + 0.1 * (_images(n=1, c=1, h=8, w=8, seed=4) - 0.5)).clamp(0, 1)
    assert float(ssim(x, x)) == pytest.approx(1.0)
    expected = _ssim_by_the_formula(x[0].double().numpy(), y[0].double().numpy(), 1.0, size=7)
    assert float(ssim(x, y)) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- PSNR and stats


def test_psnr_known_value_and_cap() -> None:
    x = torch.full((2, 1, 8, 8), 0.5)
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0, dtype=torch.float64))
    assert torch.equal(psnr(x, x), torch.full((2,), PSNR_CAP_DB, dtype=torch.float64))


def test_psnr_on_frames_uses_the_clean_max_as_range() -> None:
    clean = torch.full((1, 2, 2, 4, 4), 4.0)
    # mse 0.16, range 4: 10 log10(16 / 0.16) = 20 dB (range 1 would give about 8 dB)
    assert float(psnr(clean, clean + 0.4)) == pytest.approx(20.0, rel=1e-6)


def test_perturbation_stats_values_and_json_safety() -> None:
    x = torch.full((2, 1, 8, 8), 0.5)
    stats = perturbation_stats(x, x + 0.1)
    assert stats["l2"] == pytest.approx(0.1 * math.sqrt(64), rel=1e-6)
    assert stats["linf"] == pytest.approx(0.1, rel=1e-6)
    assert stats["mse"] == pytest.approx(0.01, rel=1e-5)
    assert stats["psnr"] == pytest.approx(20.0, rel=1e-5)
    assert stats["ssim"] < 1
    same = perturbation_stats(x, x)
    assert same["psnr"] == PSNR_CAP_DB and same["ssim"] == pytest.approx(1.0)
    json.dumps(same, allow_nan=False)


def test_perturbation_stats_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        perturbation_stats(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def test_event_count_change_is_mean_relative_change() -> None:
    clean = torch.zeros(2, 2, 2, 4, 4)
    clean[0, 0, 0, 0, :] = 2.5  # 10 events
    clean[1, 0, 1, :, :] = 1.25  # 20 events
    triggered = clean.clone()
    triggered[0, 1, 1, 0, :] = 1.25  # +5 -> +50%
    triggered[1, 0, 1, :2, :] = 0  # -10 -> -50%
    assert event_count_change(clean, triggered) == pytest.approx(0.0)
    assert event_count_change(clean[:1], triggered[:1]) == pytest.approx(0.5)


# --------------------------------------------------------------------------- sanity


def test_constant_predictor_is_degenerate() -> None:
    y = torch.arange(100) % 10
    pred = torch.full((100,), 3)  # what a 1-epoch model does: one class everywhere
    warning = degenerate_model(pred, 10, accuracy(pred, y))
    assert warning is not None and "\n" not in warning
    assert "class 3 takes 100.0%" in warning and "near chance" in warning


def test_good_predictor_is_not_degenerate() -> None:
    y = torch.arange(100) % 10
    pred = y.clone()
    pred[:5] = 0  # 95% correct, class 0 takes 14%
    assert degenerate_model(pred, 10, accuracy(pred, y)) is None
    assert degenerate_model(pred, 10) is None


def test_degenerate_thresholds() -> None:
    pred = torch.tensor([1] * 8 + [0, 2])
    assert "class 1 takes 80.0%" in degenerate_model(pred, 10)  # at the 80% share
    assert degenerate_model(torch.tensor([1] * 7 + [0, 2, 3]), 10) is None  # 70%
    spread = torch.arange(10)
    assert "near chance" in degenerate_model(spread, 10, accuracy=0.15)  # 1.5 x chance
    assert degenerate_model(spread, 10, accuracy=0.16) is None
    assert "near chance" in degenerate_model(torch.tensor([0, 1, 0, 1]), 2, accuracy=0.7)


def test_degenerate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="argmax"):
        degenerate_model(torch.zeros(4, 10), 10)
    with pytest.raises(ValueError, match="at least one"):
        degenerate_model(torch.zeros(0, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="num_classes"):
        degenerate_model(torch.zeros(3, dtype=torch.long), 1)
