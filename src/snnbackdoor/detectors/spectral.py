"""Spectral signatures (Tran et al., NeurIPS 2018).

The method proper is a training-set filter: per class, centre the penultimate features,
take the top right singular vector v, score each sample by `((f - mean) . v)^2`, and remove
the `1.5 * epsilon` highest-scoring share of the class before retraining
(`spectral_signature_scores`, `spectral_filter`; retraining is the caller's recipe).

As an input-level detector (`spectral_detect`, for the detection table) it is adapted: the
defender has no poisoned set to decompose, so the mean and top singular direction(s) are
fitted per *predicted* class on the clean subset, and each screened input is scored against
the directions of the class the model predicts for it. The default statistic is Tran et
al.'s (`score='projection'`: the squared projection of the centred feature on the top
direction); `score='residual'` (the squared distance of the centred feature from the clean
top-direction subspace) is an option, never chosen on attack data (a defender has none).
The threshold is fitted on the clean subset's own (cross-fitted) scores. Features are the
input of the last Linear layer (time-mean firing rates for an SNN), read by a forward hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..data.bundle import Split
from ..defenses.discovery import collect_features, penultimate_layer, probe_input
from .base import DetectJob, detector
from .scoring import Scores


def penultimate_features(
    model: nn.Module, x: torch.Tensor, layer: str | None = None, batch_size: int = 256,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features) where features are the input of `layer` (default: the last Linear)."""
    if len(x) == 0:
        raise ValueError("no inputs to compute features of")
    if layer is None:
        probe = x[:2].float() / 255.0 if x.dtype == torch.uint8 else x[:2].float()
        layer = penultimate_layer(model, probe.to(next(model.parameters()).device))
    logits, features = collect_features(model, x, [layer], where="input", batch_size=batch_size,
                                        progress=progress, desc="spectral features")
    return logits, features[layer].double()


def top_directions(features: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `[D]` and the top-k right singular vectors `[k, D]` of the centred features."""
    mean = features.mean(0)
    _, _, vh = torch.linalg.svd(features - mean, full_matrices=False)
    return mean, vh[:k]


def spectral_scores_from_features(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Tran et al.'s outlier score per sample: squared projection of its centred feature on
    its class's top singular vector (classes are decomposed separately)."""
    features = features.double()
    labels = torch.as_tensor(labels).cpu()
    scores = torch.zeros(len(features), dtype=torch.float64)
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        if len(members) < 2:
            continue
        mean, v = top_directions(features[members], 1)
        scores[members] = ((features[members] - mean) @ v[0]) ** 2
    return scores


def spectral_signature_scores(
    model: nn.Module, split: Split, layer: str | None = None, batch_size: int = 256
) -> torch.Tensor:
    """Spectral-signature score of every sample of a (possibly poisoned) training split,
    using its labels to group the samples. Higher = more likely poisoned."""
    _, features = penultimate_features(model, split.x, layer, batch_size)
    return spectral_scores_from_features(features, split.y)


def spectral_removal(scores: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Indices to remove: per class, the `round(1.5 * epsilon * class size)` top scores."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(
            f"epsilon (an upper bound on the poisoned share) must be in [0, 1], got {epsilon}"
        )
    labels = torch.as_tensor(labels).cpu()
    removed = []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        count = min(len(members), int(round(1.5 * epsilon * len(members))))
        if count:
            removed.append(members[scores[members].topk(count).indices])
    return torch.cat(removed).sort().values if removed else torch.empty(0, dtype=torch.long)


def spectral_filter(
    model: nn.Module,
    split: Split,
    epsilon: float = 0.05,
    layer: str | None = None,
    batch_size: int = 256,
) -> tuple[Split, torch.Tensor]:
    """Tran et al.'s filter: the split without its `1.5 * epsilon` top-scoring share per
    class, and the removed indices. Retrain on the returned split with your own recipe.
    `epsilon` is the assumed upper bound on the poisoned share, fixed in advance."""
    scores = spectral_signature_scores(model, split, layer, batch_size)
    removed = spectral_removal(scores, split.y, epsilon)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[removed] = False
    return split.subset(torch.nonzero(keep).flatten()), removed


SCORES = ("residual", "projection")


@dataclass
class SpectralOptions:
    """k = 1 direction per class and the projection score (Tran et al.), FRR 0.05, 5-fold
    threshold fit, features at the last Linear's input."""

    directions: int = 1
    score: str = "projection"
    frr: float = 0.05
    folds: int = 5
    layer: str | None = None
    batch_size: int = 256
    progress: bool = True  # a bar per feature pass (clean subset, clean and triggered inputs)

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"spectral score must be one of {SCORES}, got {self.score!r}")
        if self.directions < 1 or self.folds < 1:
            raise ValueError("spectral directions and folds must be >= 1")


