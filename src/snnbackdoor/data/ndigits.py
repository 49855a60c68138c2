"""`ndigits`: scikit-learn's 1,797 digits turned into DVS events the way N-MNIST was recorded.

Each 8x8 digit is rendered at 28x28 and padded to 34x34 (N-MNIST's sensor), then moved along
N-MNIST's triangle of three 100 ms saccades (scaled to fit the 3-pixel pad). A simulated DVS
pixel emits an ON (p=1) or OFF (p=0) event each time its log intensity moves one contrast
threshold away from its value at the pixel's last event. No download, fully deterministic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .bundle import DatasetBundle, DatasetInfo, stratified_split
from .digits import SPLIT_SEED, digit_images
from .events import (
    SPLIT_MODES,
    StrPath,
    cached_frames,
    default_cache_dir,
    frames_from_events,
    make_events,
    to_bundle,
)

SIZE = 34  # N-MNIST's sensor: a 28x28 digit plus a 3-pixel margin for the saccades
DIGIT_SIZE = 28
SENSOR_SIZE = (SIZE, SIZE, 2)
TEST_FRACTION = 0.2
CACHE_VERSION = "1"
# N-MNIST's triangle in pixels (tonic's `stabilize`): (0,0) -> (3.5,7) -> (7,0) -> (0,0)
NMNIST_TRIANGLE = ((0.0, 0.0), (3.5, 7.0), (7.0, 0.0), (0.0, 0.0))


@dataclass(frozen=True)
class SaccadeConfig:
    """How static images become events: sensor motion and DVS pixel model."""

    threshold: float = 0.2  # contrast threshold on log(I + log_eps)
    threshold_noise: float = 0.03  # relative per-pixel spread of the threshold (seeded)
    log_eps: float = 0.3  # dark level inside the log: keeps faint blur from firing
    amplitude: float = 3.0  # largest shift from the centre, pixels (the triangle is scaled)
    saccade_us: int = 100_000  # duration of each of the three saccades
    step_us: int = 1_000  # simulation step
    seed: int = 0
    batch_size: int = 128  # samples simulated together (cache-sized)


def saccade_path(config: SaccadeConfig) -> np.ndarray:
    """Image offsets (dx, dy) at every simulation step, ``[3 * steps + 1, 2]``, centred."""
    steps = config.saccade_us // config.step_us
    triangle = np.array(NMNIST_TRIANGLE) * (2 * config.amplitude / 7.0) - config.amplitude
    legs = [np.linspace(a, b, steps + 1)[1:] for a, b in zip(triangle[:-1], triangle[1:])]
    return np.concatenate([triangle[:1], *legs]).astype(np.float64)


def shift_images(padded: np.ndarray, dx: float, dy: float, pad: int, size: int) -> np.ndarray:
    """Images moved by a sub-pixel (dx, dy), bilinear: ``out[y, x] = I[y - dy, x - dx]``.

    ``padded`` is ``[N, size + 2 pad, size + 2 pad]`` with zero margins wider than the shift.
    """
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = np.float32(dx - ix), np.float32(dy - iy)
    r0, c0 = pad - iy, pad - ix
    rows = padded[:, r0 - 1 : r0 + size]  # rows r0-1 .. r0+size-1
    cols = (1 - fx) * rows[:, :, c0 : c0 + size] + fx * rows[:, :, c0 - 1 : c0 - 1 + size]
    return (1 - fy) * cols[:, 1:] + fy * cols[:, :-1]


def _thresholds(
    config: SaccadeConfig, sample_ids: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Per-sample, per-pixel contrast thresholds; sample i's depend only on (seed, i)."""
    noise = np.stack([np.random.default_rng((config.seed, int(i))).standard_normal(shape)
                      for i in sample_ids])
    factor = np.clip(1.0 + config.threshold_noise * noise, 0.5, 1.5)
    return (config.threshold * factor).astype(np.float32)


