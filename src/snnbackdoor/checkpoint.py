"""Safe model files: safetensors weights plus a JSON sidecar (builder spec, neuron config).

Loading never unpickles: backdoored models are exactly what users download from strangers.
Every write goes to a temporary file first and is renamed, so a crash leaves no half file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .models.registry import ModelSpec, build_model
from .neurons import get_neuron_params, restore_neuron_params

FORMAT = "snnbackdoor-checkpoint/1"


class CheckpointError(ValueError):
    """A model file that is missing, corrupted or not written by snnbackdoor."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save weights (safetensors) and `<name>.json` with the spec and the deployed config."""
    path = Path(path)
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise CheckpointError("only models made by build_model (they carry a .spec) can be saved")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
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
        "spec": spec.as_dict(),
        "neuron_params": get_neuron_params(model) if not spec.ann else {},
        "extra": extra or {},
    }
    atomic_write_json(sidecar_path(path), sidecar)
    return path


def read_json_checked(path: str | os.PathLike, fmt: str) -> dict:
    """A JSON sidecar, checked to exist, parse, and carry our `format` tag."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing: a snnbackdoor file needs its JSON sidecar")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the file is corrupted") from err
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{path} was not written by snnbackdoor (format {fmt} expected)")
    return meta


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON sidecar of a model file, checked to be ours."""
    return read_json_checked(sidecar_path(path), FORMAT)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from its sidecar spec and load the weights; never runs file code."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    meta = read_sidecar(path)
    try:
        spec = ModelSpec(**meta["spec"])
    except TypeError as err:
        raise CheckpointError(f"{sidecar_path(path)} has an invalid model spec: {err}") from err
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); it is corrupted or not ours. "
            "snnbackdoor never unpickles model files."
        ) from err
    model = build_model(spec).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its spec {spec.name}: {err}") from err
    if meta.get("neuron_params"):
        restore_neuron_params(model, meta["neuron_params"])
    return model
