"""Event data: events -> frames, cached per split, as a DatasetBundle (the files: event_files).

Events are tonic-style structured arrays with fields ``x, y, t, p`` (t in microseconds,
p = 1 ON, 0 OFF). Frames are ``[T, P, H, W]`` float32 per-pixel event counts per polarity,
binned like SpikingJelly's ``split_by='number' | 'time'``. Datasets are read from a user-given
root in tonic's on-disk layouts; nothing is ever downloaded, no tonic dataset is instantiated.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .bundle import DatasetBundle, DatasetInfo, Split, stratified_split
from .event_files import (  # noqa: F401  (re-exported: the readers' public names)
    CIFAR10DVS_CLASSES,
    CIFAR10DVS_TEST_FRACTION,
    EVENT_DATASETS,
    EVENT_DTYPE,
    EVENT_LAYOUTS,
    GESTURE_CLASSES,
    EventDatasetSpec,
    StrPath,
    _base_folder,
    _spec,
    find_event_dataset,
    list_event_files,
    make_events,
    read_cifar10dvs,
    read_cifar10dvs_aedat,
    read_cifar10dvs_aedat4,
    read_event_file,
    read_gesture_npy,
    read_nmnist_bin,
    read_recording,
    verify_event_dataset,
)

SPLIT_MODES = ("number", "time")
CACHE_VERSION = "1"  # bump when framing or decoding changes, so old caches are not reused

# --------------------------------------------------------------------------- frames


def frames_from_events(
    events: np.ndarray,
    sensor_size: tuple[int, int, int],
    T: int,
    split_by: str = "number",
) -> np.ndarray:
    """Bin events into T frames ``[T, P, H, W]`` of counts, SpikingJelly style.

    ``number``: T slices of ``N // T`` consecutive events each, the last takes the remainder.
    ``time``: T windows of ``(t_max - t_min) // T`` microseconds, the last runs to ``t_max``.
    ``sensor_size`` is tonic's ``(W, H, P)``; events outside it are dropped.
    """
    if split_by not in SPLIT_MODES:
        raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    width, height, polarities = (int(s) for s in sensor_size)
    frames = np.zeros((T, polarities, height, width), dtype=np.float32)
    if len(events) == 0:
        return frames
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    p = (events["p"].astype(np.int64) > 0).astype(np.int64) if polarities > 1 else 0 * x
    bins = _bin_index(events, T, split_by)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    flat = ((bins * polarities + p) * height + y) * width + x
    counts = np.bincount(flat[inside], minlength=frames.size)
    return counts.astype(np.float32).reshape(frames.shape)


def _bin_index(events: np.ndarray, T: int, split_by: str) -> np.ndarray:
    """Frame index of every event (events in recording order, time-sorted)."""
    n = len(events)
    if split_by == "number":
        per_frame = n // T
        if per_frame == 0:  # fewer events than frames: SpikingJelly puts them all in the last
            return np.full(n, T - 1, dtype=np.int64)
        return np.minimum(np.arange(n, dtype=np.int64) // per_frame, T - 1)
    t = events["t"].astype(np.int64)
    t0 = int(t.min())
    window = max((int(t.max()) - t0) // T, 1)
    return np.minimum((t - t0) // window, T - 1)


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$SNNBACKDOOR_CACHE`` if set, else ``~/.cache/snnbackdoor``."""
    return Path(os.environ.get("SNNBACKDOOR_CACHE") or "~/.cache/snnbackdoor").expanduser()


def _compact(x: np.ndarray) -> np.ndarray:
    """Counts in the smallest unsigned dtype that holds them exactly (float32 as a fallback)."""
    if x.size and (x.min() < 0 or not np.array_equal(x, np.floor(x))):
        return x.astype(np.float32)
    top = float(x.max()) if x.size else 0.0
    for dtype in (np.uint8, np.uint16):
        if top <= np.iinfo(dtype).max:
            return x.astype(dtype)
    return x.astype(np.float32)


