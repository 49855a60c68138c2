"""LR_C: train the ReLU twin, convert it with SpikingJelly's ``ann2snn``, run the SNN for T steps.

The conversion itself is SpikingJelly's (``ann2snn.Converter`` with ``RateCodingRecipe``:
Conv-BN fusion, threshold balancing by the ``max`` / percentile / fraction-of-max of each ReLU's
activations on calibration data, ReLU -> soft-reset ``IFNode`` between two ``VoltageScaler``s).
This module only feeds it the ANN body (normalisation stays outside the traced graph) and wraps
the result as ``ConvertedSNN``: an ordinary ``model(x) -> logits`` on pixel-space inputs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from spikingjelly.activation_based import ann2snn, functional
from tqdm.auto import tqdm

from ..attacks.poisoning import apply_in_batches
from ..backend import set_neuron_backend
from ..checkpoint import CheckpointError
from ..data.bundle import Split
from ..io import atomic_write_json, sidecar_path
from ..metrics import accuracy, attack_success_rate, robust_accuracy
from ..models.classifier import ANNClassifier, SpikingClassifier
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

FORMAT = "snnbackdoor-converted/1"
EVENT_INPUTS = ("cycle", "resample", "mean")


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


def _resample_weights(total: int, frames: int) -> torch.Tensor:
    """[total, frames] area weights: step t averages the recording over [t, t+1) * frames/total.

    Rows sum to 1 and every column sums to total/frames, so the time-mean of the resampled
    sequence is exactly the mean frame (the ANN twin's input) for any T.
    """
    t = torch.arange(total, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(frames, dtype=torch.float64).unsqueeze(0)
    lo, hi = t * frames / total, (t + 1) * frames / total
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp(min=0)
    return (overlap / (hi - lo)).float()


class ConvertedSNN(SpikingClassifier):
    """A converted IF network as ``model(x) -> logits`` on pixel-space inputs.

    Normalises with the ANN twin's mean/std, presents the input for ``T`` steps (images:
    the analog image at every step, i.e. direct/rate input into the first layer), and reads
    out the time-mean of the last layer (argmax equals that of the accumulated output). The
    body runs multi-step in chunks of ``chunk`` steps without resetting in between, so memory
    does not grow with T.

    Event frames ``[N, T_data, P, H, W]`` (the ANN twin was trained on their time-mean):
    ``event_input='cycle'`` (default) plays the recording frame by frame in a loop (step t
    sees frame t mod T_data; when T is a multiple of T_data the time-mean of the input is
    exactly the ANN's mean frame, and the order of events is kept); ``'resample'`` spreads
    one playback over the T steps (area resampling, each frame held T/T_data steps);
    ``'mean'`` feeds the ANN's mean frame at every step (the textbook conversion setting).
    Long holds of one frame let IF neurons overshoot before later negative input arrives, so
    ``resample`` converges worse than ``cycle`` (see the rules note).
    """

    def __init__(
        self,
        body: nn.Module,
        T: int,
        mean=None,
        std=None,
        encoding: str = "direct",
        event_input: str = "cycle",
        chunk: int = 16,
    ) -> None:
        super().__init__(body, T, mean, std, encoding)
        if event_input not in EVENT_INPUTS:
            raise ValueError(f"event_input must be one of {EVENT_INPUTS}, got {event_input!r}")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.event_input = event_input
        self.chunk = int(chunk)
        self.conversion: dict = {}

    # ------------------------------------------------------------------ inputs

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding == "direct":
            if x.ndim != 4:
                raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
            return self.normalise(x)
        if x.ndim != 5:
            raise ValueError(f"expected event frames [N, T, P, H, W], got shape {tuple(x.shape)}")
        if self.event_input == "mean":
            return self.normalise(x.mean(1))
        return self.normalise(x)

    def _steps(self, prepared: torch.Tensor, start: int, stop: int, total: int) -> torch.Tensor:
        """Inputs of steps [start, stop) of a ``total``-step presentation: [stop-start, N, ...]."""
        if self.encoding == "direct" or self.event_input == "mean":
            return prepared.unsqueeze(0).expand(stop - start, *prepared.shape)
        frames = prepared.shape[1]
        if self.event_input == "cycle":
            index = torch.arange(start, stop, device=prepared.device) % frames
            return prepared[:, index].transpose(0, 1)
        weights = _resample_weights(total, frames)[start:stop].to(prepared)
        return torch.einsum("sf,nf...->sn...", weights, prepared)

    # ------------------------------------------------------------------ forward

    def _run(self, x: torch.Tensor, checkpoints: Sequence[int], total: int) -> dict:
        bounds = sorted(set(range(self.chunk, total, self.chunk)) | set(checkpoints))
        out: dict[int, torch.Tensor] = {}
        acc = None
        start = 0
        functional.reset_net(self.body)
        try:
            # fp32 even under the trainer's bf16 autocast: IF membranes integrate over many
            # steps and the balancing scales assume full precision
            with torch.autocast(x.device.type, enabled=False):
                prepared = self._prepare(x.float())
                for stop in bounds:
                    step_sum = self.body(self._steps(prepared, start, stop, total)).sum(0)
                    acc = step_sum if acc is None else acc + step_sum
                    if stop in checkpoints:
                        out[stop] = acc / stop
                    start = stop
        finally:
            functional.reset_net(self.body)
        return out

    def forward_steps(self, x: torch.Tensor, checkpoints: Sequence[int]) -> dict[int, torch.Tensor]:
        """Time-mean logits after each of ``checkpoints`` steps: {T: [N, classes]}.

        One presentation serves every T (the state at step t does not depend on the total),
        except for resampled event frames, whose input at step t depends on T.
        """
        wanted = sorted({int(c) for c in checkpoints})
        if not wanted or wanted[0] < 1:
            raise ValueError(f"checkpoints must be T values >= 1, got {list(checkpoints)}")
        if self.encoding == "frames" and self.event_input == "resample":
            return {T: self._run(x, [T], T)[T] for T in wanted}
        return self._run(x, wanted, wanted[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x, (self.T,))[self.T]


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
    was_training = ann.training
    ann.eval()
    try:
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
    finally:
        ann.train(was_training)
    mean, std = _norm_stats(ann)
    snn = ConvertedSNN(body, T, mean, std, ann.encoding, event_input, chunk).to(device)
    set_neuron_backend(snn, neuron_backend)  # fused CPU IF kernel where it applies
    spec = getattr(ann, "spec", None)
    snn.conversion = {
        "ann_spec": spec.as_dict() if isinstance(spec, ModelSpec) else None,
        "mode": mode,
        "momentum": momentum,
        "channel_wise": channel_wise,
        "pre_spike_maxpool": pre_spike_maxpool,
        "event_input": event_input,
        "chunk": chunk,
        "calibration_samples": len(calibration_x),
    }
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
    was_training = model.training
    model.eval()
    parts: dict[int, list[torch.Tensor]] = {int(T): [] for T in Ts}
    try:
        starts = range(0, len(x), batch_size)
        for start in tqdm(starts, desc=description, disable=not progress, leave=False):
            batch = x[start : start + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            for T, logits in model.forward_steps(batch.float(), list(parts)).items():
                parts[T].append(logits.float().cpu())
    finally:
        model.train(was_training)
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

    The sidecar holds the ANN twin's spec and the conversion settings; loading re-runs the
    conversion on a structure-only batch and then loads the saved tensors over it.
    """
    if not isinstance(model, ConvertedSNN) or not model.conversion.get("ann_spec"):
        raise CheckpointError("only ConvertedSNNs made by convert_ann from a build_model ANN "
                              "can be saved")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": FORMAT})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    sidecar = {
        "format": FORMAT,
        "conversion": model.conversion,
        "T": model.T,
        "trainable": getattr(model, "trainable", None),
        "neuron_params": get_neuron_params(model),
        "extra": extra or {},
    }
    atomic_write_json(sidecar_path(path), sidecar)
    return path


def load_converted(path: str | os.PathLike, device: str | torch.device = "cpu") -> ConvertedSNN:
    """Rebuild a converted SNN saved by ``save_converted``; never unpickles anything."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.exists() or not side.exists():
        raise CheckpointError(f"{path} or its sidecar {side.name} does not exist")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{side} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{side} is not a converted-SNN sidecar ({FORMAT} expected)")
    conv = meta["conversion"]
    try:
        spec = ModelSpec(**conv["ann_spec"])
    except TypeError as err:
        raise CheckpointError(f"{side} has an invalid ANN spec: {err}") from err
    ann = build_model(spec, ann=True).to(device)
    shape = _input_shape(spec)
    structure = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    snn = convert_ann(
        ann, structure, meta["T"], conv["mode"], 2, conv["momentum"], conv["channel_wise"],
        conv["pre_spike_maxpool"], conv["event_input"], conv["chunk"],
    )
    snn.conversion = conv
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from err
    try:
        snn.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its conversion settings: {err}") from err
    if meta.get("trainable"):
        from .hybrid import make_trainable

        make_trainable(snn, **meta["trainable"])
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
