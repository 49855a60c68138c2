"""Safe model files: safetensors weights plus a JSON sidecar (builder spec, neuron config).

Loading never unpickles: backdoored models are exactly what users download from strangers.
File handling (atomic writes, the sidecar) lives in `io`; this module adds the model spec.
A model the user built (no spec) is saved as weights + neuron config + its wrapper's T and
encoding; loading it takes the user's constructor, never code named by the file.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn as nn

from .errors import one_line
from .io import FileFormatError, read_safetensors, read_sidecar, save_tensors
from .models.classifier import ENCODINGS
from .models.registry import MAX_T, ModelSpec, build_model
from .neurons import (
    check_neuron_values,
    get_neuron_params,
    is_lif,
    restore_neuron_params,
    spiking_nodes,
)
from .registry import get

FORMAT = "snnbackdoor-checkpoint/1"
USER_BUILT = "user_built"  # sidecar key of a model the user built: its wrapper, no spec
WRAPPER_FIELDS = ("T", "encoding")  # what a SpikingClassifier holds outside its state_dict
Builder = Callable[[], nn.Module]


class CheckpointError(FileFormatError):
    """A model file that is missing, corrupted or not written by snnbackdoor."""


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save weights (safetensors) and `<name>.json` with the spec (or, for a model the user
    built, its class, T and encoding) and the deployed neuron config."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        if not isinstance(model, nn.Module):
            raise CheckpointError(f"save_model needs a torch module, got {type(model).__name__}")
        meta = {
            USER_BUILT: wrapper_record(model),
            "neuron_params": get_neuron_params(model),
            "extra": extra or {},
        }
        return save_tensors(path, model.state_dict(), FORMAT, meta)
    meta = {
        "spec": spec.as_dict(),
        "neuron_params": get_neuron_params(model) if not spec.ann else {},
        "extra": extra or {},
    }
    return save_tensors(path, model.state_dict(), FORMAT, meta)


def wrapper_record(model: nn.Module) -> dict:
    """What a user-built model's file says about it besides tensors: its class name (for
    messages) and the SpikingClassifier's T and encoding, which change its behaviour."""
    record = {"class": type(model).__name__}
    record.update({key: getattr(model, key) for key in WRAPPER_FIELDS if hasattr(model, key)})
    return record


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


def _check_state(state: dict[str, torch.Tensor],
                 expected: dict[str, tuple[tuple[int, ...], torch.dtype]], what: str,
                 path: Path, hint: str = "the file is damaged or not ours") -> None:
    """Every tensor the model (`what`) needs is in the file with its shape and dtype, and
    no other; `hint` says what a mismatch means."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(f"{path} does not match {what} ({detail}); {hint}")
    for key, (shape, dtype) in expected.items():
        tensor = state[key]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise CheckpointError(
                f"{path}: tensor {key} is {tensor.dtype} {list(tensor.shape)}, {what} "
                f"needs {dtype} {list(shape)}; {hint}")


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
        if not is_lif(node):
            continue  # PLIF learns tau (its weights hold it), IF has none
        tau = saved[name]["tau"]
        try:
            check_neuron_values(None, tau if tau is not None else "missing")
        except ValueError as err:
            raise CheckpointError(f"{path}: neuron_params[{name!r}]: "
                                  f"{one_line(err, 200)}") from None
    restore_neuron_params(model, saved)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return read_safetensors(path, "cpu")
    except FileFormatError as err:
        raise CheckpointError(str(err)) from err


def resolve_builder(build: Builder | str) -> Builder:
    """The caller's constructor: a callable, or an importable `package.module:function` path
    the caller names (never one read from a model file)."""
    if callable(build):
        return build
    if not isinstance(build, str) or build.count(":") != 1:
        raise CheckpointError(f"build must be a callable returning the model or an importable "
                              f"'package.module:function' path, got {build!r}")
    module_name, attribute = build.split(":")
    try:
        builder = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"cannot import the builder {build!r}: {one_line(err)}") from None
    if not callable(builder):
        raise CheckpointError(f"the builder {build!r} is not callable")
    return builder


def _wrapper(meta: dict, path: Path) -> dict:
    """The sidecar's record of a user-built model, type- and range-checked."""
    record = meta.get(USER_BUILT)
    if not isinstance(record, dict) or not set(record) <= {"class", *WRAPPER_FIELDS} or not (
            isinstance(record.get("class"), str)):
        raise CheckpointError(f"{path}: the sidecar's {USER_BUILT} record must map class (and "
                              "T, encoding) to values; the file is damaged")
    T, encoding = record.get("T"), record.get("encoding")
    if "T" in record and (isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= MAX_T):
        raise CheckpointError(f"{path}: T={T!r} in the sidecar must be an integer in 1..{MAX_T}")
    if "encoding" in record and encoding not in ENCODINGS:
        raise CheckpointError(f"{path}: encoding={encoding!r} in the sidecar must be one of "
                              f"{list(ENCODINGS)}")
    return record


def _load_user_built(path: Path, meta: dict, build: Builder | str | None) -> nn.Module:
    """Weights and neuron config of a user-built model, loaded into `build()`; the built
    model's class, T, encoding and every tensor's shape and dtype must match the file."""
    record = _wrapper(meta, path)
    if build is None:
        raise CheckpointError(
            f"{path} holds a model you built yourself (a {record['class']}, no registered "
            "spec): pass load_model(path, build=<the function that builds it>) or an "
            "importable 'package.module:function' path")
    saved = _neuron_params(meta, path)
    state = _read_state(path)
    model = resolve_builder(build)()
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"build() returned {type(model).__name__}, not a torch module")
    built = wrapper_record(model)
    if built != record:
        raise CheckpointError(f"{path} holds a {record} but build() made a {built}; pass the "
                              "constructor the model was saved from")
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    _check_state(state, expected, "the model build() made", path,
                 "pass the constructor the model was saved from (or the file is damaged)")
    model.load_state_dict(state)
    _restore(model, saved, path)
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               build: Builder | str | None = None) -> nn.Module:
    """Rebuild the model from its sidecar spec and load the weights; never runs file code.
    The spec, the neuron config and every tensor's shape and dtype are checked before the
    model is built. A model the user built loads into `build()` (a callable, or an
    importable 'module:function' path given by the caller), checked the same way. The model
    comes back in eval mode (BatchNorm statistics stay fixed)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not" if path.is_dir() else "does not exist as"
        raise CheckpointError(f"model file {path} {what} a .safetensors file")
    meta = read_model_sidecar(path)
    if USER_BUILT in meta and "spec" not in meta:
        return _load_user_built(path, meta, build).to(device).eval()
    spec = spec_from_sidecar(meta, path)  # a build_model file: build= is not needed
    saved = _neuron_params(meta, path) if not spec.ann else {}
    state = _read_state(path)
    _check_state(state, _expected_state(spec), f"its spec {spec.name}", path,
                 "the file is damaged or its sidecar belongs to another model")
    model = build_model(spec)
    model.load_state_dict(state)
    if saved:
        _restore(model, saved, path)
    return model.to(device).eval()