def _crossings(
    k: np.ndarray, sign: np.ndarray, ref_old: np.ndarray, C: np.ndarray,
    l_prev: np.ndarray, l_now: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Expand k threshold crossings per pixel; return (pixel index, fraction of the step)."""
    owner = np.repeat(np.arange(len(k)), k)
    first = np.cumsum(k) - k
    j = np.arange(len(owner)) - first[owner] + 1  # 1..k within a pixel
    level = ref_old[owner] + sign[owner] * j * C[owner]
    span = l_now[owner] - l_prev[owner]
    safe = np.where(span == 0, 1.0, span)
    return owner, np.clip((level - l_prev[owner]) / safe, 0.0, 1.0)


def _simulate_batch(
    images: np.ndarray, C: np.ndarray, path: np.ndarray, config: SaccadeConfig
) -> list[np.ndarray]:
    """Run the DVS model over a batch ``[B, H, W]``; return each sample's time-sorted events."""
    size = images.shape[-1]
    pad = int(np.ceil(np.abs(path).max())) + 2
    padded = np.pad(images.astype(np.float32), ((0, 0), (pad, pad), (pad, pad)))
    eps = np.float32(config.log_eps)
    l_prev = np.log(shift_images(padded, *path[0], pad, size) + eps)
    ref = l_prev.copy()
    chunks = []
    for step in range(1, len(path)):
        l_now = np.log(shift_images(padded, *path[step], pad, size) + eps)
        diff = l_now - ref
        k = np.floor(np.abs(diff) / C).astype(np.int64)
        n, y, x = np.nonzero(k)
        if len(n):
            kk, sign, c = k[n, y, x], np.sign(diff[n, y, x]), C[n, y, x]
            owner, frac = _crossings(kk, sign, ref[n, y, x], c, l_prev[n, y, x], l_now[n, y, x])
            ref[n, y, x] += sign * kk * c
            t = np.rint((step - 1 + frac) * config.step_us).astype(np.int64)
            chunks.append((n[owner], x[owner], y[owner], t, (sign[owner] > 0).astype(np.int8)))
        l_prev = l_now
    return _group_by_sample(chunks, len(images))


def _group_by_sample(chunks: list[tuple[np.ndarray, ...]], count: int) -> list[np.ndarray]:
    """Split concatenated (sample, x, y, t, p) columns into per-sample time-sorted arrays."""
    if not chunks:
        return [make_events([], [], [], []) for _ in range(count)]
    n, x, y, t, p = (np.concatenate(column) for column in zip(*chunks))
    order = np.lexsort((t, n))
    events = make_events(x[order], y[order], t[order], p[order])
    return np.split(events, np.cumsum(np.bincount(n, minlength=count))[:-1])


def saccade_events(
    images: np.ndarray,
    config: SaccadeConfig | None = None,
    sample_ids: Sequence[int] | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Events (fields x, y, t, p) of static images ``[N, H, W]`` in [0,1] seen through saccades.

    ``sample_ids`` name the samples for the threshold noise, so a sample's events never
    depend on which other samples are simulated with it.
    """
    config = config or SaccadeConfig()
    images = np.asarray(images, dtype=np.float32)
    ids = np.arange(len(images)) if sample_ids is None else np.asarray(sample_ids)
    path = saccade_path(config)
    events: list[np.ndarray] = []
    starts = range(0, len(images), config.batch_size)
    for start in tqdm(starts, desc="saccades", unit="batch", disable=not progress):
        stop = start + config.batch_size
        C = _thresholds(config, ids[start:stop], images.shape[1:])
        events += _simulate_batch(images[start:stop], C, path, config)
    return events


def _balanced_subset(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """The first ``limit`` samples taken round-robin over classes (all when None)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[members] = np.arange(len(members))
    return np.sort(np.lexsort((labels, rank))[:limit])


def ndigits_images(limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digits at 34x34 ``[N, 34, 34]`` in [0,1], labels, and their scikit-learn indices."""
    images, labels = digit_images(DIGIT_SIZE)
    index = _balanced_subset(labels, limit)
    margin = (SIZE - DIGIT_SIZE) // 2
    padded = np.pad(images[:, 0].numpy(), ((0, 0), (margin, margin), (margin, margin)))
    return padded[index], labels[index], index


def ndigits_events(
    indices: Sequence[int] | None = None,
    config: SaccadeConfig | None = None,
    progress: bool = True,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Raw events and labels of the digits at ``indices`` (scikit-learn order; all by default).

    ``bundle.info.extra["indices"]`` of ``load_ndigits`` gives each split's indices.
    """
    images, labels, all_index = ndigits_images()
    index = all_index if indices is None else np.asarray(indices, dtype=np.int64)
    events = saccade_events(images[index], config, sample_ids=index, progress=progress)
    return events, labels[index]


def _cache_name(T: int, split_by: str, config: SaccadeConfig, limit: int | None) -> str:
    settings = json.dumps({"v": CACHE_VERSION, **asdict(config)}, sort_keys=True)
    key = hashlib.sha1(settings.encode()).hexdigest()[:10]
    return f"ndigits_T{T}_{split_by}_{key}_{'all' if limit is None else limit}.npz"


def _build_frames(
    index: np.ndarray, T: int, split_by: str, config: SaccadeConfig
) -> tuple[np.ndarray, np.ndarray]:
    events, labels = ndigits_events(index, config)
    frames = np.stack([frames_from_events(e, SENSOR_SIZE, T, split_by) for e in events])
    return frames, labels


def load_ndigits(
    T: int = 16,
    split_by: str = "number",
    val_fraction: float = 0.15,
    seed: int = 0,
    cache_dir: StrPath | None = None,
    limit: int | None = None,
    config: SaccadeConfig | None = None,
) -> DatasetBundle:
    """The embedded event digits as frames ``[N, T, 2, 34, 34]`` (cached), fixed splits.

    Test is the same fixed stratified 20% as the image `digits`; validation is carved from
    train with ``seed``. ``limit`` keeps a class-balanced subset (for tests and quick runs).
    """
    if split_by not in SPLIT_MODES:
        raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    if limit is not None and limit < 30:
        raise ValueError(f"limit must be >= 30 (3 per class for train/val/test), got {limit}")
    config = config or SaccadeConfig()
    _, labels, index = ndigits_images(limit)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    shape = (T, 2, SIZE, SIZE)
    x, y = cached_frames(cache / _cache_name(T, split_by, config, limit), shape,
                         lambda: _build_frames(index, T, split_by, config))
    rest, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    train_part, val_part = stratified_split(labels[rest], val_fraction, seed)
    info = DatasetInfo(
        name="ndigits",
        kind="events",
        shape=shape,
        num_classes=10,
        sensor_size=SENSOR_SIZE,
        extra={
            "classes": [str(d) for d in range(10)],
            "split_by": split_by,
            "saccades": asdict(config),
            "indices": {"train": index[rest[train_part]].tolist(),
                        "val": index[rest[val_part]].tolist(), "test": index[test].tolist()},
        },
    )
    # to_bundle carves validation with the same stratified_split call as above
    return to_bundle((x[rest], y[rest]), (x[test], y[test]), info, val_fraction, seed)
