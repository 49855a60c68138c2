"""Scores to verdicts for the input-level detectors: a threshold fitted on clean data only.

Convention: a higher score means more suspicious. The threshold is the (1 - frr) quantile of
the scores of the defender's clean subset, so about `frr` of clean inputs are rejected; the
inputs being screened never choose it.
"""

from __future__ import annotations

import torch


def auroc(negative: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve: P(positive score > negative score), ties counted half."""
    negative = torch.as_tensor(negative, dtype=torch.float64).flatten().cpu()
    positive = torch.as_tensor(positive, dtype=torch.float64).flatten().cpu()
    if len(negative) == 0 or len(positive) == 0:
        raise ValueError("AUROC needs at least one clean and one triggered score")
    scores = torch.cat([negative, positive])
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    _, group = scores.unique(return_inverse=True)  # average ranks over ties
    sums = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, ranks)
    counts = torch.bincount(group).double()
    ranks = (sums / counts)[group]
    rank_sum = ranks[len(negative) :].sum()
    n_pos, n_neg = len(positive), len(negative)
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def frr_threshold(clean_scores: torch.Tensor, frr: float) -> float:
    """The score above which an input is flagged: the (1 - frr) quantile of clean scores."""
    if not 0.0 <= frr < 1.0:
        raise ValueError(f"false rejection rate must be in [0, 1), got {frr}")
    scores = torch.as_tensor(clean_scores, dtype=torch.float64).flatten().cpu()
    if len(scores) == 0:
        raise ValueError("fitting a threshold needs at least one clean score")
    return float(torch.quantile(scores, 1.0 - frr))


def detection_report(
    fit_scores: torch.Tensor,
    clean_scores: torch.Tensor,
    triggered_scores: torch.Tensor,
    frr: float = 0.05,
) -> dict:
    """`detection_rate` (share of triggered inputs flagged) at the threshold fitted on
    `fit_scores` (the clean subset), the clean inputs' measured `false_rejection_rate`,
    and the threshold-free `auroc` of clean vs triggered inputs."""
    threshold = frr_threshold(fit_scores, frr)
    clean = torch.as_tensor(clean_scores, dtype=torch.float64).flatten().cpu()
    triggered = torch.as_tensor(triggered_scores, dtype=torch.float64).flatten().cpu()
    return {
        "detection_rate": float((triggered > threshold).double().mean()),
        "auroc": auroc(clean, triggered),
        "false_rejection_rate": float((clean > threshold).double().mean()),
        "frr_target": float(frr),
        "threshold": threshold,
        "clean_score_mean": float(clean.mean()),
        "triggered_score_mean": float(triggered.mean()),
    }
