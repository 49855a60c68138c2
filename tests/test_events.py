"""Event data: framing, the real on-disk formats (tiny files written here), and ndigits."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from snnbackdoor.data.events import (
    EVENT_LAYOUTS,
    find_event_dataset,
    frames_from_events,
    list_event_files,
    load_event_dataset,
    make_events,
    read_cifar10dvs,
    read_nmnist_bin,
)
from snnbackdoor.data.ndigits import (
    SaccadeConfig,
    load_ndigits,
    ndigits_events,
    ndigits_images,
    saccade_events,
    saccade_path,
    shift_images,
)
from snnbackdoor.data.readers import DatasetLayoutError

# --------------------------------------------------------------------------- helpers


def expected_frames(rows, T: int, size: int, bins) -> np.ndarray:
    """Frames [T, 2, size, size] from (x, y, p) rows and each row's frame index."""
    frames = np.zeros((T, 2, size, size), dtype=np.float32)
    for (x, y, p), b in zip(rows, bins):
        frames[b, p, y, x] += 1
    return frames


def assert_bundle_matches(bundle, expected: dict[int, list[np.ndarray]], splits) -> None:
    """Every sample of `splits` equals one expected frame of its label, each used once."""
    pool = {label: [f.copy() for f in frames] for label, frames in expected.items()}
    for split in splits:
        for x, y in zip(split.x.numpy(), split.y.tolist()):
            hits = [i for i, f in enumerate(pool[y]) if np.array_equal(f, x)]
            assert hits, f"a label-{y} sample matches no expected frame"
            pool[y].pop(hits[0])
    assert all(not rest for rest in pool.values())


def nmnist_bytes(events) -> bytes:
    """N-MNIST's 40-bit records: x, y, p<<7 | t[22:16], t[15:8], t[7:0]."""
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def aedat2_bytes(events) -> bytes:
    """An AER-DAT 2.0 file in CIFAR10-DVS's address coding (inverse of SpikingJelly's decode)."""
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
    body = b"".join(
        struct.pack(">II", ((127 - x) << 8) | ((127 - y) << 1) | (1 - p), t)
        for x, y, t, p in events
    )
    return header + body


# --------------------------------------------------------------------------- frames


def test_frames_split_by_number_conserves_and_counts() -> None:
    rng = np.random.default_rng(0)
    n = 103
    events = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n),
                         np.sort(rng.integers(0, 10**6, n)), rng.integers(0, 2, n))
    frames = frames_from_events(events, (34, 34, 2), T=4, split_by="number")
    assert frames.shape == (4, 2, 34, 34) and frames.dtype == np.float32
    assert frames.sum() == n
    assert frames.sum(axis=(1, 2, 3)).tolist() == [25, 25, 25, 28]  # last takes the remainder
    assert frames[:, 1].sum() == events["p"].sum()


def test_frames_split_by_time_and_edge_cases() -> None:
    events = make_events([0, 1, 2, 3, 4], [0, 0, 0, 0, 0], [0, 10, 50, 99, 100], [1, 0, 1, 0, 1])
    frames = frames_from_events(events, (5, 1, 2), T=2, split_by="time")  # window 50 us
    assert frames.sum(axis=(1, 2, 3)).tolist() == [2, 3]
    assert frames[0, 1, 0, 0] == 1 and frames[0, 0, 0, 1] == 1 and frames[1, 1, 0, 4] == 1
    few = frames_from_events(events[:3], (5, 1, 2), T=4, split_by="number")
    assert few[3].sum() == 3 and few[:3].sum() == 0  # fewer events than frames: all in the last
    assert frames_from_events(events[:0], (5, 1, 2), T=3).sum() == 0
    with pytest.raises(ValueError):
        frames_from_events(events, (5, 1, 2), T=2, split_by="bogus")


# --------------------------------------------------------------------------- N-MNIST


def nmnist_events(digit: int, index: int) -> list[tuple[int, int, int, int]]:
    """Four (x, y, t, p) events unique to a file; one timestamp needs all 23 bits."""
    return [(digit, index, 5, 1), (33, digit, 300, 0), (index, 2, 70_000, 1), (7, 7, 8_000_000, 0)]


def write_nmnist(root: Path, per_split: dict[str, int]) -> dict[str, dict[int, list]]:
    written: dict[str, dict[int, list]] = {}
    for split, count in per_split.items():
        written[split] = {}
        for digit in range(10):
            folder = root / "NMNIST" / split / str(digit)
            folder.mkdir(parents=True)
            written[split][digit] = []
            for index in range(count):
                events = nmnist_events(digit, index)
                (folder / f"{index:05d}.bin").write_bytes(nmnist_bytes(events))
                written[split][digit].append(events)
    return written


