"""BadSNN's optimised trigger T_o: DeepFool + adaptive blending targets, then a U-Net.

1. `blend_targets`: per sample, the blend ratio alpha (grid of k values) whose blended image
   the backdoored SNN (at an attack config) labels y_t with the smallest perturbation
   (Eq. 4 as written, or the image-blend variant); Delta_x = |x - x_blend|.
2. `ConditionalUNet`: perturbation generator conditioned on the target label (one-hot planes),
   output bounded by an L_inf budget eps * tanh(.) so comparisons share one budget; or, as
   `form: dimming`, a per-pixel dimming -x * eps * s with s in [0, 1] (T_p's direction).
3. `unet_loss`: L = 1.0 L_sim + 0.1 L_adv + 1.0 L_wmse (Eq. 5-6), w = 1 + |Delta| / mean|Delta|;
   the generator is trained by `attacks.badsnn.trigger_fit.fit_trigger_unet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io import FileFormatError, load_tensors, save_tensors
from ..neurons import NeuronConfig, use_config
from .deepfool import deepfool

BLEND_MODES = ("eq4", "image")
GENERATOR_FORMS = ("additive", "dimming")
OBJECTIVES = ("target", "spikes")
DELTA_SIGNS = ("signed", "abs")


def blend(x: torch.Tensor, powered: torch.Tensor, adversarial: torch.Tensor, alpha, mode: str):
    """x_blend for one alpha (scalar or per-sample tensor), in pixel space."""
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode must be one of {BLEND_MODES}, got {mode!r}")
    if torch.is_tensor(alpha) and alpha.ndim == 1:
        alpha = alpha.view(-1, *([1] * (x.ndim - 1)))
    first = (x - powered).abs() if mode == "eq4" else powered
    return ((1 - alpha) * first + alpha * adversarial).clamp(0, 1)


@torch.no_grad()
def blend_targets(
    model: nn.Module,
    x: torch.Tensor,
    delta_df: torch.Tensor,
    power: float,
    target: int,
    attack_config: NeuronConfig | None,
    k: int = 11,
    mode: str = "eq4",
    sign: str = "signed",
    batch_size: int = 512,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Delta_x, chosen alpha, reached mask): the smallest blend the model calls `target`.

    If no alpha reaches the target for a sample, the alpha with the highest target
    probability is kept (reached = False). `sign='abs'` returns Delta_x = |x - x_blend| as
    Eq. 4 writes it (always >= 0, so adding it can only brighten); `sign='signed'` returns
    x_blend - x, the perturbation that actually leads from x to x_blend.
    """
    if sign not in DELTA_SIGNS:
        raise ValueError(f"delta sign must be one of {DELTA_SIGNS}, got {sign!r}")
    powered = x.clamp(0, 1) ** power
    adversarial = (x + delta_df).clamp(0, 1)
    alphas = torch.linspace(0, 1, k, device=x.device)
    best_size = torch.full((len(x),), float("inf"), device=x.device)
    best_prob = torch.full((len(x),), -1.0, device=x.device)
    chosen = torch.zeros(len(x), device=x.device)
    fallback = torch.zeros(len(x), device=x.device)
    was_training = model.training
    model.eval()
    try:
        with use_config(model, attack_config):
            for alpha in tqdm(alphas, desc="blending", unit="alpha", leave=False,
                              disable=not progress):
                blended = blend(x, powered, adversarial, alpha, mode)
                probs = torch.cat([
                    model(blended[i : i + batch_size]).float().softmax(1)[:, target]
                    for i in range(0, len(x), batch_size)
                ])
                logits_hit = probs >= 0.5  # target is the argmax whenever p >= 0.5
                size = (blended - x).flatten(1).norm(dim=1)
                better = logits_hit & (size < best_size)
                best_size = torch.where(better, size, best_size)
                chosen = torch.where(better, alpha, chosen)
                more = probs > best_prob
                best_prob = torch.where(more, probs, best_prob)
                fallback = torch.where(more, alpha, fallback)
    finally:
        model.train(was_training)
    reached = torch.isfinite(best_size)
    alpha = torch.where(reached, chosen, fallback)
    delta = blend(x, powered, adversarial, alpha, mode) - x
    return (delta.abs() if sign == "abs" else delta), alpha, reached


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class ConditionalUNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015) whose input carries one-hot target planes.

    `form` additive: the perturbation is eps * tanh(h), any sign (the paper's). dimming: it is
    -x * eps * (1 + tanh(h)) / 2, so each pixel keeps between 1 - eps and all of its value:
    the trigger can only take intensity away, as T_p(x) = x^q does, never draw new strokes.
    """

    def __init__(self, channels: int, num_classes: int, width: int = 16, eps: float = 0.2,
                 form: str = "additive"):
        super().__init__()
        if form not in GENERATOR_FORMS:
            raise ValueError(f"generator form must be one of {GENERATOR_FORMS}, got {form!r}")
        self.channels, self.num_classes, self.width, self.eps = channels, num_classes, width, eps
        self.form = form
        self.down1 = _DoubleConv(channels + num_classes, width)
        self.down2 = _DoubleConv(width, width * 2)
        self.bottom = _DoubleConv(width * 2, width * 4)
        self.up2 = nn.ConvTranspose2d(width * 4, width * 2, 2, stride=2)
        self.dec2 = _DoubleConv(width * 4, width * 2)
        self.up1 = nn.ConvTranspose2d(width * 2, width, 2, stride=2)
        self.dec1 = _DoubleConv(width * 2, width)
        self.head = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor, target: torch.Tensor | int) -> torch.Tensor:
        n, _, h, w = x.shape
        target = torch.as_tensor(target, device=x.device).expand(n)
        if bool(((target < 0) | (target >= self.num_classes)).any()):
            raise ValueError(f"target class must be in 0..{self.num_classes - 1}; "
                             f"got {sorted(set(target.tolist()))}")
        planes = F.one_hot(target, self.num_classes).float().view(n, -1, 1, 1).expand(-1, -1, h, w)
        d1 = self.down1(torch.cat([x, planes], 1))
        d2 = self.down2(F.max_pool2d(d1, 2))
        b = self.bottom(F.max_pool2d(d2, 2))
        u2 = self.dec2(torch.cat([_match(self.up2(b), d2), d2], 1))
        u1 = self.dec1(torch.cat([_match(self.up1(u2), d1), d1], 1))
        bounded = torch.tanh(self.head(u1))
        if self.form == "dimming":
            return -x * self.eps * (1 + bounded) / 2
        return self.eps * bounded

    def hparams(self) -> dict:
        return {"channels": self.channels, "num_classes": self.num_classes,
                "width": self.width, "eps": self.eps, "form": self.form}


def _match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Pad/crop an upsampled map to the skip connection's size (odd image sides)."""
    dh, dw = ref.shape[-2] - x.shape[-2], ref.shape[-1] - x.shape[-1]
    return F.pad(x, (0, dw, 0, dh)) if dh or dw else x


@dataclass(frozen=True, eq=False)
class OptimisedTrigger:
    """T_o as a trigger callable: x -> clip(x + scale * G(x, target), 0, 1)."""

    generator: ConditionalUNet
    target: int
    scale: float = 1.0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.generator.training
        self.generator.eval()
        try:
            return (x + self.scale * self.generator(x, self.target)).clamp(0, 1)
        finally:
            self.generator.train(was_training)


@dataclass
class UNetConfig:
    """Training of the T_o generator (docs/methods.md 1.4)."""

    eps: float = 0.2
    width: int = 16
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weights: list[float] = field(default_factory=lambda: [1.0, 0.1, 1.0])  # sim, adv, wmse
    adv_config: str = "nominal"  # nominal (paper Eq. 6) | attack
    # additive (paper): eps * tanh(.), any sign | dimming: -x * eps * s, s in [0, 1]
    form: str = "additive"
    # What L_adv (weights[1]) asks of the triggered input at adv_config. target (paper Eq. 6):
    # CE to y_t. spikes: its spike count relative to the untriggered input's, with no class in
    # the loss, so whatever class the triggered input lands on is the model's own doing.
    objective: str = "target"
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1:
            raise ValueError(f"trigger eps is an L_inf budget on [0, 1] pixels: in (0, 1], "
                             f"got {self.eps}")
        if self.adv_config not in ("nominal", "attack"):
            raise ValueError("adv_config must be 'nominal' or 'attack'")
        if self.form not in GENERATOR_FORMS:
            raise ValueError(f"unet.form must be one of {GENERATOR_FORMS}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unet.objective must be one of {OBJECTIVES}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("unet.epochs and unet.batch_size must be >= 1 and unet.lr > 0")
        if len(self.weights) != 3:
            raise ValueError("weights are three numbers: L_sim, L_adv, L_wmse")


def unet_loss(
    perturbation: torch.Tensor, delta: torch.Tensor, logits: torch.Tensor, target: int,
    weights=(1.0, 0.1, 1.0),
) -> tuple[torch.Tensor, dict]:
    """Eq. 5-6: cosine, adversarial CE and weighted MSE to the blend target Delta_x."""
    flat_p, flat_d = perturbation.flatten(1), delta.flatten(1)
    l_sim = (1 - F.cosine_similarity(flat_p, flat_d, dim=1, eps=1e-8)).mean()
    goal = torch.full((len(logits),), target, device=logits.device, dtype=torch.long)
    l_adv = F.cross_entropy(logits, goal)
    w = 1 + flat_d.abs() / (flat_d.abs().mean(1, keepdim=True) + 1e-8)
    l_wmse = (w * (flat_p - flat_d) ** 2).mean()
    total = weights[0] * l_sim + weights[1] * l_adv + weights[2] * l_wmse
    parts = {"sim": l_sim, "adv": l_adv, "wmse": l_wmse}
    return total, {k: float(v.detach()) for k, v in parts.items()}


def deepfool_deltas(model: nn.Module, x: torch.Tensor, overshoot: float, max_iter: int,
                    config: NeuronConfig | None = None,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepFool on the SNN at a neuron config (nominal for BadSNN, docs/methods.md 1.4 step 1)."""
    with use_config(model, config):
        return deepfool(model, x, overshoot=overshoot, max_iter=max_iter, progress=progress)


GENERATOR_FORMAT = "snnbackdoor-generator/1"


def save_generator(generator: ConditionalUNet, path, extra: dict | None = None) -> None:
    """Weights as safetensors, hyperparameters in a JSON sidecar (no pickle)."""
    save_tensors(path, generator.state_dict(), GENERATOR_FORMAT,
                 {"hparams": generator.hparams(), "extra": extra or {}})


def load_generator(path, device="cpu") -> tuple[ConditionalUNet, dict]:
    """Rebuild a saved T_o generator; never executes code from the files."""
    state, meta = load_tensors(path, GENERATOR_FORMAT, device)
    try:
        generator = ConditionalUNet(**meta["hparams"])
        generator.load_state_dict(state)
    except (TypeError, KeyError, RuntimeError) as err:
        raise FileFormatError(f"{path} is not a readable T_o generator: {err}") from err
    return generator.to(device).eval(), meta.get("extra", {})
