"""Event data: events -> frames, readers of N-MNIST, DVS128 Gesture and CIFAR10-DVS.

Events are tonic-style structured arrays with fields ``x, y, t, p`` (t in microseconds,
p = 1 ON, 0 OFF). Frames are ``[T, P, H, W]`` float32 per-pixel event counts per polarity,
binned like SpikingJelly's ``split_by='number' | 'time'``. Datasets are read from a user-given
root in tonic's on-disk layouts; nothing is ever downloaded, no tonic dataset is instantiated.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .bundle import DatasetBundle, DatasetInfo, Split, stratified_split
from .readers import DatasetLayoutError

StrPath = str | os.PathLike

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])
SPLIT_MODES = ("number", "time")
CACHE_VERSION = "1"  # bump when framing or decoding changes, so old caches are not reused
CIFAR10DVS_TEST_FRACTION = 0.1

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


def make_events(x, y, t, p) -> np.ndarray:
    """A structured event array (fields x, y, t, p) from four equal-length sequences."""
    events = np.empty(len(x), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


# --------------------------------------------------------------------------- decoders


def read_nmnist_bin(path: StrPath) -> np.ndarray:
    """Decode one N-MNIST ``.bin`` (40-bit ATIS events) with tonic's own decoder."""
    from tonic.io import read_mnist_file

    return read_mnist_file(str(path), dtype=EVENT_DTYPE)


def read_gesture_npy(path: StrPath) -> np.ndarray:
    """Decode one sample of tonic's preprocessed DVS128 Gesture: ``[N, 4]`` rows x, y, p, t(ms)."""
    raw = np.load(path, allow_pickle=False)
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise ValueError(f"{path}: expected an [N, 4] array (x, y, p, t in ms), got {raw.shape}")
    t_us = np.rint(raw[:, 3].astype(np.float64) * 1000.0).astype(np.int64)
    return make_events(raw[:, 0], raw[:, 1], t_us, raw[:, 2] > 0)


def read_cifar10dvs_aedat(path: StrPath) -> np.ndarray:
    """Decode one original CIFAR10-DVS ``.aedat`` (AER-DAT 2.0, big-endian address/time pairs).

    tonic's header and event readers parse the file; the address is decoded as SpikingJelly
    does (x = 127 - bits 8-14, y = 127 - bits 1-7, ON = bit 0 clear) so images are upright.
    """
    from tonic.io import get_aer_events_from_file, read_aedat_header_from_file

    version, data_start, _ = read_aedat_header_from_file(str(path))
    if not 2 <= version < 3:
        raise ValueError(f"{path}: CIFAR10-DVS .aedat files are AER-DAT 2.x, found {version}")
    raw = get_aer_events_from_file(str(path), version, data_start)
    address = raw["address"].astype(np.int64)
    x = 127 - ((address >> 8) & 0x7F)
    y = 127 - ((address >> 1) & 0x7F)
    return make_events(x, y, raw["timeStamp"].astype(np.int64), 1 - (address & 1))


def read_cifar10dvs_aedat4(path: StrPath) -> np.ndarray:
    """Decode one tonic-converted CIFAR10-DVS ``.aedat4`` with tonic (needs the `aedat` package)."""
    try:
        import aedat  # noqa: F401  (tonic.io.read_aedat4 imports it)
    except ImportError as error:
        raise ImportError(
            f"{path} is AEDAT4, which tonic decodes with the `aedat` package: install it "
            "(pip install aedat) or use the original CIFAR10-DVS .aedat files."
        ) from error
    from tonic.io import read_aedat4

    raw = read_aedat4(str(path))
    polarity = raw["on"] if "on" in raw.dtype.names else raw["p"]
    return make_events(raw["x"], raw["y"], raw["t"], polarity)


def read_cifar10dvs(path: StrPath) -> np.ndarray:
    """Decode a CIFAR10-DVS sample, ``.aedat`` (original) or ``.aedat4`` (tonic's conversion)."""
    if str(path).endswith(".aedat4"):
        return read_cifar10dvs_aedat4(path)
    return read_cifar10dvs_aedat(path)


# --------------------------------------------------------------------------- layouts

GESTURE_CLASSES = (
    "hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
    "right arm counter-clockwise", "left arm clockwise", "left arm counter-clockwise",
    "arm roll", "air drums", "air guitar", "other gestures",
)
CIFAR10DVS_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

EVENT_LAYOUTS: dict[str, str] = {
    "nmnist": """\
<root>/                          (or pass NMNIST/ itself; tonic's layout)
└── NMNIST/
    ├── Train/                   from train.zip
    │   ├── 0/  00002.bin, ...   40-bit ATIS events, one file per sample
    │   ├── ...
    │   └── 9/
    └── Test/                    from test.zip
        ├── 0/ ... 9/""",
    "dvsgesture": """\
<root>/                          (or pass DVSGesture/ itself; tonic's preprocessed layout)
└── DVSGesture/
    ├── ibmGestureTrain/         from ibmGestureTrain.tar.gz
    │   ├── user01_fluorescent/  0.npy, 1.npy, ..., 10.npy  ([N, 4] rows x, y, p, t in ms)
    │   └── ...
    └── ibmGestureTest/          from ibmGestureTest.tar.gz
        └── user24_fluorescent/ ...""",
    "cifar10dvs": """\
<root>/                          (or pass CIFAR10DVS/ itself; tonic's layout)
└── CIFAR10DVS/
    ├── airplane/  cifar10_airplane_0.aedat, ...   (original AER-DAT 2.0 .aedat files;
    ├── automobile/                                 tonic's .aedat4 need `pip install aedat`)
    ├── bird/ cat/ deer/ dog/ frog/ horse/ ship/
    └── truck/
    Train/test: per class, files in natural sort order; the last 10% are test.""",
}


