"""TMPBD (Li et al., arXiv 2510.06629), written from the paper: data-free target-label
detection from the maximum margin of the temporal membrane potential of the last layer.

Per class k, an input is optimised (through the surrogate gradients) to maximise the margin
of k's time-averaged output potential over the best other class. A backdoor target is an
easy class to push an input into, so its maximum margin is an outlier: a gamma distribution
is fitted to the other classes' margins and the model is flagged when k's upper-tail
p-value is below `alpha` (the paper's fixed rule), divided by the number of classes since
the smallest of K p-values is tested (Bonferroni; `bonferroni: false` is the paper's
rule). Our readout is a non-firing integrator, so its time-mean (the logits) is the last
layer's temporal membrane potential.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import check_range
from ..training import channels_last_layout
from ..util import eval_mode
from .model_base import ModelScore, ScanJob, scanner


@dataclass(frozen=True)
class TMPBDOptions:
    """Optimisation of one input per class and restart, and the p-value level."""

    steps: int = 40
    lr: float = 0.1
    restarts: int = 2  # random starts per class; the best margin counts
    alpha: float = 0.05  # flag when the smallest p-value is below this
    # The smallest of K p-values is tested, so alpha is divided by K (Bonferroni); False is
    # the paper's rule as written (about one clean digits model in four flagged, measured).
    bonferroni: bool = True

    def __post_init__(self) -> None:
        check_range("tmpbd.steps", self.steps, 1, 100_000)
        check_range("tmpbd.restarts", self.restarts, 1, 1000)
        check_range("tmpbd.lr", self.lr, 1e-6, 100.0)
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"tmpbd.alpha must be in (0, 1), got {self.alpha}")


def max_margins(model, num_classes: int, shape: tuple, opts: TMPBDOptions,
                seed: int) -> torch.Tensor:
    """The largest output-potential margin reachable per class from pixel inputs in [0, 1]."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(num_classes).repeat_interleave(opts.restarts).to(device)
    raw = torch.randn(len(classes), *shape, generator=generator).to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([raw], lr=opts.lr)
    with eval_mode(model), channels_last_layout(model), torch.enable_grad():
        for _ in range(opts.steps):
            margin = _margin(model(torch.sigmoid(raw)), classes)
            optimiser.zero_grad()
            (-margin.sum()).backward()
            optimiser.step()
        with torch.no_grad():
            margin = _margin(model(torch.sigmoid(raw)), classes)
    model.zero_grad(set_to_none=True)
    return margin.view(num_classes, opts.restarts).max(1).values.cpu()


def _margin(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    own = logits.gather(1, classes[:, None]).squeeze(1)
    others = logits.scatter(1, classes[:, None], float("-inf")).max(1).values
    return own - others


def gamma_p_values(margins: torch.Tensor) -> list[float]:
    """Per class, the upper-tail p-value of its margin under a gamma distribution fitted
    (location 0) to the other classes' margins (shifted to be positive)."""
    from scipy import stats  # here: importing scipy.stats costs every CLI start ~0.8 s

    values = margins.double().numpy()
    out = []
    for k in range(len(values)):
        others = [v for j, v in enumerate(values) if j != k]
        low = min(others)
        shift = -low + 1e-3 if low <= 0 else 0.0
        shape, _, scale = stats.gamma.fit([v + shift for v in others], floc=0.0)
        out.append(float(stats.gamma.sf(values[k] + shift, shape, loc=0.0, scale=scale)))
    return out


@scanner("tmpbd", TMPBDOptions, needs_data=False)
def tmpbd(job: ScanJob) -> ModelScore:
    """TMPBD: max temporal-membrane-potential margin per class, gamma outlier test (data-free)."""
    opts: TMPBDOptions = job.options
    margins = max_margins(job.model, job.num_classes, job.input_shape, opts, job.seed)
    p = gamma_p_values(margins)
    k = min(range(len(p)), key=p.__getitem__)
    score = -math.log10(max(p[k], 1e-300))
    alpha = opts.alpha / job.num_classes if opts.bonferroni else opts.alpha
    return ModelScore(score=score, target=k, threshold=-math.log10(alpha),
                      info={"margins": [round(float(m), 4) for m in margins],
                            "p_values": [float(v) for v in p], "p_min": p[k]})
