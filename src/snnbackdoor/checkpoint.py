"""Safe model files: safetensors weights plus a JSON sidecar (builder spec, neuron config).

Loading never unpickles: backdoored models are exactly what users download from strangers.
File handling (atomic writes, the sidecar) lives in `io`; this module adds the model spec.
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron as sj_neuron

from .errors import one_line
from .io import FileFormatError, read_safetensors, read_sidecar, save_tensors
from .models.registry import ModelSpec, build_model
from .neurons import (
    check_neuron_values,
    get_neuron_params,
    restore_neuron_params,
    spiking_nodes,
)
from .registry import get

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


def spec_from_sidecar(meta: dict, path: str | os.PathLike) -> ModelSpec:
    """The sidecar's model spec, type- and range-checked and naming a registered model,
    before any layer or tensor exists."""
    raw = meta.get("spec")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: the sidecar has no model spec mapping; the file is "
                              "not a snnbackdoor model")
    unknown = sorted(set(map(str, raw)) - {f.name for f in fields(ModelSpec)})
    if unknown or "name" not in raw:
        what = f"unknown keys {unknown}" if unknown else "no model name"
        raise CheckpointError(f"{path}: the sidecar's model spec has {what}; the file is "
                              "damaged or from another version")
    try:
        spec = ModelSpec(**raw)
        get("model", spec.name)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: {one_line(err)}; the file is damaged or not "
                              "a snnbackdoor model") from None
    return spec


def _expected_state(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shapes and dtypes of the model's state, built on the meta device (allocates nothing)."""
    with torch.device("meta"):
        model = build_model(ModelSpec(**spec.as_dict()))
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def _check_state(state: dict[str, torch.Tensor], spec: ModelSpec, path: Path) -> None:
    """Every tensor the model needs is in the file with its shape and dtype, and no other."""
    expected = _expected_state(spec)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(f"{path} does not match its spec {spec.name} ({detail}); "
                              "the file is damaged or its sidecar belongs to another model")
    for key, (shape, dtype) in expected.items():
        tensor = state[key]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise CheckpointError(
                f"{path}: tensor {key} is {tensor.dtype} {list(tensor.shape)}, its spec "
                f"{spec.name} needs {dtype} {list(shape)}; the file is damaged or not ours")


def _neuron_params(meta: dict, path: Path) -> dict:
    """The sidecar's deployed neuron config, checked like `set_neuron_params` values."""
    saved = meta.get("neuron_params") or {}
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: neuron_params in the sidecar must be a mapping of "
                              "layer -> {v_threshold, tau}; the file is damaged")
    for name, values in saved.items():
        if not isinstance(values, dict) or set(values) != {"v_threshold", "tau"}:
            raise CheckpointError(f"{path}: neuron_params[{name!r}] must hold v_threshold and "
                                  "tau; the file is damaged")
        tau = values["tau"]
        try:
            check_neuron_values(values["v_threshold"], None)
            if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))
                                    or not math.isfinite(tau)):
                raise ValueError(f"tau must be a finite number or null, got {tau!r}")
        except ValueError as err:
            raise CheckpointError(f"{path}: neuron_params[{name!r}]: "
                                  f"{one_line(err, 200)}") from None
    return saved


def _restore(model: nn.Module, saved: dict, path: Path) -> None:
    """Put back the deployed neuron config; its layers must be the model's spiking layers."""
    layers = {name: node for name, node in spiking_nodes(model)}
    if set(saved) != set(layers):
        raise CheckpointError(f"{path}: neuron_params name layers {sorted(saved)[:3]}, the "
                              f"model has {sorted(layers)[:3]}; the file is damaged")
    for name, node in layers.items():
        if type(node) is not sj_neuron.LIFNode:
            continue  # PLIF learns tau (its weights hold it), IF has none
        tau = saved[name]["tau"]
        try:
            check_neuron_values(None, tau if tau is not None else "missing")
        except ValueError as err:
            raise CheckpointError(f"{path}: neuron_params[{name!r}]: "
                                  f"{one_line(err, 200)}") from None
    restore_neuron_params(model, saved)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from its sidecar spec and load the weights; never runs file code.
    The spec, the neuron config and every tensor's shape and dtype are checked before the
    model is built. The model comes back in eval mode (BatchNorm statistics stay fixed)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not" if path.is_dir() else "does not exist as"
        raise CheckpointError(f"model file {path} {what} a .safetensors file")
    meta = read_model_sidecar(path)
    spec = spec_from_sidecar(meta, path)
    saved = _neuron_params(meta, path) if not spec.ann else {}
    try:
        state = read_safetensors(path, "cpu")
    except FileFormatError as err:
        raise CheckpointError(str(err)) from err
    _check_state(state, spec, path)
    model = build_model(spec)
    model.load_state_dict(state)
    if saved:
        _restore(model, saved, path)
    return model.to(device).eval()
