"""Readers of CIFAR-10/100, GTSRB and MNIST, checked on tiny files in each exact real format."""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import pickletools
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snnbackdoor.data import gtsrb
from snnbackdoor.data.readers import (
    EXPECTED_LAYOUTS,
    DatasetLayoutError,
    UnsafePickleError,
    find_dataset,
    read_cifar10,
    read_cifar100,
    read_gtsrb,
    read_mnist,
)

# ---------------------------------------------------------------- CIFAR builders


def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """Serialise [N, 32, 32, 3] images as CIFAR does: 1024 R, then 1024 G, then 1024 B."""
    planes = [images_hwc[..., c].reshape(len(images_hwc), -1) for c in range(3)]
    return np.concatenate(planes, axis=1).astype(np.uint8)


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _batch(images: np.ndarray, labels: list[int], label_key: bytes, name: bytes) -> dict:
    return {
        b"batch_label": name,
        label_key: labels,
        b"data": _cifar_rows(images),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


def _make_cifar10(root: Path, rng: np.random.Generator, n: int = 3, batches: int = 5) -> dict:
    """Write cifar-10-batches-py under root; return the images (NCHW) and labels expected."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        xs.append(images)
        ys.extend(labels)
        if i <= batches:
            name = f"training batch {i} of 5".encode()
            _dump(folder / f"data_batch_{i}", _batch(images, labels, b"labels", name))
    test_images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, n)]
    _dump(folder / "test_batch", _batch(test_images, test_labels, b"labels", b"testing batch"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    _dump(folder / "batches.meta",
          {b"num_cases_per_batch": n, b"label_names": names, b"num_vis": 3072})
    return {
        "train": (np.concatenate(xs).transpose(0, 3, 1, 2), np.array(ys)),
        "test": (test_images.transpose(0, 3, 1, 2), np.array(test_labels)),
        "folder": folder,
    }


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as in the real (Python 2 cPickle) files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle shaped like the real CIFAR files (numpy.core, no _codecs)."""
    import io

    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    raw = buffer.getvalue()
    return raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


# ---------------------------------------------------------------- CIFAR tests


@pytest.mark.parametrize("use_inner_folder", [False, True])
def test_cifar10_reads_exact_pixels_labels_and_names(tmp_path, use_inner_folder):
    expected = _make_cifar10(tmp_path, np.random.default_rng(0))
    data = read_cifar10(expected["folder"] if use_inner_folder else tmp_path)
    for split in ("train", "test"):
        x, y = data[split]
        assert x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])
    assert data["train"][0].shape == (15, 3, 32, 32)
    assert data["classes"][:2] == ["airplane", "automobile"] and len(data["classes"]) == 10


def test_cifar_reshape_puts_red_in_channel_0(tmp_path):
    expected = _make_cifar10(tmp_path, np.random.default_rng(1))
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    images[0, 4, 7] = (255, 0, 0)  # one red pixel at row 4, column 7
    images[0, 9, 2] = (0, 0, 200)  # one blue pixel at row 9, column 2
    _dump(expected["folder"] / "test_batch", _batch(images, [3], b"labels", b"testing batch"))
    x, y = read_cifar10(tmp_path)["test"]
    assert x[0, :, 4, 7].tolist() == [255, 0, 0]
    assert x[0, :, 9, 2].tolist() == [0, 0, 200]
    assert int(x.sum()) == 455 and y.tolist() == [3]


