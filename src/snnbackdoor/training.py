"""The one training loop (surrogate-gradient BPTT) and evaluation.

Data stays on the device as whole tensors and batches are index gathers (`Split`), so the
loop does no per-sample Python work. Attacks plug in through `loss_fn` (e.g. BadSNN's
dual-spike loss) and `augment`, never by copying this loop.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data.bundle import Split
from .models.classifier import stored_channels_last
from .neurons import NeuronConfig, use_config
from .util import eval_mode

MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 24

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Optimiser and schedule of a training run."""

    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"  # adam | sgd
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | constant
    seed: int | None = None  # None: the experiment's seed (0 when called directly)
    progress: bool = True
    augment: bool = False  # the dataset's augmentation (crop, flip where allowed); see train()
    channels_last: bool = True  # NHWC convolutions: faster on CPU (oneDNN) and CUDA (cuDNN)
    compile: bool = False  # torch.compile the model for training (slow to start, fast after)
    tensorboard: str | None = None  # a log folder for per-epoch TensorBoard scalars; None: off

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"train.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(
                f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}"
            )
        checks = (
            ("epochs", self.epochs, 0, MAX_EPOCHS, int),
            ("batch_size", self.batch_size, 1, MAX_BATCH_SIZE, int),
            ("lr", self.lr, 0.0, 100.0, float),
            ("weight_decay", self.weight_decay, 0.0, 1.0, float),
            ("momentum", self.momentum, 0.0, 1.0, float),
        )
        for key, value, low, high, kind in checks:
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or (kind is int and value != int(value)):
                raise ValueError(f"train.{key} must be a finite {kind.__name__}, got {value!r}")
            if not low <= value <= high or (key == "lr" and value == 0):
                raise ValueError(f"train.{key} must be in [{low}, {high}]"
                                 + (" and > 0" if key == "lr" else "") + f", got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(
                self.seed, numbers.Integral) or not 0 <= self.seed < 2**32):
            raise ValueError(f"train.seed must be an integer in [0, 2**32), got {self.seed!r}")


@dataclass
class TrainResult:
    """Per-epoch history and wall time of a training run."""

    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int | None) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for batch order (None: seed 0, as a
    TrainConfig whose seed no experiment has set)."""
    seed = 0 if seed is None else int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU (bf16 convs are slower there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def make_optimizer(model: nn.Module, config: TrainConfig, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    # One fused kernel per step instead of one per parameter group on CUDA.
    fused = {"fused": True} if params and all(p.is_cuda for p in params) else {}
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    else:
        opt = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
            **fused,
        )
    if config.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


def set_channels_last(model: nn.Module, enabled: bool = True) -> None:
    """Store every 4-D parameter and buffer (conv weights) channels-last, or back to the
    default layout. Other tensors, e.g. a user's Conv3d weights, are left alone."""
    layout = torch.channels_last if enabled else torch.contiguous_format
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.dim() == 4 and not tensor.is_contiguous(memory_format=layout):
                tensor.data = tensor.data.contiguous(memory_format=layout)


