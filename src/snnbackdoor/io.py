"""The one place files are written and read back: atomic writes, JSON, CSV, and tensor files
(safetensors weights + a JSON sidecar with a format tag).

Every write goes to a temporary file in the same folder and is renamed, so a crash or Ctrl-C
never leaves half a file; files get the user's umask (normally world-readable), so a results
folder on a shared filesystem is readable by collaborators. Tensor files are never unpickled.
This module imports only `errors` of the package.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError

MAX_JSON_DEPTH = 64


class FileFormatError(UserError, ValueError):
    """A file that is missing, corrupted, of the wrong shape, or not written by snnbackdoor."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, then rename the temp file over `path` (same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def json_safe(obj):
    """Replace NaN/inf by None (and tuples by lists) so JSON stays valid."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2) + "\n").encode())


def _depth(obj, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(obj, dict):
        return max([_depth(v, limit, level + 1) for v in obj.values()], default=level)
    if isinstance(obj, list):
        return max([_depth(v, limit, level + 1) for v in obj], default=level)
    return level


def read_json(path: str | os.PathLike, expect: type = dict, what: str = "file"):
    """A JSON file checked to parse, to be of type `expect` and not absurdly deep."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{what} {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise FileFormatError(f"{what} {path} is not valid JSON ({err}); it is corrupted: "
                              "delete it or restore it") from err
    if not isinstance(data, expect) or _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise FileFormatError(f"{what} {path} does not hold a JSON {expect.__name__} of the "
                              "expected shape; it is corrupted: delete it or restore it")
    return data


def csv_text(header: list[str], rows: Iterable[Mapping]) -> str:
    """CSV with a header; floats as %.6g, missing or non-finite values as `nan`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = []
        for key in header:
            value = row.get(key)
            if isinstance(value, float):
                value = "nan" if not math.isfinite(value) else f"{value:.6g}"
            values.append("nan" if value is None else value)
        writer.writerow(values)
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, header: list[str], rows: Iterable[Mapping]) -> Path:
    return atomic_write_text(path, csv_text(header, rows))


# --------------------------------------------------------------------------- tensor files


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], fmt: str,
                 meta: Mapping) -> Path:
    """Weights as safetensors at `path`, `meta` (+ the format tag) as `<path>.json`."""
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": fmt}))
    atomic_write_json(sidecar_path(path), {"format": fmt, **meta})
    return Path(path)


def read_sidecar(path: str | os.PathLike, fmt: str) -> dict:
    """The JSON sidecar of a tensor file, checked to exist, parse and carry format `fmt`."""
    side = sidecar_path(path)
    if not side.exists():
        raise FileFormatError(f"{side} is missing: a snnbackdoor file needs its JSON sidecar")
    meta = read_json(side, dict, "sidecar")
    if meta.get("format") != fmt:
        raise FileFormatError(f"{side} was not written by snnbackdoor ({fmt} expected)")
    return meta


def read_safetensors(path: str | os.PathLike,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no sidecar); never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"file {path} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise FileFormatError(
            f"{path} is not a readable safetensors file ({err}); it is corrupted or not ours. "
            "snnbackdoor never unpickles model files."
        ) from err


def load_tensors(path: str | os.PathLike, fmt: str,
                 device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, sidecar) of a file written by `save_tensors`; never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"file {path} does not exist")
    meta = read_sidecar(path, fmt)
    return read_safetensors(path, device), meta
