"""Scores to verdicts, in one place: a threshold fitted on the defender's clean data only.

A detector returns `Scores` (higher = more suspicious), never verdicts. `detection_report`
turns them into the detection table's figures: the threshold is the (1 - frr) quantile of
the scores of the defender's clean subset, so about `frr` of clean inputs are rejected; the
screened inputs never choose it. AUROC is scikit-learn's `roc_auc_score`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _flat(scores) -> torch.Tensor:
    return torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()


@dataclass
class Scores:
    """Per-input scores of one detector (higher = more suspicious).

    `clean_subset`: scores of the defender's clean data that set the threshold (held out
    from whatever the detector was fitted on, or cross-fitted); `clean` and `triggered`:
    the screened clean and triggered inputs; `frr`: the false-rejection rate to threshold
    at; `info`: what the detector measured or chose (JSON-able).
    """

    clean_subset: torch.Tensor
    clean: torch.Tensor
    triggered: torch.Tensor
    frr: float = 0.05
    info: dict = field(default_factory=dict)


def auroc(negative: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of positive (triggered) vs negative (clean) scores: the
    chance a positive scores above a negative, ties counted half."""
    negative, positive = _flat(negative), _flat(positive)
    if len(negative) == 0 or len(positive) == 0:
        raise ValueError("AUROC needs at least one clean and one triggered score")
    labels = [0] * len(negative) + [1] * len(positive)
    from sklearn.metrics import roc_auc_score  # here: importing it costs the CLI ~0.7 s

    return float(roc_auc_score(labels, torch.cat([negative, positive]).numpy()))


def frr_threshold(clean_scores: torch.Tensor, frr: float) -> float:
    """The score above which an input is flagged: the (1 - frr) quantile of clean scores."""
    if not 0.0 <= frr < 1.0:
        raise ValueError(f"false rejection rate must be in [0, 1), got {frr}")
    scores = _flat(clean_scores)
    if len(scores) == 0:
        raise ValueError("fitting a threshold needs at least one clean score")
    return float(torch.quantile(scores, 1.0 - frr))


def detection_report(scores: Scores) -> dict:
    """`detection_rate` (share of triggered inputs flagged) at the threshold fitted on the
    clean subset's scores, the clean inputs' measured `false_rejection_rate`, and the
    threshold-free `auroc` of clean vs triggered inputs; then the detector's `info`."""
    threshold = frr_threshold(scores.clean_subset, scores.frr)
    clean, triggered = _flat(scores.clean), _flat(scores.triggered)
    return {
        **scores.info,
        "detection_rate": float((triggered > threshold).double().mean()),
        "auroc": auroc(clean, triggered),
        "false_rejection_rate": float((clean > threshold).double().mean()),
        "frr_target": float(scores.frr),
        "threshold": threshold,
        "clean_score_mean": float(clean.mean()),
        "triggered_score_mean": float(triggered.mean()),
    }
