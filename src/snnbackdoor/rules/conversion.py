"""LR_C: train the ReLU twin, convert it with SpikingJelly's ``ann2snn``, run the SNN for T steps.

The conversion itself is SpikingJelly's (``ann2snn.Converter`` with ``RateCodingRecipe``:
Conv-BN fusion, threshold balancing by the ``max`` / percentile / fraction-of-max of each ReLU's
activations on calibration data, ReLU -> soft-reset ``IFNode`` between two ``VoltageScaler``s).
This module only feeds it the ANN body (normalisation stays outside the traced graph) and wraps
the result as ``ConvertedSNN``: an ordinary ``model(x) -> logits`` on pixel-space inputs.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from spikingjelly.activation_based import ann2snn
from tqdm.auto import tqdm

from ..attacks.poisoning import apply_in_batches
from ..backend import set_neuron_backend
from ..checkpoint import CheckpointError
from ..data.bundle import Split
from ..io import FileFormatError, load_tensors, save_tensors
from ..metrics import accuracy, attack_success_rate, robust_accuracy
from ..models.classifier import ANNClassifier
from ..models.registry import ModelSpec, build_model
from ..neurons import get_neuron_params, restore_neuron_params
from ..training import (
    TrainConfig,
    TrainResult,
    Transform,
    model_device,
    seed_everything,
    train,
)
from ..util import eval_mode
from .converted import ConvertedSNN, make_trainable, surrogate_settings

FORMAT = "snnbackdoor-converted/1"


def validate_mode(mode: str | float) -> str | float:
    """Check a threshold-balancing mode: 'max', a percentile 'p%' (0-100) or a float in (0, 1]."""
    if isinstance(mode, str):
        text = mode.strip()
        if text.lower() == "max":
            return "max"
        if text.endswith("%"):
            try:
                value = float(text[:-1])
            except ValueError:
                value = -1.0
            if 0.0 < value <= 100.0:
                return text
        raise ValueError(
            f"conversion mode {mode!r} is not one of 'max', a percentile like '99.9%', "
            "or a fraction of the max in (0, 1]"
        )
    if isinstance(mode, bool) or not isinstance(mode, (int, float)) or not 0 < mode <= 1:
        raise ValueError(f"conversion mode {mode!r}: a float mode must lie in (0, 1]")
    return float(mode)


def migration_rate(asr_snn: float, asr_ann: float) -> float | None:
    """Backdoor migration rate ASR(converted SNN) / ASR(source ANN); None when ASR(ANN) is 0."""
    if asr_ann is None or asr_snn is None or asr_ann <= 0:
        return None
    return float(asr_snn) / float(asr_ann)


def _norm_stats(model: nn.Module) -> tuple[list[float] | None, list[float] | None]:
    norm = getattr(model, "normalise", None)
    if norm is None or not getattr(norm, "enabled", False):
        return None, None
    return norm.mean.flatten().tolist(), norm.std.flatten().tolist()


def ann_view(ann: ANNClassifier, x: torch.Tensor) -> torch.Tensor:
    """What the ANN body sees: frames averaged over time, then normalised."""
    if ann.encoding == "frames":
        x = x.mean(1)
    return ann.normalise(x)


class _CalibrationBatches:
    """Re-iterable batches of body inputs (normalised), built lazily so big splits stay flat."""

    def __init__(self, ann: ANNClassifier, x: torch.Tensor, batch_size: int, device) -> None:
        self.ann, self.x, self.batch_size, self.device = ann, x, batch_size, device

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.x), self.batch_size):
            batch = self.x[start : start + self.batch_size].to(self.device)
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            yield ann_view(self.ann, batch.float())




# ---------------------------------------------------------------------- train and convert


def train_ann(
    spec: ModelSpec,
    train_split: Split,
    config: TrainConfig,
    val_split: Split | None = None,
    device: str | torch.device = "cpu",
    description: str = "ANN twin",
    augment: Transform | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Build the ReLU twin of ``spec`` (same topology) and train it with the one trainer."""
    seed_everything(config.seed)
    ann = build_model(spec, ann=True).to(device)
    result = train(ann, train_split, config, val_split, augment=augment,
                   description=description)
    return ann, result


def convert_ann(
    ann: ANNClassifier,
    calibration_x: torch.Tensor,
    T: int = 32,
    mode: str | float = "max",
    batch_size: int = 128,
    momentum: float = 0.1,
    channel_wise: bool = False,
    pre_spike_maxpool: bool = False,
    event_input: str = "cycle",
    chunk: int = 16,
    neuron_backend: str = "auto",
) -> ConvertedSNN:
    """Convert an ANN twin with SpikingJelly (RateCodingRecipe) into a ``ConvertedSNN``.

    ``calibration_x`` are pixel-space samples (the clean training data, normally): each
    ReLU's threshold scale is the ``mode`` statistic of its activations on them (SpikingJelly
    keeps a running average over batches with ``momentum``). BN is fused into the preceding
    conv; every ReLU becomes ``VoltageScaler(1/s) -> IFNode(v_th=1, soft reset) ->
    VoltageScaler(s)``. The ANN itself is not modified.
    """
    if not isinstance(ann, ANNClassifier):
        raise TypeError(
            f"convert_ann expects an ANNClassifier (build_model(spec, ann=True)), got "
            f"{type(ann).__name__}"
        )
    mode = validate_mode(mode)
    if len(calibration_x) == 0:
        raise ValueError("convert_ann needs at least one calibration sample")
    device = model_device(ann)
    with eval_mode(ann):
        batches = _CalibrationBatches(ann, calibration_x, batch_size, device)
        recipe = ann2snn.RateCodingRecipe(
            dataloader=batches,
            mode=mode,
            momentum=momentum,
            fuse_flag=True,
            channel_wise=channel_wise,
            pre_spike_maxpool=pre_spike_maxpool,
        )
        body = ann2snn.Converter(recipe=recipe, device=device).convert(copy.deepcopy(ann.body))
    mean, std = _norm_stats(ann)
    spec = getattr(ann, "spec", None)
    conversion = {
        "ann_spec": spec.as_dict() if isinstance(spec, ModelSpec) else None,
        "mode": mode,
        "momentum": momentum,
        "channel_wise": channel_wise,
        "pre_spike_maxpool": pre_spike_maxpool,
        "event_input": event_input,
        "chunk": chunk,
        "calibration_samples": len(calibration_x),
    }
    snn = ConvertedSNN(body, T, mean, std, ann.encoding, event_input, chunk,
                       conversion).to(device)
    set_neuron_backend(snn, neuron_backend)  # fused CPU IF kernel where it applies
    return snn


