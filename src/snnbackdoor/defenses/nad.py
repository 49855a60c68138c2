"""NAD, neural attention distillation (Li et al., ICLR 2021).

Teacher: a copy fine-tuned on the clean subset (10 epochs), then frozen. Student: the
backdoored model trained on the clean subset with `CE + sum_i beta_i * AT_i`, where
`AT_i = MSE(A(student_i), A(teacher_i))` at block outputs and `A(f) = sum_c |f_c|^p`
normalised to unit L2 norm per sample (p = 2). For an SNN, `f` is the block's time-mean
firing rate, read by forward hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..training import evaluate, train
from .base import RepairJob, repair, repair_copy
from .discovery import FeatureRecorder, block_outputs, on_device, probe_input, sgd_config
from .finetune import FineTuneOptions, fine_tune_in_place


@dataclass
class NADOptions:
    """Teacher 10 epochs, student 20 epochs, both SGD lr 0.01 momentum 0.9 wd 5e-4 cosine;
    beta (500, 1000, 1000) for the three block outputs, p = 2."""

    teacher_epochs: int = 10
    epochs: int = 20
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    betas: tuple[float, ...] = (500.0, 1000.0, 1000.0)
    p: float = 2.0
    layers: list[str] | None = field(default=None)  # module names; default: block_outputs()
    progress: bool = True


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
    teacher_opts = FineTuneOptions(opts.teacher_epochs, opts.lr, opts.momentum,
                                   opts.weight_decay, opts.batch_size, opts.progress)
    fine_tune_in_place(teacher, clean_subset, teacher_opts, seed, "nad teacher")
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

        config = sgd_config(opts.epochs, opts.lr, opts.momentum, opts.weight_decay,
                            opts.batch_size, seed, opts.progress)
        result = train(student, on_device(clean_subset, student), config, loss_fn=loss_fn,
                       description="nad student")
    info = {
        "layers": list(layers),
        "betas": list(opts.betas)[len(opts.betas) - len(layers) :],
        "seconds": result.seconds,
    }
    if val_split is not None:
        info["teacher_val_accuracy"] = evaluate(teacher, val_split)
    return info