def save_frames_cache(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write frames and labels to ``path`` (.npz) atomically: temp file, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, x=_compact(x), y=y.astype(np.int64))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_frames_cache(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Frames (float32) and labels from ``path``, or None if absent, corrupt or of another shape."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            x, y = cache["x"], cache["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape) or len(x) != len(y):
        return None
    return x.astype(np.float32), y.astype(np.int64)


def cached_frames(
    path: Path, shape: tuple[int, ...], build: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Frames cached at ``path``, else built by ``build()`` and cached; corrupt caches rebuild."""
    cached = load_frames_cache(path, shape)
    if cached is not None:
        return cached
    x, y = build()
    try:
        save_frames_cache(path, x, y)
    except OSError as error:
        warnings.warn(f"could not cache frames at {path} ({error}); pass a writable cache_dir "
                      "or set SNNBACKDOOR_CACHE to avoid framing again next time.", stacklevel=2)
    return x.astype(np.float32, copy=False), y.astype(np.int64)


def frames_of_files(
    spec: EventDatasetSpec, files: Sequence[tuple[Path, int]], T: int, split_by: str, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and frame every file (tqdm progress) into ``[N, T, P, H, W]`` and labels."""
    width, height, polarities = spec.sensor_size
    x = np.zeros((len(files), T, polarities, height, width), dtype=np.float32)
    for i, (path, _) in enumerate(tqdm(files, desc=desc, unit="sample")):
        x[i] = frames_from_events(read_recording(spec, path), spec.sensor_size, T, split_by)
    return x, np.array([label for _, label in files], dtype=np.int64)


def _cache_path(
    cache_dir: Path, name: str, files: Sequence[tuple[Path, int]], T: int, split_by: str,
    split: str,
) -> Path:
    """Cache file keyed by name, T, split_by and the files read (paths and sizes)."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for path, label in files:
        digest.update(f"|{path.resolve()}:{path.stat().st_size}:{label}".encode())
    return cache_dir / f"{name}_T{T}_{split_by}_{digest.hexdigest()[:10]}_{split}.npz"


# --------------------------------------------------------------------------- bundle


def to_bundle(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    info: DatasetInfo,
    val_fraction: float,
    seed: int,
) -> DatasetBundle:
    """Carve a stratified validation split from train and wrap everything as a bundle."""
    rest, held = stratified_split(train[1], val_fraction, seed)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))

    return DatasetBundle(
        train=split(train[0][rest], train[1][rest]),
        val=split(train[0][held], train[1][held]),
        test=split(*test),
        info=info,
    )


def load_event_dataset(
    name: str,
    root: StrPath | None,
    T: int = 16,
    split_by: str = "number",
    val_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: StrPath | None = None,
) -> DatasetBundle:
    """N-MNIST, DVS128 Gesture or CIFAR10-DVS from ``root`` as frames ``[N, T, 2, H, W]``.

    Frames are cached per split under ``cache_dir`` (default ``default_cache_dir()``), keyed by
    name, T, split_by and the files; validation is carved from train with ``stratified_split``.
    """
    spec = _spec(name)
    if split_by not in SPLIT_MODES:
        raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    base = _base_folder(spec, root)
    files = {split: spec.lister(base, split) for split in ("train", "test")}  # checks layout
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    width, height, polarities = spec.sensor_size
    shape = (T, polarities, height, width)
    arrays = {
        split: cached_frames(
            _cache_path(cache, name, listed, T, split_by, split),
            shape,
            partial(frames_of_files, spec, listed, T, split_by, f"framing {name} {split}"),
        )
        for split, listed in files.items()
    }
    info = DatasetInfo(
        name=name,
        kind="events",
        shape=shape,
        num_classes=len(spec.classes),
        sensor_size=spec.sensor_size,
        extra={"classes": list(spec.classes), "split_by": split_by, "root": str(base)},
    )
    return to_bundle(arrays["train"], arrays["test"], info, val_fraction, seed)
