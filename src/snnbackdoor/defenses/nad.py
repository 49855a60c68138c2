"""NAD, neural attention distillation (Li et al., ICLR 2021).

Teacher: a copy fine-tuned on the clean subset (10 epochs), then frozen. Student: the
backdoored model trained on the clean subset (20 epochs) with `CE + sum_i beta_i * AT_i`, where
`AT_i = MSE(A(student_i), A(teacher_i))` at block outputs and `A(f) = sum_c |f_c|^p`
normalised to unit L2 norm per sample (p = 2). For an SNN, `f` is the block's time-mean
firing rate, read by forward hooks. Both are trained with NAD's optimiser: SGD, momentum
0.9, weight decay 1e-4, batch 64, lr 0.1 for the first `drop_epoch` (2) epochs and 0.01
after (the reference uses Nesterov momentum, which `training.train` does not offer, and
here the momentum restarts at the drop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.bundle import Split
from ..training import evaluate, train
from .base import RepairJob, repair, repair_copy
from .discovery import FeatureRecorder, block_outputs, on_device, probe_input, sgd_config


@dataclass
class NADOptions:
    """Teacher 10 epochs, student 20 epochs, both SGD momentum 0.9 wd 1e-4 batch 64, lr 0.1
    then `lr_after_drop` 0.01 from epoch `drop_epoch` 2 (NAD's optimiser); beta (500, 1000,
    1000) for the three block outputs, p = 2."""

    teacher_epochs: int = 10
    epochs: int = 20
    lr: float = 0.1
    lr_after_drop: float = 0.01
    drop_epoch: int = 2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64
    betas: tuple[float, ...] = (500.0, 1000.0, 1000.0)
    p: float = 2.0
    layers: list[str] | None = field(default=None)  # module names; default: block_outputs()
    progress: bool = True

    def __post_init__(self) -> None:
        if min(self.teacher_epochs, self.epochs, self.drop_epoch) < 0 or self.batch_size < 1:
            raise ValueError("nad epochs and drop_epoch must be >= 0 and batch_size >= 1")


def nad_train(model: nn.Module, split: Split, opts: NADOptions, epochs: int, seed: int,
              description: str, loss_fn=None) -> float:
    """Train `model` in place with NAD's optimiser (lr, then `lr_after_drop` from epoch
    `drop_epoch`); returns the seconds it took."""
    seconds = 0.0
    phases = ((min(epochs, opts.drop_epoch), opts.lr),
              (epochs - min(epochs, opts.drop_epoch), opts.lr_after_drop))
    for index, (count, lr) in enumerate(phases):
        if count <= 0:
            continue
        config = sgd_config(count, lr, opts.momentum, opts.weight_decay, opts.batch_size,
                            seed + index, opts.progress, schedule="constant")
        extra = {} if loss_fn is None else {"loss_fn": loss_fn}
        seconds += train(model, on_device(split, model), config, description=description,
                         **extra).seconds
    return seconds


def attention_map(features: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """NAD's attention map of `[N, C, ...]` features: `sum_c |f|^p`, unit L2 norm per sample."""
    energy = features.float().abs().pow(p).sum(1).flatten(1)
    return energy / (energy.norm(dim=1, keepdim=True) + eps)


def attention_loss(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    betas: Sequence[float],
    p: float = 2.0,
) -> torch.Tensor:
    """`sum_i beta_i * MSE(A(student_i), A(teacher_i))`; betas align with the last maps."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student maps but {len(teacher)} teacher maps")
    if len(betas) < len(student):
        raise ValueError(f"{len(student)} attention maps need as many betas, got {list(betas)}")
    betas = list(betas)[len(betas) - len(student) :]
    total = torch.zeros((), device=student[0].device)
    for beta, s, t in zip(betas, student, teacher):
        total = total + beta * F.mse_loss(attention_map(s, p), attention_map(t, p).detach())
    return total


@repair("nad", NADOptions)
def nad_repair(job: RepairJob) -> dict:
    """NAD: distil a fine-tuned teacher's attention maps into a copy of the model.

    All settings are the paper's fixed ones; the attended layers are found by type and
    spatial size (`block_outputs`: the last activation of each of the last three
    resolutions; fewer when the net has fewer, with the betas taken from the end). Nothing
    is chosen on the test split or on ASR; `val_split` is only measured for the report.
    """
    student, model, clean_subset = job.copy, job.model, job.clean_subset
    val_split, opts, seed = job.val_split, job.options, job.seed
    layers = opts.layers or block_outputs(student, probe_input(clean_subset, student))
    teacher = repair_copy(model)
    nad_train(teacher, clean_subset, opts, opts.teacher_epochs, seed, "nad teacher")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    with (
        FeatureRecorder(teacher, layers) as teacher_maps,
        FeatureRecorder(student, layers, detach=False) as student_maps,
    ):

        def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
            with torch.no_grad():
                teacher(x)
            logits = net(x)
            distill = attention_loss(
                student_maps.ordered(), teacher_maps.ordered(), opts.betas, opts.p
            )
            return F.cross_entropy(logits, y) + distill

        seconds = nad_train(student, clean_subset, opts, opts.epochs, seed, "nad student",
                            loss_fn)
    info = {
        "budget": {"teacher": len(clean_subset), "student": len(clean_subset)},
        "layers": list(layers),
        "betas": list(opts.betas)[len(opts.betas) - len(layers) :],
        "seconds": seconds,
    }
    if val_split is not None:
        info["teacher_val_accuracy"] = evaluate(teacher, val_split)
    return info
