"""Poisoning baselines of BadSNN Table 2: BadNet, Blend, WaNet and Clean-Label (PAPERS.md 2).

Each entry function `<name>_outcome(data, spec, train_config, ...)` (`spec`: the model's
`ModelSpec`, e.g. `experiment.model_spec(ModelConfig(), data.info)`) poisons the training
split (all-to-one, target 0 and 5% of the training split unless set), trains a fresh model
with the run's recipe through `training.train` and returns a `PoisoningOutcome`: the model,
the trigger used at test time and the poisoned training split (for training-set defenses).
ASR is measured on triggered non-target test samples (`attacks.base.measure`). Triggers
come from `triggers.image`, sample choice and relabelling from `attacks.poisoning`; nothing
here is dataset- or model-specific.

How the poisoning ratio is counted: over the **whole** training split,
`round(poison_ratio * len(train))` samples. BadNet and Blend draw them once, by seed, from
the non-target classes and relabel them to the target. WaNet by default follows its own
training loop instead: every batch warps and relabels a fresh `poison_ratio` share of its
non-target samples (the same rate, see `wanet_outcome`). Clean-Label draws its samples from
the target class only (capped at its size) and keeps their labels, so at 5% on a 10-class set
about half of the target class is poisoned, as in the common DNN benchmark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.augment import dataset_augmentation
from ..data.bundle import DatasetBundle, DatasetInfo
from ..models.registry import ModelSpec, build_model
from ..registry import unknown_name_message
from ..training import (
    LossFn,
    TrainConfig,
    autocast,
    cross_entropy_loss,
    evaluate,
    model_device,
    seed_everything,
    train,
)
from ..triggers.image import BadNetTrigger, BlendTrigger, CleanLabelStamp, WaNetTrigger
from .base import AttackOutcome, Trigger, measure
from .poisoning import PoisonedSplit, poison_split

BASELINES = ("badnet", "blend", "wanet", "clean_label")
WANET_MODES = ("per_batch", "fixed")

# Every option each attack accepts, with its default. `seed: None` means the run's seed.
OPTION_DEFAULTS: dict[str, dict] = {
    "badnet": {"size": 3, "position": "bottom_right", "value": 1.0},
    "blend": {"alpha": 0.2, "seed": None, "pattern": None},
    "wanet": {
        "k": 4,
        "s": 0.5,
        "grid_rescale": 1.0,
        "seed": None,
        "cross_ratio": 2.0,
        "poison_mode": "per_batch",
    },
    "clean_label": {
        "size": 3,
        "eps": 8 / 255,
        "step": 1.5 / 255,
        "steps": 100,
        "batch_size": 256,
    },
}


@dataclass
class PoisoningOutcome(AttackOutcome):
    """An AttackOutcome that also carries the poisoned training split it was trained on."""

    poisoned: PoisonedSplit | None = None


# --------------------------------------------------------------------------- options


def resolve_options(name: str, options: dict | None, seed: int = 0) -> dict:
    """Defaults filled in, unknown keys refused (one line naming the valid keys)."""
    if name not in OPTION_DEFAULTS:
        raise KeyError(unknown_name_message("poisoning attack", name, OPTION_DEFAULTS))
    options = dict(options or {})
    defaults = OPTION_DEFAULTS[name]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"{name} has no option {unknown}; valid options: {', '.join(defaults)}"
        )
    resolved = {**defaults, **options}
    if "seed" in resolved and resolved["seed"] is None:
        resolved["seed"] = int(seed)
    if name == "badnet" and isinstance(resolved["position"], list):
        resolved["position"] = tuple(resolved["position"])  # YAML gives [row, col]
    if name == "wanet" and not resolved["cross_ratio"] >= 0:
        raise ValueError(f"wanet cross_ratio must be >= 0, got {resolved['cross_ratio']}")
    if name == "wanet" and resolved["poison_mode"] not in WANET_MODES:
        raise ValueError(
            f"wanet poison_mode must be one of {WANET_MODES}, got {resolved['poison_mode']!r}"
        )
    if name == "clean_label":
        if not (resolved["eps"] >= 0 and resolved["step"] > 0 and resolved["steps"] >= 0):
            raise ValueError("clean_label needs eps >= 0, step > 0 and steps >= 0")
    return resolved


def check_options(name: str, options: dict | None) -> None:
    """Validate an attack's options before any work (builds the trigger settings too)."""
    resolved = resolve_options(name, options)
    if name == "badnet":
        BadNetTrigger(resolved["size"], resolved["position"], resolved["value"])
    elif name == "blend":
        BlendTrigger(resolved["alpha"])
        if resolved["pattern"] is not None and not Path(resolved["pattern"]).is_file():
            raise FileNotFoundError(f"blend pattern file {resolved['pattern']!r} does not exist")
    elif name == "wanet":
        WaNetTrigger(resolved["k"], resolved["s"], resolved["grid_rescale"])
    else:
        CleanLabelStamp(resolved["size"])