@contextlib.contextmanager
def channels_last_layout(model: nn.Module):
    """Inside: the model's 4-D weights are stored channels-last (NHWC convolutions, about
    a quarter faster on CPU for our SNNs); the layout it had is restored on exit."""
    switch = not stored_channels_last(model)
    if switch:
        set_channels_last(model)
    try:
        yield model
    finally:
        if switch:
            set_channels_last(model, False)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch of images in channels-last layout when asked (other shapes are left alone)."""
    if channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def compiled(model: nn.Module, enabled: bool = True):
    """Inside: calls of `model` run through torch.compile (the module keeps its names, so
    loss functions that look up layers by name still work). Restored on exit."""
    if not enabled:
        yield model
        return
    model.compile()
    try:
        yield model
    finally:
        model._compiled_call_impl = None


@contextlib.contextmanager
def eager(model: nn.Module):
    """Run `model` uncompiled inside (validation must not trigger a second compilation)."""
    saved = getattr(model, "_compiled_call_impl", None)
    model._compiled_call_impl = None
    try:
        yield model
    finally:
        model._compiled_call_impl = saved


def summary_writer(log_dir: str):
    """A TensorBoard `SummaryWriter` on `log_dir`, imported only when asked for (optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise RuntimeError(
            f"train.tensorboard={log_dir!r} needs the tensorboard package: pip install tensorboard"
        ) from error
    return SummaryWriter(log_dir=str(log_dir))


def train(
    model: nn.Module,
    train_split: Split,
    config: TrainConfig,
    val_split: Split | None = None,
    loss_fn: LossFn = cross_entropy_loss,
    augment: Transform | None = None,
    description: str = "train",
) -> TrainResult:
    """Train `model` in place with BPTT; per-epoch loss, train and val accuracy in history.

    Batches are index gathers on the split's device; `augment` (e.g. the dataset's
    `dataset_augmentation(info)`, which callers pass when `config.augment` is true) runs on
    the whole batch on that device. With `config.channels_last` the model trains in NHWC
    and is returned in the layout it came in; with `config.compile` it trains through
    torch.compile (full batches only, so the graph keeps one shape). With
    `config.tensorboard` each epoch's row and learning rate are also logged there as
    `<description>/<key>` scalars.
    """
    device = model_device(model)
    generator = seed_everything(config.seed)
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    drop_last = config.compile and len(train_split) >= config.batch_size
    if drop_last:
        steps_per_epoch = len(train_split) // config.batch_size
    layout = channels_last_layout(model) if config.channels_last else contextlib.nullcontext()
    opt, sched = make_optimizer(model, config, config.epochs * steps_per_epoch)
    result = TrainResult()
    start = time.perf_counter()
    # one subfolder per training (its description), so the trainings of a run stay apart
    writer = (summary_writer(os.path.join(config.tensorboard, description))
              if config.tensorboard else None)
    logging = writer if writer is not None else contextlib.nullcontext()
    epochs = tqdm(
        range(config.epochs), desc=description, unit="epoch", disable=not config.progress,
        leave=False,
    )
    with logging, layout, compiled(model, config.compile):
        for epoch in epochs:
            model.train()
            total_loss = torch.zeros((), device=device)
            seen = 0
            for index, x, y in train_split.indexed_batches(
                config.batch_size, True, generator, drop_last
            ):
                if augment is not None:
                    x = augment(x)
                x = to_memory_format(x, config.channels_last)
                with autocast(device):
                    loss = loss_fn(model, x, y, index)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.detach() * len(y)
                seen += len(y)
            row = {"epoch": epoch + 1, "loss": float(total_loss) / max(seen, 1)}
            if val_split is not None:
                with eager(model):
                    row["val_accuracy"] = evaluate(model, val_split, config.batch_size * 4)
            row["seconds"] = time.perf_counter() - start
            result.history.append(row)
            epochs.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(f"{description}/{key}", value, epoch + 1)
                writer.add_scalar(f"{description}/lr", sched.get_last_lr()[0], epoch + 1)
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    neuron_config: NeuronConfig | None = None,
    transform: Transform | None = None,
) -> torch.Tensor:
    """Predicted labels for pixel-space inputs, optionally triggered and at a neuron config."""
    return logits_of(model, x, batch_size, neuron_config, transform).argmax(1)


@torch.no_grad()
def logits_of(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    neuron_config: NeuronConfig | None = None,
    transform: Transform | None = None,
) -> torch.Tensor:
    """Logits for pixel-space inputs (batched, eval mode, restored afterwards)."""
    device = model_device(model)
    outs = []
    with eval_mode(model), use_config(model, neuron_config), channels_last_layout(model):
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            if transform is not None:
                batch = transform(batch)
            with autocast(device):
                outs.append(model(to_memory_format(batch, True)).float())
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(
    model: nn.Module,
    split: Split,
    batch_size: int = 512,
    neuron_config: NeuronConfig | None = None,
    transform: Transform | None = None,
) -> float:
    """Accuracy on a split (optionally with an input transform and at a neuron config)."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    pred = predict(model, split.x, batch_size, neuron_config, transform)
    return int((pred.cpu() == split.y.cpu()).sum()) / len(split)
