"""The reference peer for the benchmarks: a plain SpikingJelly training loop.

Written the way SNN papers' training scripts are: a torch `Dataset` whose `__getitem__`
turns one stored image into a float tensor and applies the random crop / flip to that one
sample (what torchvision's `RandomCrop(padding)` + `RandomHorizontalFlip` + `ToTensor` do;
torchvision itself cannot be imported here), a `DataLoader` with `num_workers=0` (what a
script on a 2-core box uses: worker processes only add IPC there), the SpikingJelly torch
backend, NCHW tensors, and `functional.reset_net` after every batch. It trains the very same
model object our trainer trains (same body, same init from the same seed).
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch.utils.data import DataLoader, Dataset, TensorDataset

from snnbackdoor.backend import set_neuron_backend
from snnbackdoor.training import autocast


class PerSampleImages(Dataset):
    """Images stored as numpy (uint8 or float), transformed one sample at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray, padding: int = 0, hflip: bool = False):
        self.x, self.y, self.padding, self.hflip = x, y, padding, hflip

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.x[i])
        image = image.float().div(255.0) if image.dtype == torch.uint8 else image.float()
        if self.padding:  # RandomCrop(size, padding): pad, then cut at a random corner
            p = self.padding
            h, w = image.shape[-2:]
            image = F.pad(image, (p, p, p, p))
            top = int(torch.randint(0, 2 * p + 1, (1,)))
            left = int(torch.randint(0, 2 * p + 1, (1,)))
            image = image[:, top:top + h, left:left + w]
        if self.hflip and torch.rand(1) < 0.5:  # RandomHorizontalFlip
            image = image.flip(-1)
        return image, int(self.y[i])


def per_sample_loader(x: np.ndarray, y: np.ndarray, batch_size: int, padding: int,
                      hflip: bool, seed: int, device: torch.device) -> DataLoader:
    """DataLoader over `PerSampleImages` (shuffled, num_workers=0, pinned on CUDA)."""
    return DataLoader(PerSampleImages(x, y, padding, hflip), batch_size=batch_size,
                      shuffle=True, num_workers=0, pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(seed))


def tensor_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool,
                  seed: int = 0) -> DataLoader:
    """DataLoader over a TensorDataset: the simplest peer (no transforms)."""
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      num_workers=0, generator=torch.Generator().manual_seed(seed))


def plain_model(model: nn.Module) -> nn.Module:
    """The peer runs SpikingJelly's own neuron path (the torch reference on CPU) and every
    layer at every time step (as `body(x.repeat(T))` does: no time-invariant prefix)."""
    set_neuron_backend(model, "spikingjelly")
    model.static_prefix = 0
    return model


@contextlib.contextmanager
def spikingjelly_cuda_implementation(name: str = "torch"):
    """On CUDA, run SpikingJelly's neurons with one implementation (`torch`: the peer's
    torch backend) inside, and SpikingJelly's automatic choice again outside.

    SpikingJelly 2.0 reads `SJ_*_CUDA_IMPLEMENTATION` once at import and caches its choice
    per device, so a benchmark that runs both loops in one process has to switch the cached
    selection: this touches SpikingJelly internals and belongs in benchmarks only.
    """
    selections = []
    for package in ("lif", "if_", "plif"):
        try:
            selection = importlib.import_module(f"spikingjelly._ops.{package}")._selection
        except (ImportError, AttributeError):
            continue
        selections.append((selection, selection._requested))
        selection._requested = name
        selection._selections.clear()
    try:
        yield
    finally:
        for selection, requested in selections:
            selection._requested = requested
            selection._selections.clear()


def plain_optimizer(model: nn.Module, optimizer: str, lr: float, steps: int):
    params = model.parameters()
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=0.9))
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))


def plain_epoch(model: nn.Module, loader: DataLoader, opt, sched, device: torch.device) -> float:
    """One epoch of the peer loop; returns the mean training loss."""
    model.train()
    total = 0.0
    torch_backend = (spikingjelly_cuda_implementation() if device.type == "cuda"
                     else contextlib.nullcontext())  # on CPU SpikingJelly has only torch
    with torch_backend:
        for images, labels in loader:
            total += _plain_step(model, images, labels, opt, sched, device)
    return total / len(loader.dataset)


def _plain_step(model, images, labels, opt, sched, device) -> float:
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    with autocast(device):
        loss = F.cross_entropy(model(images), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    functional.reset_net(model)
    return loss.item() * len(labels)


def plain_evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Accuracy of the peer loop's model on a loader."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in loader:
            with autocast(device):
                logits = model(images.to(device))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            functional.reset_net(model)
    return correct / len(loader.dataset)