def test_cifar_reads_python2_style_pickles(tmp_path):
    expected = _make_cifar10(tmp_path, np.random.default_rng(2))
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    raw = _py2_pickle(_batch(images, [1, 9], b"labels", b"testing batch 1 of 1"))
    globals_used = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
    assert globals_used == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    (expected["folder"] / "test_batch").write_bytes(raw)
    x, y = read_cifar10(tmp_path)["test"]
    np.testing.assert_array_equal(x, images.transpose(0, 3, 1, 2))
    assert y.tolist() == [1, 9]


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    split_data = {}
    for split, n in (("train", 4), ("test", 2)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        record = _batch(images, fine, b"fine_labels", split.encode())
        record[b"coarse_labels"] = [f // 5 for f in fine]
        _dump(folder / split, record)
        split_data[split] = (images.transpose(0, 3, 1, 2), fine)
    fine_names = [f"class_{i}".encode() for i in range(100)]
    coarse_names = [f"super_{i}".encode() for i in range(20)]
    _dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    data = read_cifar100(tmp_path)
    for split, (images, fine) in split_data.items():
        np.testing.assert_array_equal(data[split][0], images)
        assert data[split][1].tolist() == fine
    assert data["classes"][99] == "class_99"


def test_cifar_partial_folder_names_missing_batches(tmp_path):
    _make_cifar10(tmp_path, np.random.default_rng(5), batches=3)
    with pytest.raises(DatasetLayoutError) as info:
        read_cifar10(tmp_path)
    message = str(info.value)
    assert "data_batch_4" in message and "data_batch_5" in message
    assert "data_batch_3," not in message.split("Expected layout")[0]
    assert EXPECTED_LAYOUTS["cifar10"] in message
    assert "--set dataset.root=PATH" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_root_raises_layout_error(tmp_path):
    for reader in (read_cifar10, read_cifar100, read_gtsrb, read_mnist):
        with pytest.raises(DatasetLayoutError, match="does not exist"):
            reader(tmp_path / "nowhere")


def test_cifar_truncated_batch_raises_layout_error(tmp_path):
    expected = _make_cifar10(tmp_path, np.random.default_rng(6))
    path = expected["folder"] / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetLayoutError, match="data_batch_2 is truncated"):
        read_cifar10(tmp_path)


class _RunsShell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _RunsEval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", ["shell", "eval", "shell_inside_dict"])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload):
    expected = _make_cifar10(tmp_path / "data", np.random.default_rng(7))
    marker = tmp_path / "pwned"
    shell = _RunsShell(f"touch {shlex.quote(str(marker))}")
    evil = _RunsEval(marker) if payload == "eval" else shell
    obj = {b"data": evil, b"labels": [0]} if payload == "shell_inside_dict" else evil
    _dump(expected["folder"] / "data_batch_1", obj)
    with pytest.raises(UnsafePickleError, match="refusing"):
        read_cifar10(tmp_path / "data")
    assert not marker.exists()


def test_codecs_encode_only_allows_latin1(tmp_path):
    expected = _make_cifar10(tmp_path, np.random.default_rng(8))
    raw = pickle.dumps(b"\xff", protocol=2).replace(b"X\x06\x00\x00\x00latin1",
                                                    b"X\x04\x00\x00\x00utf7")
    (expected["folder"] / "batches.meta").write_bytes(raw)
    with pytest.raises(UnsafePickleError):
        read_cifar10(tmp_path)


# ---------------------------------------------------------------- GTSRB builders

_HEADER = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]


def _write_sign(path: Path, rng: np.random.Generator, roi_side: int) -> tuple[list, np.ndarray]:
    """Write a .ppm of random size with a random ROI; return its CSV cells and the crop."""
    x1, y1 = (int(v) for v in rng.integers(0, 6, 2))
    width = x1 + roi_side + int(rng.integers(0, 7))
    height = y1 + roi_side + int(rng.integers(0, 7))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)  # .ppm: binary P6, like the real files
    x2, y2 = x1 + roi_side - 1, y1 + roi_side - 1  # GTSRB corners are inclusive
    crop = pixels[y1:y2 + 1, x1:x2 + 1].transpose(2, 0, 1)
    return [path.name, width, height, x1, y1, x2, y2], crop