def load_pattern(path: str | Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A user's blend image (.npy in [0,1], or any image matplotlib reads) as [C, H, W]."""
    path = Path(path)
    if path.suffix == ".npy":
        import numpy as np

        array = np.load(path, allow_pickle=False)
    else:
        import matplotlib.image

        array = matplotlib.image.imread(path)
        if array.dtype.kind in "ui":
            array = array / 255.0
    pattern = torch.as_tensor(array, dtype=torch.float32)
    if pattern.ndim == 3 and pattern.shape[-1] in (1, 3, 4) and pattern.shape[0] not in (1, 3):
        pattern = pattern[..., :3].permute(2, 0, 1)  # H, W, C -> C, H, W (drop alpha)
    if pattern.ndim == 2:
        pattern = pattern.unsqueeze(0)
    if pattern.ndim != 3:
        raise ValueError(f"blend pattern {path} must be an image, got shape {tuple(pattern.shape)}")
    channels, height, width = shape
    if pattern.shape[0] != channels:
        pattern = pattern.mean(0, keepdim=True).expand(channels, -1, -1)
    if tuple(pattern.shape[-2:]) != (height, width):
        pattern = F.interpolate(pattern[None], size=(height, width), mode="bilinear",
                                align_corners=False)[0]
    return pattern.clamp(0, 1).contiguous()


def make_trigger(name: str, options: dict | None, info: DatasetInfo, seed: int = 0) -> Trigger:
    """The test-time trigger of a baseline attack (deterministic given options and seed)."""
    o = resolve_options(name, options, seed)
    if info.kind != "image":
        raise ValueError(f"{name} is an image attack; dataset {info.name!r} holds {info.kind}")
    if name == "badnet":
        return BadNetTrigger(o["size"], o["position"], o["value"])
    if name == "blend":
        pattern = load_pattern(o["pattern"], info.shape) if o["pattern"] else None
        return BlendTrigger(o["alpha"], pattern, o["seed"])
    if name == "wanet":
        return WaNetTrigger(o["k"], o["s"], o["grid_rescale"], o["seed"])
    return CleanLabelStamp(o["size"])


# --------------------------------------------------------------------------- shared pieces


def _fresh_model(spec: ModelSpec, device) -> nn.Module:
    return build_model(spec).to(device)


def train_recipe(spec: ModelSpec, split, data: DatasetBundle, train_config: TrainConfig | None,
                 device, seed: int, loss_fn: LossFn = cross_entropy_loss,
                 description: str = "train"):
    """A fresh model trained on `split` with the run's recipe (seeded by `seed`, with the
    dataset's augmentation when `train.augment` is set); (model in eval mode, TrainResult)."""
    recipe = dataclasses.replace(train_config or TrainConfig(), seed=int(seed))
    seed_everything(int(seed))  # the initial weights too: torch's own seed is random
    model = _fresh_model(spec, device)
    result = train(model, split, recipe, data.val, loss_fn=loss_fn,
                   augment=dataset_augmentation(data.info, recipe.augment), description=description)
    model.eval()
    return model, result


def _train_on(
    name: str,
    poisoned: PoisonedSplit,
    trigger: Trigger,
    data: DatasetBundle,
    spec: ModelSpec,
    train_config: TrainConfig | None,
    device,
    target: int,
    poison_ratio: float,
    seed: int,
    options: dict,
    loss_fn: LossFn = cross_entropy_loss,
) -> PoisoningOutcome:
    """Train a fresh model on the poisoned split and package the outcome."""
    model, result = train_recipe(spec, poisoned.split, data, train_config, device, seed,
                                 loss_fn, name)
    val = measure(model, data.val, trigger, target)
    info = {
        "attack": name,
        "target": int(target),
        "poison_ratio": float(poison_ratio),
        "poison_count": len(poisoned.poisoned_index),
        "poisoned_index": [int(i) for i in poisoned.poisoned_index],
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "val_ca": val["ca"],
        "val_asr": val["asr"],
        "test": measure(model, data.test, trigger, target),
        "train_seconds": round(result.seconds, 3),
        "history": result.history,
    }
    return PoisoningOutcome(name, model, trigger, int(target), info, poisoned)


def _check_target(data: DatasetBundle, target: int) -> None:
    if not 0 <= int(target) < data.info.num_classes:
        raise ValueError(
            f"target class {target} is not a class of {data.info.name} "
            f"(0..{data.info.num_classes - 1})"
        )


def _dirty_label(name, data, spec, train_config, device, target, poison_ratio, seed,
                 options) -> PoisoningOutcome:
    _check_target(data, target)
    resolved = resolve_options(name, options, seed)
    trigger = make_trigger(name, resolved, data.info, seed)
    poisoned = poison_split(data.train, trigger, target, poison_ratio, seed)
    return _train_on(name, poisoned, trigger, data, spec, train_config, device, target,
                     poison_ratio, seed, resolved)


# --------------------------------------------------------------------------- BadNet, Blend


def badnet_outcome(
    data: DatasetBundle,
    spec: ModelSpec,
    train_config: TrainConfig | None = None,
    device: torch.device | str = "cpu",
    target: int = 0,
    poison_ratio: float = 0.05,
    seed: int = 0,
    options: dict | None = None,
) -> PoisoningOutcome:
    """BadNet: a 3x3 white square (bottom-right) on poisoned non-target samples, relabelled.

    options: `size`, `position` (name or [row, col]), `value`. `seed` picks the poisoned
    samples and seeds training (it overrides `train_config.seed`).
    """
    return _dirty_label("badnet", data, spec, train_config, device, target,
                        poison_ratio, seed, options)


def blend_outcome(
    data: DatasetBundle,
    spec: ModelSpec,
    train_config: TrainConfig | None = None,
    device: torch.device | str = "cpu",
    target: int = 0,
    poison_ratio: float = 0.05,
    seed: int = 0,
    options: dict | None = None,
) -> PoisoningOutcome:
    """Blend: `(1 - alpha) x + alpha * pattern` (alpha 0.2) on poisoned samples, relabelled.

    options: `alpha`, `seed` (of the default random pattern; the run's seed when unset),
    `pattern` (path of a user image, .npy in [0,1] or a PNG).
    """
    return _dirty_label("blend", data, spec, train_config, device, target,
                        poison_ratio, seed, options)


# --------------------------------------------------------------------------- WaNet


def _with_cross_samples(x: torch.Tensor, candidates: torch.Tensor, count: int,
                        trigger: WaNetTrigger, generator: torch.Generator) -> torch.Tensor:
    """`x` with `count` of the rows in `candidates` (drawn at random) noise-warped."""
    count = min(len(candidates), count)
    if count <= 0:
        return x
    order = torch.randperm(len(candidates), generator=generator)[:count]
    chosen = candidates[order].to(x.device)
    x = x.clone()
    x[chosen] = trigger.cross(x[chosen], generator).to(x.dtype)
    return x


def wanet_cross_loss(
    trigger: WaNetTrigger,
    poisoned_index: torch.Tensor,
    split_size: int,
    cross_ratio: float = 2.0,
    seed: int = 0,
) -> LossFn:
    """Trainer `loss_fn` for a split poisoned beforehand (`poison_mode: fixed`): adds
    WaNet's noise-mode cross samples to every batch.

    In a batch holding `p` poisoned samples, `int(cross_ratio * p)` of its clean samples
    (drawn at random) are replaced by their noise-warped versions (the trigger grid plus
    `U(-1, 1) / H` offsets, fresh each batch) and keep their **true** labels; the rest of the
    batch is used as is. Cross-entropy over the batch.
    """
    poisoned_mask = torch.zeros(split_size, dtype=torch.bool)
    poisoned_mask[poisoned_index.cpu()] = True
    generator = torch.Generator().manual_seed(int(seed) + 7919)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
        is_poisoned = poisoned_mask[index.cpu()]
        count = int(cross_ratio * int(is_poisoned.sum()))
        x = _with_cross_samples(x, torch.nonzero(~is_poisoned).flatten(), count, trigger,
                                generator)
        return F.cross_entropy(model(x), y)

    return loss


def wanet_batch_loss(
    trigger: WaNetTrigger,
    target: int,
    poison_ratio: float,
    cross_ratio: float = 2.0,
    seed: int = 0,
) -> LossFn:
    """Trainer `loss_fn` of WaNet's own training loop (`poison_mode: per_batch`, Nguyen &
    Tran 2021, Alg. 1; also the common DNN benchmark's): in every batch of `n`, a fresh
    `poison_ratio * n` samples (stochastically rounded, non-target only) are warped and
    relabelled to `target`, and `int(cross_ratio * that)` others are noise-warped and keep
    their true labels. The stored training split stays clean.
    """
    generator = torch.Generator().manual_seed(int(seed) + 7919)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
        expected = poison_ratio * len(y)
        count = int(expected) + int(float(torch.rand(1, generator=generator)) <
                                    expected - int(expected))
        non_target = torch.nonzero(y.cpu() != int(target)).flatten()
        chosen = non_target[torch.randperm(len(non_target), generator=generator)[:count]]
        is_poisoned = torch.zeros(len(y), dtype=torch.bool)
        is_poisoned[chosen] = True
        if len(chosen):
            device_index = chosen.to(x.device)
            x, y = x.clone(), y.clone()
            x[device_index] = trigger(x[device_index]).to(x.dtype)
            y[device_index] = int(target)
        x = _with_cross_samples(x, torch.nonzero(~is_poisoned).flatten(),
                                int(cross_ratio * len(chosen)), trigger, generator)
        return F.cross_entropy(model(x), y)

    return loss


def wanet_outcome(
    data: DatasetBundle,
    spec: ModelSpec,
    train_config: TrainConfig | None = None,
    device: torch.device | str = "cpu",
    target: int = 0,
    poison_ratio: float = 0.05,
    seed: int = 0,
    options: dict | None = None,
) -> PoisoningOutcome:
    """WaNet: a fixed smooth warp (k=4, s=0.5) on poisoned samples relabelled to the target,
    plus noise-mode cross samples with their true labels (cross_ratio 2).

    `poison_mode: per_batch` (default) is WaNet's own training loop (`wanet_batch_loss`):
    each batch warps a fresh `poison_ratio` share, so no stored sample is poisoned and
    `poisoned_index` is empty. `poison_mode: fixed` poisons `poison_ratio` of the split once
    (like BadNet) and adds the cross samples per batch (`wanet_cross_loss`); with a fixed
    set a small network can memorise the few poisoned images instead of learning the warp
    (on the digits it reaches far lower ASR). options: `k`, `s`, `grid_rescale`, `seed` (of
    the warping grid; the run's seed when unset), `cross_ratio` (0 turns the cross samples
    off), `poison_mode`.
    """
    _check_target(data, target)
    resolved = resolve_options("wanet", options, seed)
    trigger = make_trigger("wanet", resolved, data.info, seed)
    if resolved["poison_mode"] == "fixed":
        poisoned = poison_split(data.train, trigger, target, poison_ratio, seed)
        loss_fn = wanet_cross_loss(trigger, poisoned.poisoned_index, len(data.train),
                                   resolved["cross_ratio"], seed)
    else:
        poisoned = PoisonedSplit(data.train, torch.zeros(0, dtype=torch.long))
        loss_fn = wanet_batch_loss(trigger, target, poison_ratio, resolved["cross_ratio"], seed)
    outcome = _train_on("wanet", poisoned, trigger, data, spec, train_config, device,
                        target, poison_ratio, seed, resolved, loss_fn)
    outcome.info["poison_mode"] = resolved["poison_mode"]
    if resolved["poison_mode"] == "per_batch":
        outcome.info["poisoned_per_epoch"] = round(poison_ratio * len(data.train))
    return outcome


# --------------------------------------------------------------------------- Clean-Label


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    step: float = 1.5 / 255,
    steps: int = 100,
    batch_size: int = 256,
) -> torch.Tensor:
    """Untargeted L_inf PGD (no random start) that raises the model's loss on `(x, y)`.

    Each step adds `step * sign(grad CE)` and projects back onto the eps-ball around `x`
    and onto [0, 1]. Gradients flow through the surrogate spike functions; the model runs
    in eval mode at its current neuron config and its weights are not touched.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            clean = x[start : start + batch_size].to(device).float()
            labels = y[start : start + batch_size].to(device)
            adv = clean.clone()
            for _ in range(steps):
                adv.requires_grad_(True)
                with autocast(device):
                    loss = F.cross_entropy(model(adv).float(), labels)
                (grad,) = torch.autograd.grad(loss, adv)
                adv = adv.detach() + step * grad.sign()
                adv = torch.min(torch.max(adv, clean - eps), clean + eps).clamp(0, 1)
            out.append(adv.detach())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else x.clone()


@dataclass(frozen=True)
class PGDThenStamp:
    """The clean-label poisoning transform: PGD against a clean model, then the stamp."""

    model: nn.Module
    target: int
    stamp: CleanLabelStamp
    eps: float
    step: float
    steps: int
    batch_size: int = 256

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.full((len(x),), int(self.target), dtype=torch.long)
        hard = pgd_attack(self.model, x, labels, self.eps, self.step, self.steps,
                          self.batch_size)
        return self.stamp(hard.to(x.device))


def clean_label_outcome(
    data: DatasetBundle,
    spec: ModelSpec,
    train_config: TrainConfig | None = None,
    device: torch.device | str = "cpu",
    target: int = 0,
    poison_ratio: float = 0.05,
    seed: int = 0,
    options: dict | None = None,
    clean_model: nn.Module | None = None,
) -> PoisoningOutcome:
    """Clean-Label: target-class samples made hard by PGD (L_inf 8/255, step 1.5/255, 100
    steps) against a clean model, then stamped with the four-corner checkerboard; labels
    kept. `round(poison_ratio * len(train))` target-class samples are poisoned (capped at
    the class size; see the module docstring).

    `clean_model`: a model trained on clean data with the same recipe; trained here when
    not given. options: `size` (of each corner stamp), `eps`, `step`, `steps`, `batch_size`.
    """
    _check_target(data, target)
    resolved = resolve_options("clean_label", options, seed)
    stamp = make_trigger("clean_label", resolved, data.info, seed)
    if clean_model is None:
        clean_model, _ = train_recipe(spec, data.train, data, train_config, device, seed,
                                      description="clean")
    transform = PGDThenStamp(clean_model, target, stamp, resolved["eps"], resolved["step"],
                             resolved["steps"], resolved["batch_size"])
    poisoned = poison_split(data.train, transform, target, poison_ratio, seed,
                            relabel=False, from_target=True)
    outcome = _train_on("clean_label", poisoned, stamp, data, spec, train_config,
                        device, target, poison_ratio, seed, resolved)
    outcome.info["clean_model_val_accuracy"] = evaluate(clean_model, data.val)
    return outcome


OUTCOMES = {
    "badnet": badnet_outcome,
    "blend": blend_outcome,
    "wanet": wanet_outcome,
    "clean_label": clean_label_outcome,
}
