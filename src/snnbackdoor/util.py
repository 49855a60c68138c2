"""Small shared helpers: device choice and the one train/eval mode switch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block, its own mode restored after (also on error):
    a measurement never updates BatchNorm statistics or leaves the model switched."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def resolve_device(name: str = "auto", require_present: bool = True) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda' or 'cuda:N' of a GPU present.

    `require_present=False` (config parsing) accepts `cuda` on a machine without a GPU, such
    as a Slurm login node that submits to GPU nodes; a GPU index that does not exist on a
    machine with GPUs still fails."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"device {name!r} is not a torch device (use auto, cpu or cuda)") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if not require_present:
                return device
            raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available; "
                             "use auto or cpu")
        count = torch.cuda.device_count()
        if device.index is not None and not 0 <= device.index < count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0..cuda:{count - 1}; pick one of them or use auto")
    return device