class ClassSpectra:
    """Per predicted class, the clean mean and top singular directions of the features."""

    def __init__(
        self, features: torch.Tensor, predicted: torch.Tensor, k: int = 1,
        score: str = "projection"
    ) -> None:
        self.kind = score
        self.fallback = top_directions(features, k)
        self.classes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for label in predicted.unique():
            members = features[predicted == label]
            if len(members) >= 2:
                self.classes[int(label)] = top_directions(members, k)

    def score(self, features: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """'projection': squared norm of the centred feature's projection on its predicted
        class's top directions (Tran et al.'s statistic). 'residual': squared norm of what
        those directions leave unexplained (distance from the clean principal subspace)."""
        scores = torch.zeros(len(features), dtype=torch.float64)
        for i, (f, c) in enumerate(zip(features, predicted.tolist())):
            mean, v = self.classes.get(c, self.fallback)
            centred = f - mean
            projected = ((v @ centred) ** 2).sum()
            scores[i] = projected if self.kind == "projection" else (centred**2).sum() - projected
        return scores


def cross_fitted_scores(
    features: torch.Tensor,
    predicted: torch.Tensor,
    opts: SpectralOptions,
    seed: int,
) -> torch.Tensor:
    """Clean-subset scores for the threshold, each from spectra fitted on the other folds
    (in-sample scores would be too small and the threshold too low)."""
    n = len(features)
    folds = min(opts.folds, n)
    if folds < 2:
        return ClassSpectra(features, predicted, opts.directions, opts.score).score(
            features, predicted
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    scores = torch.zeros(n, dtype=torch.float64)
    for fold in order.chunk(folds):
        rest = torch.ones(n, dtype=torch.bool)
        rest[fold] = False
        spectra = ClassSpectra(features[rest], predicted[rest], opts.directions, opts.score)
        scores[fold] = spectra.score(features[fold], predicted[fold])
    return scores


@detector("spectral", SpectralOptions)
def spectral_detect(job: DetectJob) -> Scores:
    """Spectral signatures, adapted to screening inputs: distance from clean class spectra.

    See the module docstring for the adaptation and the two statistics.
    Means and directions come from the clean subset only; its threshold scores are each
    computed with spectra fitted on the other folds (`folds`, 5). The screened inputs
    choose nothing.
    """
    model, clean_subset, opts, seed = job.model, job.clean_subset, job.options, job.seed
    clean_inputs, triggered_inputs = job.clean_inputs, job.triggered_inputs
    layer = opts.layer or penultimate_layer(model, probe_input(clean_subset, model))

    def features_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = penultimate_features(model, x, layer, opts.batch_size, opts.progress)
        return features, logits.argmax(1)

    fit_features, fit_pred = features_of(clean_subset.x)
    spectra = ClassSpectra(fit_features, fit_pred, opts.directions, opts.score)
    return Scores(
        cross_fitted_scores(fit_features, fit_pred, opts, seed),
        spectra.score(*features_of(clean_inputs)),
        spectra.score(*features_of(triggered_inputs)),
        opts.frr,
        {"detector": "spectral", "layer": layer, "score": opts.score,
         "budget": {"fit": len(clean_subset), "threshold": len(clean_subset)}},
    )
