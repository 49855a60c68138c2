"""The one file layer: atomic writes with the user's umask, JSON read back with shape checks."""

import os
import stat

import pytest
import torch

from snnbackdoor.io import (
    FileFormatError,
    atomic_write_json,
    atomic_write_text,
    load_tensors,
    read_json,
    save_tensors,
)
from snnbackdoor.rundir import RunDir


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_run_files_are_readable_by_group_and_others_under_umask_022(tmp_path, umask_022):
    run = RunDir(tmp_path / "run")
    run.write_config({"kind": "train"})
    run.write_metrics({"ca": 0.5})
    run.stage("a", lambda: {"x": 1})
    paths = [run.path / n for n in ("config.yaml", "metrics.json", "stages.json")]
    paths.append(save_tensors(tmp_path / "w.safetensors", {"w": torch.ones(2)}, "t/1", {}))
    paths.append(tmp_path / "w.json")
    for path in paths:
        assert mode(path) == 0o644, path


def test_a_stricter_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        path = atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert mode(path) == 0o600


def test_no_temp_file_survives_a_failed_write(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_json_read_back_is_checked_for_shape(tmp_path):
    path = atomic_write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(FileFormatError, match="expected shape"):
        read_json(path, dict)
    assert read_json(path, list) == [1, 2]


def test_tensor_files_need_their_format_tag(tmp_path):
    path = save_tensors(tmp_path / "w.safetensors", {"w": torch.arange(3.0)}, "a/1", {"k": 1})
    tensors, meta = load_tensors(path, "a/1")
    assert torch.equal(tensors["w"], torch.arange(3.0)) and meta["k"] == 1
    with pytest.raises(FileFormatError, match="b/1 expected"):
        load_tensors(path, "b/1")


def test_a_nested_stage_survives_its_outer_stage_and_is_timed_once(tmp_path):
    """A stage computed inside another (a second RunDir of the same folder, as BadSNN's
    generator stages inside its eps search) stays recorded when the outer one is written,
    so a resumed run reuses it; its seconds are inside the outer stage's."""
    run = RunDir(tmp_path)
    run.stage("first", lambda: {"a": 1})

    def outer() -> dict:
        RunDir(tmp_path).stage("inner", lambda: {"b": 2})
        return {"c": 3}

    run.stage("outer", outer)
    again = RunDir(tmp_path)
    assert again.done("inner") and again.done("outer") and again.done("first")
    assert set(again.stage_seconds()) == {"first", "outer"}
    assert again.stage("inner", lambda: {"b": "recomputed"}) == {"b": 2}