def _write_csv(path: Path, rows: list[list]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
        writer.writerow(_HEADER)
        writer.writerows(rows)


def _make_gtsrb(root: Path, roi_side: int = 8, test_csv_at: str = "images") -> dict:
    """Write GTSRB/ under root (43 classes, 1-2 images each, 5 test images); return the crops."""
    rng = np.random.default_rng(10)
    base = root / "GTSRB"
    train_x, train_y = [], []
    for label in range(43):
        folder = base / "Final_Training" / "Images" / f"{label:05d}"
        folder.mkdir(parents=True)
        rows = []
        for track in range(2 if label < 3 else 1):
            cells, crop = _write_sign(folder / f"{track:05d}_00000.ppm", rng, roi_side)
            rows.append([*cells, label])
            train_x.append(crop)
            train_y.append(label)
        _write_csv(folder / f"GT-{label:05d}.csv", rows)
    test_dir = base / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    test_rows, test_x, test_y = [], [], [7, 0, 42, 13, 7]
    for i, label in enumerate(test_y):
        cells, crop = _write_sign(test_dir / f"{i:05d}.ppm", rng, roi_side)
        test_rows.append([*cells, label])
        test_x.append(crop)
    csv_folder = {"images": test_dir, "gtsrb": base, "root": root}[test_csv_at]
    _write_csv(csv_folder / "GT-final_test.csv", test_rows)
    return {"train": (np.stack(train_x), np.array(train_y)),
            "test": (np.stack(test_x), np.array(test_y)), "base": base}


def _assert_same(data: dict, expected: dict) -> None:
    for split in ("train", "test"):
        np.testing.assert_array_equal(data[split][0], expected[split][0])
        np.testing.assert_array_equal(data[split][1], expected[split][1])
        assert data[split][0].dtype == np.uint8 and data[split][1].dtype == np.int64


# ---------------------------------------------------------------- GTSRB tests


@pytest.mark.parametrize("test_csv_at", ["images", "gtsrb", "root"])
def test_gtsrb_crops_roi_exactly(tmp_path, test_csv_at):
    expected = _make_gtsrb(tmp_path / "data", roi_side=8, test_csv_at=test_csv_at)
    data = read_gtsrb(tmp_path / "data", size=8)  # size == ROI side: no resampling
    _assert_same(data, expected)
    assert data["train"][0].shape == (46, 3, 8, 8)
    assert len(data["classes"]) == 43 and data["classes"][14] == "Stop"


def test_gtsrb_resizes_roi_bilinearly_and_accepts_gtsrb_folder(tmp_path):
    _make_gtsrb(tmp_path, roi_side=8)
    image_path = tmp_path / "GTSRB" / "Final_Test" / "Images" / "00002.ppm"
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[5:15, 3:13] = (250, 120, 5)  # the sign: 10x10 at x 3..12, y 5..14
    Image.fromarray(pixels).save(image_path)
    csv_path = tmp_path / "GTSRB" / "Final_Test" / "Images" / "GT-final_test.csv"
    lines = csv_path.read_text().splitlines()
    lines[3] = "00002.ppm;30;20;3;5;12;14;42"
    csv_path.write_text("\n".join(lines) + "\n")
    x, y = read_gtsrb(tmp_path / "GTSRB", size=4, cache_dir=tmp_path / "cache")["test"]
    assert x.shape == (5, 3, 4, 4) and y[2] == 42
    # An off-by-one crop would blend black border pixels into the edges.
    np.testing.assert_array_equal(x[2], np.broadcast_to(np.array([250, 120, 5])[:, None, None],
                                                        (3, 4, 4)))
    resized = Image.fromarray(pixels[5:15, 3:13]).resize((4, 4), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(x[2], np.asarray(resized).transpose(2, 0, 1))


def test_gtsrb_cache_is_used_rebuilt_when_stale_or_damaged(tmp_path):
    expected = _make_gtsrb(tmp_path, roi_side=8)
    base = expected["base"]
    _assert_same(read_gtsrb(tmp_path, size=8), expected)
    cache = base / "gtsrb_8px.npz"
    assert cache.is_file() and not list(base.glob("*.tmp"))
    (base / "Final_Test" / "Images" / "00000.ppm").rename(base / "moved.ppm")
    _assert_same(read_gtsrb(tmp_path, size=8), expected)  # served from the cache
    (base / "moved.ppm").rename(base / "Final_Test" / "Images" / "00000.ppm")
    cache.write_bytes(b"not an npz")
    _assert_same(read_gtsrb(tmp_path, size=8), expected)  # rebuilt
    with np.load(cache) as arrays:
        np.testing.assert_array_equal(arrays["x_test"], expected["test"][0])
    csv_path = base / "Final_Test" / "Images" / "GT-final_test.csv"
    csv_path.write_bytes(csv_path.read_bytes().replace(b";7\r\n", b";8\r\n", 1))
    assert read_gtsrb(tmp_path, size=8)["test"][1].tolist() == [8, 0, 42, 13, 7]


def test_gtsrb_cache_dir_and_unwritable_cache(tmp_path, monkeypatch):
    expected = _make_gtsrb(tmp_path / "data", roi_side=8)
    read_gtsrb(tmp_path / "data", size=8, cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "gtsrb_8px.npz").is_file()
    assert not (expected["base"] / "gtsrb_8px.npz").exists()

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(gtsrb, "_save_npz_atomic", refuse)
    with pytest.warns(UserWarning, match="cache_dir"):
        data = read_gtsrb(tmp_path / "data", size=8)
    _assert_same(data, expected)


def test_gtsrb_class_folder_without_csv(tmp_path):
    base = _make_gtsrb(tmp_path, roi_side=8)["base"]
    (base / "Final_Training" / "Images" / "00007" / "GT-00007.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="GT-00007.csv") as info:
        read_gtsrb(tmp_path)
    assert "dataset.root" in str(info.value) and "Final_Training/Images/" in str(info.value)
    assert not find_dataset("gtsrb", tmp_path)


def test_gtsrb_missing_test_labels_and_missing_image(tmp_path):
    base = _make_gtsrb(tmp_path, roi_side=8)["base"]
    assert find_dataset("gtsrb", tmp_path) and find_dataset("gtsrb", base)
    csv_path = base / "Final_Test" / "Images" / "GT-final_test.csv"
    csv_path.rename(tmp_path / "elsewhere.csv")
    with pytest.raises(DatasetLayoutError, match="GT-final_test.csv"):
        read_gtsrb(tmp_path)
    (tmp_path / "elsewhere.csv").rename(csv_path)
    (base / "Final_Training" / "Images" / "00005" / "00000_00000.ppm").unlink()
    with pytest.raises(DatasetLayoutError, match="00000_00000.ppm"):
        read_gtsrb(tmp_path)


# ---------------------------------------------------------------- MNIST


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def _make_mnist(folder: Path, gz: bool) -> dict:
    rng = np.random.default_rng(20)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        blobs = (("images-idx3", _idx(2051, images)), ("labels-idx1", _idx(2049, labels)))
        for kind, blob in blobs:
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
        expected["train" if prefix == "train" else "test"] = (images[:, None], labels)
    return expected


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("torchvision_layout", [False, True])
def test_mnist_reads_idx_plain_and_gz(tmp_path, gz, torchvision_layout):
    folder = tmp_path / "MNIST" / "raw" if torchvision_layout else tmp_path
    expected = _make_mnist(folder, gz)
    data = read_mnist(tmp_path)
    for split in ("train", "test"):
        np.testing.assert_array_equal(data[split][0], expected[split][0])
        np.testing.assert_array_equal(data[split][1], expected[split][1])
        assert data[split][0].dtype == np.uint8 and data[split][1].dtype == np.int64
    assert data["train"][0].shape == (5, 1, 28, 28) and data["classes"] == list("0123456789")
    assert find_dataset("mnist", tmp_path)


def test_mnist_wrong_magic_number(tmp_path):
    _make_mnist(tmp_path, gz=False)
    labels = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(labels)
    with pytest.raises(DatasetLayoutError, match="magic number 2049, expected 2051"):
        read_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file(tmp_path, gz):
    _make_mnist(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetLayoutError, match="truncated"):
        read_mnist(tmp_path)


def test_mnist_missing_file_and_count_mismatch(tmp_path):
    _make_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetLayoutError, match="t10k-labels-idx1-ubyte") as info:
        read_mnist(tmp_path)
    assert EXPECTED_LAYOUTS["mnist"] in str(info.value)
    assert not find_dataset("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(2049, np.zeros(4, np.uint8)))
    with pytest.raises(DatasetLayoutError, match="3 images but"):
        read_mnist(tmp_path)


# ---------------------------------------------------------------- lookup


def test_find_dataset_and_layouts(tmp_path):
    assert set(EXPECTED_LAYOUTS) == {"cifar10", "cifar100", "gtsrb", "mnist"}
    for name in EXPECTED_LAYOUTS:
        assert not find_dataset(name, tmp_path)
        assert not find_dataset(name, tmp_path / "missing")
    _make_cifar10(tmp_path, np.random.default_rng(30))
    assert find_dataset("cifar10", tmp_path) and find_dataset("CIFAR-10", tmp_path)
    assert find_dataset("cifar10", tmp_path / "cifar-10-batches-py")
    assert not find_dataset("cifar100", tmp_path)
    with pytest.raises(ValueError, match="unknown"):
        find_dataset("imagenet", tmp_path)


def test_verify_dataset_names_damaged_files_that_find_misses(tmp_path):
    from snnbackdoor.data.readers import verify_dataset

    _make_cifar10(tmp_path / "c", np.random.default_rng(31))
    verify_dataset("cifar10", tmp_path / "c")
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    assert find_dataset("cifar10", tmp_path / "c")  # names only: looks complete
    with pytest.raises(DatasetLayoutError, match="data_batch_3 is truncated"):
        verify_dataset("cifar10", tmp_path / "c")
    _make_mnist(tmp_path / "m", gz=False)
    images = tmp_path / "m" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DatasetLayoutError, match="truncated"):
        verify_dataset("mnist", tmp_path / "m")