def test_nmnist_bin_decodes_exactly(tmp_path: Path) -> None:
    events = nmnist_events(3, 1)
    path = tmp_path / "00001.bin"
    path.write_bytes(nmnist_bytes(events))
    decoded = read_nmnist_bin(path)
    assert decoded["x"].tolist() == [e[0] for e in events]
    assert decoded["y"].tolist() == [e[1] for e in events]
    assert decoded["t"].tolist() == [e[2] for e in events]
    assert decoded["p"].tolist() == [e[3] for e in events]


def test_nmnist_frames_from_disk(tmp_path: Path) -> None:
    written = write_nmnist(tmp_path, {"Train": 2, "Test": 1})
    bundle = load_event_dataset("nmnist", tmp_path, T=2, cache_dir=tmp_path / "cache")
    assert bundle.info.shape == (2, 2, 34, 34) and bundle.info.num_classes == 10
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 10, 10)

    def frames(events):
        return expected_frames([(x, y, p) for x, y, _, p in events], 2, 34, [0, 0, 1, 1])

    expect = {d: [frames(e) for e in files] for d, files in written["Train"].items()}
    assert_bundle_matches(bundle, expect, [bundle.train, bundle.val])
    expect = {d: [frames(e) for e in files] for d, files in written["Test"].items()}
    assert_bundle_matches(bundle, expect, [bundle.test])
    # second load reads the cache and gives the same frames
    again = load_event_dataset("nmnist", tmp_path, T=2, cache_dir=tmp_path / "cache")
    assert np.array_equal(again.test.x.numpy(), bundle.test.x.numpy())


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    write_nmnist(tmp_path, {"Train": 2, "Test": 1})
    cache = tmp_path / "cache"
    first = load_event_dataset("nmnist", tmp_path, T=2, cache_dir=cache)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 2 and not list(cache.glob("*.tmp"))
    for path in files:
        path.write_bytes(b"not a zip file")
    second = load_event_dataset("nmnist", tmp_path, T=2, cache_dir=cache)
    assert np.array_equal(first.train.x.numpy(), second.train.x.numpy())
    assert all(np.load(path)["x"].shape[1:] == (2, 2, 34, 34) for path in files)


# --------------------------------------------------------------------------- DVS128 Gesture


def test_gesture_npy_from_disk(tmp_path: Path) -> None:
    base = tmp_path / "DVSGesture"
    rows = {}  # (split, user, label) -> [N, 4] x, y, p, t(ms)
    for split, users in (("ibmGestureTrain", ["user01_fluorescent", "user02_led"]),
                         ("ibmGestureTest", ["user24_natural"])):
        for u, user in enumerate(users):
            (base / split / user).mkdir(parents=True)
            for label in range(3):
                data = np.array([[label, u, 1, 0], [127, 64, 0, 1], [label + 10, 3, 1, 2],
                                 [5, 127, 0, 3]], dtype=np.int64)
                np.save(base / split / user / f"{label}.npy", data)
                rows[(split, user, label)] = data
    files = list_event_files("dvsgesture", tmp_path, "train")
    assert [label for _, label in files] == [0, 1, 2, 0, 1, 2]
    bundle = load_event_dataset("dvsgesture", tmp_path, T=2, split_by="time",
                                cache_dir=tmp_path / "cache")
    assert bundle.info.shape == (2, 2, 128, 128) and bundle.info.num_classes == 11

    def expect(split):
        out: dict[int, list] = {label: [] for label in range(3)}
        for (s, _, label), data in rows.items():
            if s == split:  # t = 0, 1, 2, 3 ms -> windows of 1500 us: frames 0, 0, 1, 1
                out[label].append(expected_frames(data[:, [0, 1, 2]], 2, 128, [0, 0, 1, 1]))
        return out

    assert_bundle_matches(bundle, expect("ibmGestureTrain"), [bundle.train, bundle.val])
    assert_bundle_matches(bundle, expect("ibmGestureTest"), [bundle.test])


# --------------------------------------------------------------------------- CIFAR10-DVS

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")


def cifar_events(label: int, index: int) -> list[tuple[int, int, int, int]]:
    return [(label, index, 10, 1), (127, 0, 20, 0), (0, 127, 30, 1), (64, label + 50, 40, 0)]


