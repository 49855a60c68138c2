"""STRIP (Gao et al., ACSAC 2019): input-level detection by superimposition.

Each input is superimposed with N clean images drawn from the defender's clean subset and
the entropy of the model's predictions is averaged over the N blends. A trigger that
dominates the prediction survives the blending, so triggered inputs have *low* entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..training import logits_of
from .base import DetectJob, detector
from .scoring import Scores

BLENDS = ("add", "average")


@dataclass
class STRIPOptions:
    """N = 20 overlays; blend 'add' is STRIP's `cv2.addWeighted(x, 1, overlay, 1, 0)`
    (a saturating sum, clipped to [0, 1] for images), 'average' is `(x + overlay) / 2`."""

    overlays: int = 20
    blend: str = "add"
    frr: float = 0.05
    batch_size: int = 64  # inputs per batch (each expands to `overlays` blends)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.blend not in BLENDS:
            raise ValueError(f"strip blend must be one of {BLENDS}, got {self.blend!r}")
        if self.overlays < 1:
            raise ValueError(f"strip overlays must be >= 1, got {self.overlays}")


def superimpose(x: torch.Tensor, overlay: torch.Tensor, blend: str = "add") -> torch.Tensor:
    """Blend inputs with overlays of the same shape (images are kept in [0, 1])."""
    if blend == "average":
        return (x + overlay) / 2
    out = x + overlay
    return out.clamp(0.0, 1.0) if out.ndim == 4 else out


@torch.no_grad()
def strip_entropy(
    model: nn.Module,
    inputs: torch.Tensor,
    pool: torch.Tensor,
    overlays: int = 20,
    blend: str = "add",
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Mean prediction entropy (nats) of each input over `overlays` blends with random
    samples of `pool` (float, pixel space). Low entropy = suspicious."""
    if len(pool) == 0:
        raise ValueError("STRIP needs clean images to superimpose")
    pool = pool.float() / 255.0 if pool.dtype == torch.uint8 else pool.float()
    out = []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc="strip", disable=not progress, leave=False):
        x = inputs[start : start + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        picks = torch.randint(0, len(pool), (len(x), overlays), generator=generator)
        blended = superimpose(
            x.unsqueeze(1).expand(-1, overlays, *x.shape[1:]).to(pool.device),
            pool[picks.to(pool.device)],
            blend,
        ).flatten(0, 1)
        probs = logits_of(model, blended, batch_size=len(blended)).softmax(1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
        out.append(entropy.view(len(x), overlays).mean(1).cpu())
    return torch.cat(out) if out else torch.empty(0)


@detector("strip", STRIPOptions)
def strip_detect(job: DetectJob) -> Scores:
    """STRIP: low prediction entropy under blends with clean images flags an input.

    Scores are the negated mean entropy (higher = more suspicious) of the clean subset, the
    clean inputs and the triggered inputs.
    The overlays come from the clean subset, whose own scores set the threshold at `frr`
    (0.05) in `detection_report`; the screened inputs choose nothing.
    """
    model, clean_subset, opts, seed = job.model, job.clean_subset, job.options, job.seed
    clean_inputs, triggered_inputs = job.clean_inputs, job.triggered_inputs
    generator = torch.Generator().manual_seed(seed)
    pool = clean_subset.floats()

    def score(x: torch.Tensor) -> torch.Tensor:
        return -strip_entropy(
            model, x, pool, opts.overlays, opts.blend, generator, opts.batch_size, opts.progress
        )

    fit = score(pool)  # the generator's draws: clean subset, then clean, then triggered
    clean = score(clean_inputs)
    return Scores(fit, clean, score(triggered_inputs), opts.frr,
                  {"detector": "strip", "overlays": opts.overlays,
                   "budget": {"overlays": len(pool), "threshold": len(pool)}})