@dataclass(frozen=True)
class EventDatasetSpec:
    """How one event dataset sits on disk and how its samples decode."""

    name: str
    folder: str  # tonic's folder name under the root
    sensor_size: tuple[int, int, int]  # (W, H, P)
    classes: tuple[str, ...]
    lister: Callable[[Path, str], list[tuple[Path, int]]]  # (base, split) -> [(file, label)]
    reader: Callable[[StrPath], np.ndarray]
    markers: tuple[str, ...]  # sub-folders that identify the base folder itself


def _natural_key(path: Path) -> list:
    """Sort key that orders ``name_2`` before ``name_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _list_nmnist(base: Path, split: str) -> list[tuple[Path, int]]:
    folder = base / ("Train" if split == "train" else "Test")
    missing = [str(d) for d in range(10) if not any((folder / str(d)).glob("*.bin"))]
    if missing:
        raise _layout_error("nmnist", base, f"no .bin files in {folder}/<digit> for digits "
                            f"{', '.join(missing)}")
    return [(path, digit) for digit in range(10)
            for path in sorted((folder / str(digit)).glob("*.bin"), key=_natural_key)]


def _list_gesture(base: Path, split: str) -> list[tuple[Path, int]]:
    folder = base / ("ibmGestureTrain" if split == "train" else "ibmGestureTest")
    files = sorted(folder.glob("*/*.npy"), key=lambda p: (p.parent.name, _natural_key(p)))
    samples = [(path, int(path.stem)) for path in files if path.stem.isdigit()]
    if not samples:
        raise _layout_error("dvsgesture", base, f"no <user_lighting>/<label>.npy files in {folder}")
    return samples


def _cifar10dvs_class_files(base: Path, name: str) -> list[Path]:
    files = [*(base / name).glob("*.aedat"), *(base / name).glob("*.aedat4")]
    return sorted(files, key=_natural_key)


def _list_cifar10dvs(base: Path, split: str) -> list[tuple[Path, int]]:
    """Per class, the first 90% of the naturally sorted files are train, the last 10% test."""
    per_class = {name: _cifar10dvs_class_files(base, name) for name in CIFAR10DVS_CLASSES}
    short = [name for name, files in per_class.items() if len(files) < 2]
    if short:
        raise _layout_error("cifar10dvs", base, "fewer than 2 .aedat files (one train, one test) "
                            f"in {', '.join(short)}")
    samples = []
    for label, files in enumerate(per_class.values()):
        n_test = max(1, int(round(CIFAR10DVS_TEST_FRACTION * len(files))))
        chosen = files[:-n_test] if split == "train" else files[-n_test:]
        samples += [(path, label) for path in chosen]
    return samples


EVENT_DATASETS: dict[str, EventDatasetSpec] = {
    "nmnist": EventDatasetSpec("nmnist", "NMNIST", (34, 34, 2),
                               tuple(str(d) for d in range(10)), _list_nmnist,
                               read_nmnist_bin, ("Train", "Test")),
    "dvsgesture": EventDatasetSpec("dvsgesture", "DVSGesture", (128, 128, 2), GESTURE_CLASSES,
                                   _list_gesture, read_gesture_npy,
                                   ("ibmGestureTrain", "ibmGestureTest")),
    "cifar10dvs": EventDatasetSpec("cifar10dvs", "CIFAR10DVS", (128, 128, 2), CIFAR10DVS_CLASSES,
                                   _list_cifar10dvs, read_cifar10dvs, CIFAR10DVS_CLASSES),
}


def _spec(name: str) -> EventDatasetSpec:
    if name not in EVENT_DATASETS:
        raise KeyError(f"unknown event dataset {name!r}; known: {', '.join(EVENT_DATASETS)}")
    return EVENT_DATASETS[name]


def _layout_error(name: str, root: StrPath | None, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{name} data not usable under {root}: {problem}.\n"
        f"Expected layout:\n{EVENT_LAYOUTS[name]}\n"
        "Nothing is downloaded at run time: fetch the files yourself, then pass the folder "
        "that holds them with --set dataset.root=PATH."
    )


def _base_folder(spec: EventDatasetSpec, root: StrPath | None) -> Path:
    """The folder holding the splits: ``root/<tonic folder>``, or ``root`` itself."""
    if root is None or str(root) == "":
        raise _layout_error(spec.name, root, "no dataset root was given")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise _layout_error(spec.name, root, f"folder {path} does not exist")
    nested = path / spec.folder
    if nested.is_dir():
        return nested
    if any((path / marker).is_dir() for marker in spec.markers):
        return path
    raise _layout_error(spec.name, root, f"no {spec.folder}/ folder in {path}")


def list_event_files(name: str, root: StrPath, split: str) -> list[tuple[Path, int]]:
    """The sample files of ``split`` ('train' or 'test') with their labels, in a fixed order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = _spec(name)
    return spec.lister(_base_folder(spec, root), split)


def read_event_file(name: str, path: StrPath) -> np.ndarray:
    """The raw events of one sample file of dataset ``name`` (fields x, y, t, p)."""
    return _spec(name).reader(path)


def find_event_dataset(name: str, root: StrPath | None) -> bool:
    """Whether ``root`` holds a complete copy of event dataset ``name`` (both splits)."""
    try:
        for split in ("train", "test"):
            list_event_files(name, root, split)
    except DatasetLayoutError:
        return False
    return True


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
        x[i] = frames_from_events(spec.reader(path), spec.sensor_size, T, split_by)
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
