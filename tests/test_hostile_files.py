"""Hostile files, one explicit test per class of issue 18: model files (spec, neuron config,
dtypes), run folders (stages.json, metrics.json, config.yaml), dataset files (truncated, empty
or misnamed recordings, a CIFAR pickle carrying code)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from cli_helpers import invoke, one_line_error
from safetensors.torch import save_file

from snnbackdoor.checkpoint import FORMAT, CheckpointError, load_model, save_model
from snnbackdoor.data.event_files import make_events
from snnbackdoor.data.formats import DatasetFileError, UnsafePickleError
from snnbackdoor.errors import UserError
from snnbackdoor.models import build_model
from snnbackdoor.rundir import RunDir, RunDirError

# --------------------------------------------------------------------------- model files


def _model_file(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "m.safetensors"
    save_model(build_model("digits_net"), path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["spec"].update(spec)
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(("spec", "says"), [
    ({"image_size": 10**9}, "image_size=1000000000"),
    ({"num_classes": -3}, "num_classes=-3"),
    ({"in_channels": 1.5}, "in_channels=1.5"),
    ({"T": "4"}, "T='4'"),
    ({"name": "nope"}, "unknown model 'nope'"),
    ({"std": [0.0]}, "std"),
])
def test_sidecar_spec_is_checked_before_any_allocation(spec, says, tmp_path, monkeypatch):
    path = _model_file(tmp_path, **spec)
    monkeypatch.setattr("snnbackdoor.checkpoint.read_safetensors", _must_not_load)
    with pytest.raises(CheckpointError, match=says.replace("[", r"\[")):
        load_model(path)


def _must_not_load(*_args, **_kwargs):
    raise AssertionError("tensors were read before the spec was checked")


@pytest.mark.parametrize(("params", "says"), [
    ([1, 2], "must be a mapping"),
    ({"v_threshold": -5.0, "tau": 2.0}, "v_threshold must be > 0"),
    ({"v_threshold": 1.0, "tau": 0.1}, "tau=0.1 refused"),
    ({"v_threshold": "a", "tau": 2.0}, "must be a number"),
    ({"v_threshold": 1.0}, "must hold v_threshold and tau"),
])
def test_neuron_params_from_a_file_get_the_same_checks(params, says, tmp_path):
    path = _model_file(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if isinstance(params, dict):
        meta["neuron_params"] = {name: params for name in meta["neuron_params"]}
    else:
        meta["neuron_params"] = params
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=says):
        load_model(path)


def test_int64_weights_are_refused(tmp_path):
    path = _model_file(tmp_path)
    state = {k: v.to(torch.int64) for k, v in build_model("digits_net").state_dict().items()}
    save_file(state, str(path), metadata={"format": FORMAT})
    with pytest.raises(CheckpointError, match="torch.int64"):
        load_model(path)


def test_a_model_file_that_is_a_folder(tmp_path):
    (tmp_path / "m.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        load_model(tmp_path / "m.safetensors")


# --------------------------------------------------------------------------- run folders


@pytest.mark.parametrize(("name", "content", "says"), [
    ("stages.json", "[1, 2]", "expected shape"),
    ("stages.json", json.dumps({"model": 3}), "stage 'model' is not a mapping"),
    ("stages.json", json.dumps({"_seconds": {"a": "x"}}), "stage '_seconds'"),
    ("stages.json", "[" * 5000 + "]" * 5000, "stages.json"),
    ("metrics.json", "[1]", "expected shape"),
    ("metrics.json", "{", "not valid JSON"),
])
def test_broken_run_files_are_reported_never_reset(name, content, says, tmp_path):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=says):
        RunDir(tmp_path)
    assert (tmp_path / name).read_text() == content


def test_broken_config_yaml_in_a_run_folder(tmp_path):
    run = RunDir(tmp_path)
    run.write_config({"seed": 0})
    run.stage("s", lambda: {"x": 1})
    (tmp_path / "config.yaml").write_text("seed: 0\nseed: 1\n")
    with pytest.raises(UserError, match="duplicate key"):
        RunDir(tmp_path).write_config({"seed": 0})


def test_run_folder_arguments(tmp_path):
    with pytest.raises(RunDirError, match="empty"):
        RunDir("")
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        RunDir(tmp_path / "f")


# --------------------------------------------------------------------------- dataset files


def _nmnist_root(tmp_path: Path, damage: str) -> Path:
    """A tiny N-MNIST tree: one valid 2-event recording per digit and split, one damaged."""
    record = bytes([1, 2, 0x80, 0, 10, 3, 4, 0, 0, 20])  # two 40-bit events
    for split in ("Train", "Test"):
        for digit in range(10):
            folder = tmp_path / "NMNIST" / split / str(digit)
            folder.mkdir(parents=True)
            (folder / "00001.bin").write_bytes(record)
    bad = tmp_path / "NMNIST" / "Test" / "3" / "00002.bin"
    if damage == "truncated":
        bad.write_bytes(record[:7])
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "folder":
        bad.mkdir()
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "empty", "folder"])
def test_damaged_recordings_name_the_file(damage, tmp_path):
    from snnbackdoor.data.events import load_event_dataset

    root = _nmnist_root(tmp_path, damage)
    with pytest.raises(DatasetFileError, match="00002.bin"):
        load_event_dataset("nmnist", root, T=2, cache_dir=tmp_path / "cache")
    result = invoke(["datasets", "--root", root])
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if x.startswith("nmnist"))
    assert "damaged" in line and "00002.bin" in result.output


def test_valid_recordings_are_found(tmp_path):
    root = _nmnist_root(tmp_path, "none")
    line = next(x for x in invoke(["datasets", "--root", root]).output.splitlines()
                if x.startswith("nmnist"))
    assert "found" in line and "damaged" not in line
    assert len(make_events([1], [2], [3], [1])) == 1


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARK']}",))


def test_refused_cifar_pickle_is_one_line(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"data": _Evil()}))
    with pytest.raises(UnsafePickleError):
        from snnbackdoor.data.readers import read_cifar10

        read_cifar10(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(
        f"kind: train\nname: c\ndataset: {{name: cifar10, root: {tmp_path / 'data'}}}\n"
        "model: {name: digits_net}\ntrain: {epochs: 1, progress: false}\n")
    line = one_line_error(invoke(["train", "c.yaml"]))
    assert "refusing to load posix.system" in line or "refusing to load os.system" in line
    assert not mark.exists()
    result = invoke(["datasets", "--root", tmp_path / "data"])
    assert "cifar10" in result.output and "damaged" in result.output
    assert not mark.exists()
