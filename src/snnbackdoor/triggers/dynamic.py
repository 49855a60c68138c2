"""Sneaky Spikes dynamic trigger: a spiking autoencoder makes an input-specific pattern.

``x' = x + gamma * g(x)`` on event frames ``[N, T, P, H, W]`` (no clamp: the pattern is a small
signed change of the counts). The generator ``g`` and the classifier are trained together
(LIRA-style): per batch, a one-step look-ahead ``theta' = theta - lr * grad L_cls(theta)`` of
the classifier is built with ``torch.func.functional_call`` and ``g`` minimises
``L(f_theta'(x'), y_t)``; then the classifier takes its ordinary step on
``alpha * L(f(x), y) + (1 - alpha) * L(f(x'), y_t)`` for its poisoned samples (plain CE for
the rest). The joint step plugs into ``training.train`` as a ``loss_fn``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import Tensor
from torch.func import functional_call

from ..io import FileFormatError, load_tensors, save_tensors
from .base import EVENTS, register_trigger

FORMAT = "snnbackdoor-dynamic-trigger/1"


@dataclass(frozen=True)
class DynamicConfig:
    """Settings of the dynamic attack (Sneaky Spikes defaults: gamma 0.1, alpha 0.5)."""

    gamma: float = 0.1  # pattern scale: x' = x + gamma * g(x), g(x) in [-1, 1]
    alpha: float = 0.5  # weight of the clean term in a poisoned sample's classifier loss
    channels: int = 16  # autoencoder width (the original uses 128 on GPUs)
    lr: float = 1e-3  # generator Adam learning rate
    lookahead_lr: float | None = None  # step of the look-ahead theta'; None: the train lr
    tau: float = 2.0  # LIF time constant of the generator's spiking layers (SpikingJelly's)
    generator_samples: int | None = 16  # samples per batch in g's look-ahead and loss (None: all)

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"dynamic gamma must be in (0, 1] (paper: 0.01-0.1), got {self.gamma}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"dynamic alpha must be in [0, 1], got {self.alpha}")
        if self.channels < 1 or not self.lr > 0:
            raise ValueError("dynamic channels must be >= 1 and lr > 0")
        if self.generator_samples is not None and self.generator_samples < 1:
            raise ValueError(
                f"dynamic generator_samples must be >= 1 (or None), got {self.generator_samples}")
        if self.lookahead_lr is not None and not self.lookahead_lr > 0:
            raise ValueError(f"dynamic lookahead_lr must be > 0, got {self.lookahead_lr}")
        if not self.tau > 1:
            raise ValueError(f"dynamic tau must be > 1 (SpikingJelly's convention), got {self.tau}")


# --------------------------------------------------------------------------- generator


class SpikingAutoencoder(nn.Module):
    """g: frames ``[N, T, P, H, W]`` -> pattern of the same shape in [-1, 1].

    Multi-step SpikingJelly layers: two spiking conv stages down (full, then half size), one
    spiking stage up, and a non-spiking readout (tanh of its input current, the original's
    membrane-output option) so the pattern is signed and smooth in the weights.
    """

    def __init__(
        self, in_channels: int = 2, size: tuple[int, int] = (34, 34), channels: int = 16,
        tau: float = 2.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.size = in_channels, tuple(size)
        self.channels, self.tau = channels, tau

        def node() -> nn.Module:
            return neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan(), detach_reset=True,
                                  step_mode="m")

        c = channels
        self.encoder = nn.Sequential(
            layer.Conv2d(in_channels, c, 3, padding=1, bias=False, step_mode="m"),
            layer.BatchNorm2d(c, step_mode="m"),
            node(),
            layer.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False, step_mode="m"),
            layer.BatchNorm2d(2 * c, step_mode="m"),
            node(),
        )
        self.decoder = nn.Sequential(
            layer.Upsample(size=self.size, mode="nearest", step_mode="m"),
            layer.Conv2d(2 * c, c, 3, padding=1, bias=False, step_mode="m"),
            layer.BatchNorm2d(c, step_mode="m"),
            node(),
            layer.Conv2d(c, in_channels, 3, padding=1, step_mode="m"),
        )

    def config(self) -> dict:
        """Builder arguments (for the JSON sidecar of a saved generator)."""
        return {"in_channels": self.in_channels, "size": list(self.size),
                "channels": self.channels, "tau": self.tau}

    def forward(self, frames: Tensor) -> Tensor:
        if frames.ndim != 5 or frames.shape[2] != self.in_channels:
            raise ValueError(f"expected frames [N, T, {self.in_channels}, H, W], "
                             f"got shape {tuple(frames.shape)}")
        functional.reset_net(self)
        out = torch.tanh(self.decoder(self.encoder(frames.transpose(0, 1))))
        functional.reset_net(self)
        return out.transpose(0, 1)


def build_generator(info_shape: tuple[int, ...], config: DynamicConfig) -> SpikingAutoencoder:
    """A generator for samples of shape ``(T, P, H, W)``."""
    _, polarities, height, width = info_shape
    return SpikingAutoencoder(polarities, (height, width), config.channels, config.tau)


def apply_pattern(frames: Tensor, generator: nn.Module, gamma: float) -> Tensor:
    """``frames + gamma * g(frames)`` (differentiable in g; no clamp); empty stays empty."""
    if len(frames) == 0:
        return frames.clone()
    return frames + gamma * generator(frames)


@register_trigger("dynamic", EVENTS, options=DynamicConfig, trained=True, paper="sneaky_spikes")
@dataclass(frozen=True, eq=False)
class DynamicTrigger:
    """The trained dynamic trigger: ``x -> x + gamma * g(x)``, g in eval mode, no gradients."""

    generator: SpikingAutoencoder
    gamma: float = 0.1

    @torch.no_grad()
    def __call__(self, frames: Tensor) -> Tensor:
        device = next(self.generator.parameters()).device
        was_training = self.generator.training
        self.generator.eval()
        try:
            out = apply_pattern(frames.to(device).float(), self.generator, self.gamma)
        finally:
            self.generator.train(was_training)
        return out.to(frames.device)

    def save(self, path: str | Path) -> Path:
        """Weights as safetensors plus ``<name>.json`` (builder args, gamma); never pickled."""
        return save_tensors(path, self.generator.state_dict(), FORMAT,
                            {"generator": self.generator.config(), "gamma": self.gamma})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> DynamicTrigger:
        """A trigger saved by `save`, checked against its sidecar; never unpickles."""
        state, meta = load_tensors(path, FORMAT)
        try:
            args = meta["generator"]
            generator = SpikingAutoencoder(int(args["in_channels"]), tuple(args["size"]),
                                           int(args["channels"]), float(args["tau"]))
            generator.load_state_dict(state)
            gamma = float(meta["gamma"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise FileFormatError(f"{path} does not hold a dynamic trigger generator its sidecar "
                                  f"describes ({err}); it is corrupted: delete it") from err
        return cls(generator.to(device).eval(), gamma)


# --------------------------------------------------------------------------- joint training


class _PlainSurrogate(nn.Module):
    """A surrogate seen as user code, so SpikingJelly runs its pure-torch reference neuron.

    SpikingJelly's fused neuron kernels are only reliable to first order; the look-ahead
    differentiates through the classifier's backward pass, which the reference path supports.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)


