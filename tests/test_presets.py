"""Paper-scale presets start training from files in the exact real formats (tiny, fake content).

The files are written by the builders of tests/test_readers.py; the big paper models are
swapped for digits_net in the end-to-end runs, and the paper model itself takes one
optimiser step on the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_readers import _batch, _dump, _idx, _make_cifar10, _make_gtsrb

from snnbackdoor.cli import main
from snnbackdoor.config import ConfigError
from snnbackdoor.data import load_dataset
from snnbackdoor.data.registry import channel_mean_std
from snnbackdoor.experiments.base import load_config, model_spec, run_experiment
from snnbackdoor.models import build_model
from snnbackdoor.training import TrainConfig, train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _make_cifar100(root: Path, n_train: int = 40, n_test: int = 8) -> None:
    """cifar-100-python/{train,test,meta} with labels from a few fine classes."""
    rng = np.random.default_rng(40)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 4, n)]
        record = _batch(images, fine, b"fine_labels", split.encode())
        record[b"coarse_labels"] = [f // 5 for f in fine]
        _dump(folder / split, record)
    _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})


def _make_mnist(folder: Path, n_train: int = 40, n_test: int = 10) -> None:
    """The four gzipped IDX files, as distributed."""
    import gzip

    rng = np.random.default_rng(41)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 4).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(2051, images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(2049, labels)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """One folder holding all four datasets in their standard layouts."""
    root = tmp_path_factory.mktemp("datasets")
    _make_cifar10(root, np.random.default_rng(0), n=8)
    _make_cifar100(root)
    _make_gtsrb(root, roi_side=8)
    _make_mnist(root)
    return root


PRESETS = {
    "cifar10_resnet19_clean": ("cifar10", "spiking_resnet19", (3, 32, 32), 10, True),
    "cifar100_vgg16_clean": ("cifar100", "spiking_vgg16", (3, 32, 32), 100, True),
    "gtsrb_vgg16_clean": ("gtsrb", "spiking_vgg16", (3, 32, 32), 43, False),
    "mnist_clean": ("mnist", "digits_net", (1, 28, 28), 10, False),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_trains_from_real_format_files(preset, data_root, tmp_path):
    dataset, model_name, shape, classes, hflip = PRESETS[preset]
    path = CONFIGS / f"{preset}.yaml"
    with pytest.raises(ConfigError, match="dataset.root"):
        load_config(path)  # no root given: fails before any work, saying what to set
    paper = load_config(path, [f"dataset.root={data_root}"])
    assert (paper.dataset.name, paper.model.name, paper.model.T) == (dataset, model_name, 4)
    assert paper.train.augment and paper.train.epochs >= 20

    bundle = load_dataset(dataset, str(data_root), **paper.dataset.options)
    assert bundle.info.shape == shape and bundle.info.num_classes == classes
    assert bundle.info.hflip is hflip and bundle.train.x.dtype == torch.uint8

    # The paper model itself (at T=1 to keep it quick): one optimiser step on two images.
    model = build_model(model_spec(paper.model, bundle.info), T=1)
    pair = bundle.train.subset(torch.arange(2))
    before = [p.detach().clone() for p in model.parameters()]
    train(model, pair, TrainConfig(epochs=1, batch_size=2, progress=False, lr=0.01,
                                   optimizer=paper.train.optimizer))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    # The whole run, through the experiment, with a small model so it takes seconds.
    small = load_config(path, [f"dataset.root={data_root}", "train.epochs=1",
                               "train.batch_size=8", "train.progress=false",
                               "model.name=digits_net", "model.T=2"])
    metrics = run_experiment(small, tmp_path / "run").metrics
    assert 0.0 <= metrics["clean_ca"] <= 1.0 and metrics["epochs"] == 1
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_image_bundles_keep_uint8_carve_val_from_train_and_measure_train(data_root):
    bundle = load_dataset("cifar10", str(data_root), val_fraction=0.2)
    assert bundle.train.x.dtype == torch.uint8 and bundle.train.x.shape[1:] == (3, 32, 32)
    assert len(bundle.train) + len(bundle.val) == 40 and len(bundle.test) == 8
    train_rows = {bytes(x.numpy().tobytes()) for x in bundle.train.x}
    assert not any(bytes(x.numpy().tobytes()) in train_rows for x in bundle.val.x)
    assert set(bundle.val.y.tolist()) <= set(bundle.train.y.tolist()) | set(range(10))
    floats = bundle.train.floats()
    expected_mean = floats.mean(dim=(0, 2, 3))
    expected_std = floats.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    np.testing.assert_allclose(bundle.info.mean, expected_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(bundle.info.std, expected_std.numpy(), rtol=1e-4)
    again = load_dataset("cifar10", str(data_root), val_fraction=0.2)
    assert torch.equal(again.val.y, bundle.val.y)  # the carve is fixed, not per run
    assert bundle.info.extra["classes"][0] == "airplane"


def test_channel_mean_std_is_exact():
    x = np.random.default_rng(0).integers(0, 256, (5, 2, 3, 4), dtype=np.uint8)
    mean, std = channel_mean_std(x)
    scaled = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-10)


def test_load_dataset_without_root_or_with_bad_option_fails_early(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.root"):
        load_dataset("gtsrb")
    with pytest.raises(KeyError, match="no option"):
        load_dataset("mnist", str(tmp_path), size=32)
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        load_dataset("mnist", str(tmp_path))


def test_datasets_command_shows_found_and_not_found(data_root, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["datasets", "--root", str(data_root)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    for name in ("cifar10", "cifar100", "gtsrb", "mnist"):
        assert " found " in f"{lines[name]} ", lines[name]
    assert "cifar-10-batches-py/" in result.output and "GT-final_test.csv" in result.output
    empty = runner.invoke(main, ["datasets", "--root", str(tmp_path)])
    for line in empty.output.splitlines():
        if line.split()[:1] and line.split()[0] in ("cifar10", "cifar100", "gtsrb", "mnist"):
            assert "not found under" in line
