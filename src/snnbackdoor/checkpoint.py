"""Safe model files: safetensors weights plus a JSON sidecar (builder spec, neuron config).

Loading never unpickles: backdoored models are exactly what users download from strangers.
File handling (atomic writes, the sidecar) lives in `io`; this module adds the model spec.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from .io import FileFormatError, load_tensors, read_sidecar, save_tensors
from .models.registry import ModelSpec, build_model
from .neurons import get_neuron_params, restore_neuron_params

FORMAT = "snnbackdoor-checkpoint/1"


class CheckpointError(FileFormatError):
    """A model file that is missing, corrupted or not written by snnbackdoor."""


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save weights (safetensors) and `<name>.json` with the spec and the deployed config."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise CheckpointError("only models made by build_model (they carry a .spec) can be saved")
    meta = {
        "spec": spec.as_dict(),
        "neuron_params": get_neuron_params(model) if not spec.ann else {},
        "extra": extra or {},
    }
    return save_tensors(path, model.state_dict(), FORMAT, meta)


def read_model_sidecar(path: str | os.PathLike) -> dict:
    """The JSON sidecar of a model file, checked to be ours."""
    try:
        return read_sidecar(path, FORMAT)
    except FileFormatError as err:
        raise CheckpointError(str(err)) from err


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from its sidecar spec and load the weights; never runs file code.
    The model comes back in eval mode (a forward pass never updates BatchNorm statistics)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        state, meta = load_tensors(path, FORMAT, device)
    except FileFormatError as err:
        raise CheckpointError(str(err)) from err
    try:
        spec = ModelSpec(**meta["spec"])
    except (TypeError, KeyError) as err:
        raise CheckpointError(f"{path} has an invalid model spec in its sidecar: {err}") from err
    model = build_model(spec).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its spec {spec.name}: {err}") from err
    if meta.get("neuron_params"):
        restore_neuron_params(model, meta["neuron_params"])
    return model.eval()