@contextlib.contextmanager
def reference_neurons(model: nn.Module) -> Iterator[None]:
    """Within the block, the model's spiking nodes use SpikingJelly's autograd reference path."""
    swapped = [(m, m.surrogate_function) for m in model.modules()
               if isinstance(getattr(m, "surrogate_function", None), nn.Module)
               and not isinstance(m.surrogate_function, _PlainSurrogate)]
    try:
        for node, function in swapped:
            node.surrogate_function = _PlainSurrogate(function)
        yield
    finally:
        for node, function in swapped:
            node.surrogate_function = function


def _parameters(model: nn.Module) -> dict[str, Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def classifier_loss(
    model: nn.Module, x: Tensor, y: Tensor, poisoned: Tensor, x_poison: Tensor, target: int,
    alpha: float,
) -> Tensor:
    """Batch-mean classifier loss: CE(f(x), y) for clean samples; for the poisoned ones
    ``alpha * CE(f(x), y) + (1 - alpha) * CE(f(x'), y_t)``.

    ``x`` is the whole (clean) batch, ``poisoned`` its boolean mask and ``x_poison`` the
    poisoned samples with the pattern, in batch order.
    """
    per_sample = F.cross_entropy(model(x), y, reduction="none")
    if len(x_poison) == 0:
        return per_sample.mean()
    weight = torch.where(poisoned, torch.full_like(per_sample, alpha), torch.ones_like(per_sample))
    y_t = torch.full((len(x_poison),), target, dtype=y.dtype, device=y.device)
    backdoor = F.cross_entropy(model(x_poison), y_t, reduction="sum")
    return ((weight * per_sample).sum() + (1 - alpha) * backdoor) / len(y)


def lookahead_generator_step(
    model: nn.Module,
    generator: nn.Module,
    generator_optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    poisoned: Tensor,
    target: int,
    config: DynamicConfig,
    lookahead_lr: float,
) -> float:
    """One generator update through the classifier's one-step look-ahead; returns its loss.

    ``theta' = theta - lookahead_lr * grad_theta L_cls(theta; g)`` keeps the graph to g
    (create_graph; only L_cls's backdoor term depends on g, the clean terms would shift
    theta' by a g-independent step and are left out; estimated on up to
    ``config.generator_samples`` poisoned samples, scaled to the batch's count), then g
    minimises ``CE(f_theta'(x + gamma g(x)), y_t)`` on up to ``config.generator_samples``
    non-target samples of the batch, poisoned ones first. The classifier's parameters and
    buffers are left untouched.
    """
    with reference_neurons(model):
        params = _parameters(model)
        buffers = {name: b.clone() for name, b in model.named_buffers()}  # BN stats untouched
        ahead = dict(params)
        ahead_index = torch.nonzero(poisoned).flatten()
        if config.generator_samples is not None:  # a subset, scaled to the whole batch's sum
            ahead_index = ahead_index[: config.generator_samples]
        if len(ahead_index):
            x_p = apply_pattern(x[ahead_index], generator, config.gamma)
            logits_p = functional_call(model, {**params, **buffers}, (x_p,))
            y_t = torch.full_like(y[ahead_index], target)
            loss_bd = (1 - config.alpha) * F.cross_entropy(logits_p, y_t, reduction="sum")
            loss_bd = loss_bd * (int(poisoned.sum()) / len(ahead_index)) / len(y)
            grads = torch.autograd.grad(loss_bd, list(params.values()), create_graph=True,
                                        allow_unused=True)
            ahead = {name: p if g is None else p - lookahead_lr * g
                     for (name, p), g in zip(params.items(), grads)}
        keep = torch.cat([torch.nonzero(poisoned).flatten(),
                          torch.nonzero(~poisoned & (y != target)).flatten()])
        if config.generator_samples is not None:
            keep = keep[: config.generator_samples]
        x_t = apply_pattern(x[keep], generator, config.gamma)
        logits = functional_call(model, {**ahead, **buffers}, (x_t,))
        loss_gen = F.cross_entropy(logits, torch.full_like(y[keep], target))
        gen_params = [p for p in generator.parameters() if p.requires_grad]
        gen_grads = torch.autograd.grad(loss_gen, gen_params, allow_unused=True)
    generator_optimizer.zero_grad(set_to_none=True)
    for p, g in zip(gen_params, gen_grads):
        p.grad = None if g is None else g.detach()
    generator_optimizer.step()
    return float(loss_gen.detach())


class DynamicJointLoss:
    """A ``training.train`` loss_fn: generator look-ahead step, then the classifier's loss.

    ``poison_mask[i]`` marks training sample i as poisoned (never a target-class sample);
    the trainer steps the classifier on the returned loss (pattern detached).
    """

    def __init__(
        self, generator: SpikingAutoencoder, poison_mask: Tensor, target: int,
        config: DynamicConfig, lookahead_lr: float,
    ) -> None:
        self.generator = generator
        self.poison_mask = poison_mask
        self.target = int(target)
        self.config = config
        self.lookahead_lr = float(lookahead_lr)
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr)
        self.generator_losses: list[float] = []

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        poisoned = self.poison_mask.to(index.device)[index]
        self.generator.train()
        if bool((y != self.target).any()):
            self.generator_losses.append(lookahead_generator_step(
                model, self.generator, self.optimizer, x, y, poisoned, self.target,
                self.config, self.lookahead_lr))
        with torch.no_grad():
            x_p = apply_pattern(x[poisoned], self.generator, self.config.gamma)
        return classifier_loss(model, x, y, poisoned, x_p, self.target, self.config.alpha)