def test_cifar10dvs_aedat_from_disk(tmp_path: Path) -> None:
    base = tmp_path / "CIFAR10DVS"
    for label, name in enumerate(CIFAR_CLASSES):
        (base / name).mkdir(parents=True)
        for index in (0, 2, 10):  # natural order 0, 2, 10: the last (10) is test
            path = base / name / f"cifar10_{name}_{index}.aedat"
            path.write_bytes(aedat2_bytes(cifar_events(label, index)))
    decoded = read_cifar10dvs(base / "bird" / "cifar10_bird_2.aedat")
    events = cifar_events(2, 2)
    assert decoded["x"].tolist() == [e[0] for e in events]
    assert decoded["y"].tolist() == [e[1] for e in events]
    assert decoded["t"].tolist() == [e[2] for e in events]
    assert decoded["p"].tolist() == [e[3] for e in events]
    test_files = list_event_files("cifar10dvs", tmp_path, "test")
    assert [p.name for p, _ in test_files][:2] == ["cifar10_airplane_10.aedat",
                                                    "cifar10_automobile_10.aedat"]
    bundle = load_event_dataset("cifar10dvs", tmp_path, T=4, cache_dir=tmp_path / "cache")

    def frames(label, index):
        rows = [(x, y, p) for x, y, _, p in cifar_events(label, index)]
        return expected_frames(rows, 4, 128, [0, 1, 2, 3])

    assert_bundle_matches(bundle, {c: [frames(c, 0), frames(c, 2)] for c in range(10)},
                          [bundle.train, bundle.val])
    assert_bundle_matches(bundle, {c: [frames(c, 10)] for c in range(10)}, [bundle.test])


# --------------------------------------------------------------------------- layout errors


def test_missing_or_partial_root_raises(tmp_path: Path) -> None:
    for name in EVENT_LAYOUTS:
        with pytest.raises(DatasetLayoutError, match="dataset.root=PATH"):
            load_event_dataset(name, tmp_path / "nowhere")
        assert not find_event_dataset(name, tmp_path)
    write_nmnist(tmp_path, {"Train": 1})  # no Test/
    with pytest.raises(DatasetLayoutError, match="Test"):
        load_event_dataset("nmnist", tmp_path, cache_dir=tmp_path / "cache")
    assert issubclass(DatasetLayoutError, FileNotFoundError)


# --------------------------------------------------------------------------- ndigits


@pytest.fixture(scope="module")
def few_digits():
    images, labels, index = ndigits_images(limit=30)
    return images, labels, index, ndigits_events(index, progress=False)[0]


def test_ndigits_events_are_well_formed(few_digits) -> None:
    images, labels, index, events = few_digits
    assert images.shape == (30, 34, 34) and 0.0 <= images.min() and images.max() <= 1.0
    assert np.bincount(labels).tolist() == [3] * 10
    for e in events:
        assert set(e.dtype.names) >= {"x", "y", "t", "p"}
        assert 1000 < len(e) and np.all(np.diff(e["t"]) >= 0)
        assert 0 <= e["t"].min() and e["t"].max() <= 300_000
        assert 0.3 < e["p"].mean() < 0.7  # both ON and OFF events
    # a sample's events do not depend on which samples were simulated with it
    alone = saccade_events(images[4:5], sample_ids=index[4:5], progress=False)[0]
    assert np.array_equal(alone, events[4])


def test_ndigits_events_sit_on_moving_edges(few_digits) -> None:
    images, _, _, events = few_digits
    config = SaccadeConfig()
    path = saccade_path(config)
    padded = np.pad(images, ((0, 0), (6, 6), (6, 6)))
    gradient = np.stack([np.hypot(*np.gradient(shift_images(padded, dx, dy, 6, 34), axis=(1, 2)))
                         for dx, dy in path], axis=1)  # [N, steps, H, W]
    for i, e in enumerate(events):
        step = np.ceil(e["t"] / config.step_us).astype(int)
        at_events = gradient[i, step, e["y"], e["x"]]
        assert (at_events > 0.05).mean() > 0.9  # most events where the image gradient is large
        assert (gradient[i] > 0.05).mean() < 0.6  # ... which is far from everywhere
        assert at_events.mean() > 2 * gradient[i].mean()


def test_load_ndigits_deterministic_balanced_cached(tmp_path: Path) -> None:
    first = load_ndigits(T=8, limit=60, cache_dir=tmp_path / "a")
    second = load_ndigits(T=8, limit=60, cache_dir=tmp_path / "b")  # generated again
    assert first.info.shape == (8, 2, 34, 34) and first.info.sensor_size == (34, 34, 2)
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert np.array_equal(a.x.numpy(), b.x.numpy()) and np.array_equal(a.y, b.y)
    for split, per_class in ((first.train, 4), (first.val, 1), (first.test, 1)):
        assert np.bincount(split.y.numpy(), minlength=10).tolist() == [per_class] * 10
    x = first.train.x
    assert x[:, :, 0].sum() > 0 and x[:, :, 1].sum() > 0  # OFF and ON channels both used
    indices = first.info.extra["indices"]
    assert not set(indices["test"]) & (set(indices["train"]) | set(indices["val"]))
    cached = load_ndigits(T=8, limit=60, cache_dir=tmp_path / "a")
    assert np.array_equal(cached.test.x.numpy(), first.test.x.numpy())
    other = load_ndigits(T=8, limit=60, cache_dir=tmp_path / "c",
                         config=SaccadeConfig(threshold=0.25))
    assert other.train.x.sum() < first.train.x.sum()  # a higher threshold, fewer events