# ---------------------------------------------------------------------- evaluation over T


@torch.no_grad()
def logits_over_time(
    model: ConvertedSNN,
    x: torch.Tensor,
    Ts: Sequence[int],
    batch_size: int = 256,
    progress: bool = False,
    description: str = "SNN over T",
) -> dict[int, torch.Tensor]:
    """{T: logits [N, classes]} of a converted SNN for every T in ``Ts`` (fp32, eval mode)."""
    device = model_device(model)
    parts: dict[int, list[torch.Tensor]] = {int(T): [] for T in Ts}
    with eval_mode(model):
        starts = range(0, len(x), batch_size)
        for start in tqdm(starts, desc=description, disable=not progress, leave=False):
            batch = x[start : start + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            for T, logits in model.forward_steps(batch.float(), list(parts)).items():
                parts[T].append(logits.float().cpu())
    return {T: torch.cat(chunks) if chunks else torch.empty(0) for T, chunks in parts.items()}


def measure_over_time(
    model: ConvertedSNN,
    split: Split,
    trigger,
    target: int,
    Ts: Sequence[int],
    batch_size: int = 256,
    progress: bool = False,
) -> dict[int, dict]:
    """{T: {ca, asr, ra}}: clean accuracy on ``split``, attack metrics on its triggered
    non-target samples, for every T from one presentation per input."""
    keep = torch.nonzero(split.y != target).flatten()
    clean = logits_over_time(model, split.floats(), Ts, batch_size, progress, "SNN clean")
    triggered_x = apply_in_batches(trigger, split.floats(keep))
    triggered = logits_over_time(model, triggered_x, Ts, batch_size, progress, "SNN triggered")
    y, y_keep = split.y.cpu(), split.y[keep].cpu()
    result = {}
    for T in clean:
        pred = triggered[T].argmax(1)
        result[T] = {
            "ca": accuracy(clean[T].argmax(1), y),
            "asr": attack_success_rate(pred, y_keep, target),
            "ra": robust_accuracy(pred, y_keep, target),
        }
    return result


# ---------------------------------------------------------------------- files


def save_converted(model: ConvertedSNN, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save a converted SNN: safetensors weights and scales plus a JSON sidecar (no pickle).

    The sidecar holds the ANN twin's spec, the conversion settings and the nodes' surrogate
    settings (read off the model); loading re-runs the conversion on a structure-only batch
    and then loads the saved tensors over it.
    """
    if not isinstance(model, ConvertedSNN) or not model.conversion.get("ann_spec"):
        raise CheckpointError("only ConvertedSNNs made by convert_ann from a build_model ANN "
                              "can be saved")
    meta = {
        "conversion": model.conversion,
        "T": model.T,
        "surrogate": surrogate_settings(model),
        "neuron_params": get_neuron_params(model),
        "extra": extra or {},
    }
    return save_tensors(path, model.state_dict(), FORMAT, meta)


def load_converted(path: str | os.PathLike, device: str | torch.device = "cpu") -> ConvertedSNN:
    """Rebuild a converted SNN saved by ``save_converted``; never unpickles anything."""
    try:
        state, meta = load_tensors(path, FORMAT, device)
    except FileFormatError as err:
        raise CheckpointError(str(err)) from err
    try:
        conv = meta["conversion"]
        spec = ModelSpec(**conv["ann_spec"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} has an invalid ANN spec in its sidecar: {err}") from err
    ann = build_model(spec, ann=True).to(device)
    structure = torch.rand((2, *_input_shape(spec)), generator=torch.Generator().manual_seed(0))
    snn = convert_ann(
        ann, structure, meta["T"], conv["mode"], 2, conv["momentum"], conv["channel_wise"],
        conv["pre_spike_maxpool"], conv["event_input"], conv["chunk"],
    )
    snn.conversion = conv
    try:
        snn.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its conversion settings: {err}") from err
    settings = meta.get("surrogate", meta.get("trainable"))  # "trainable": files before 2026-12
    if settings:
        make_trainable(snn, **settings)
    if meta.get("neuron_params"):
        restore_neuron_params(snn, meta["neuron_params"])
    return snn


def _input_shape(spec: ModelSpec) -> tuple[int, ...]:
    image = (spec.in_channels, spec.image_size, spec.image_size)
    return (spec.T, *image) if spec.encoding == "frames" else image


def timed_convert(ann: ANNClassifier, calibration_x: torch.Tensor, **options) -> tuple:
    """``convert_ann`` plus its wall time in seconds."""
    start = time.perf_counter()
    snn = convert_ann(ann, calibration_x, **options)
    return snn, time.perf_counter() - start
