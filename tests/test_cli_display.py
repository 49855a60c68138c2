"""The command line's display settings: the group's --quiet, --tensorboard DIR, and sweeps
that draw sweep.png; display keys never block resuming a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_helpers import invoke

from snnbackdoor.rundir import RunDir, RunDirError, results_view

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_clean.yaml"


def test_quiet_and_tensorboard_are_recorded_and_resume_freely(tmp_path):
    run, board = tmp_path / "run", tmp_path / "board"
    result = invoke(["--quiet", "run", CONFIG, "--set", "train.epochs=1", "--out", run,
                     "--tensorboard", board])
    assert result.exit_code == 0, result.output
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert train["progress"] is False and train["tensorboard"] == str(board)
    assert any(p.name.startswith("events.out.tfevents") for p in board.rglob("*"))
    # Same run, bars on and no TensorBoard: resumes (the model stage is not recomputed).
    stages = (run / "stages.json").read_text()
    again = invoke(["run", CONFIG, "--set", "train.epochs=1", "--out", run])
    assert again.exit_code == 0, again.output
    assert (run / "stages.json").read_text() == stages
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["progress"] is True


def test_write_config_still_refuses_a_change_that_matters(tmp_path):
    run = RunDir(tmp_path)
    run.write_config({"seed": 0, "train": {"epochs": 3, "progress": True}})
    run.stage("model", lambda: {"done": 1})
    RunDir(tmp_path).write_config({"seed": 0, "train": {"epochs": 3, "progress": False,
                                                         "tensorboard": "tb"}})
    with pytest.raises(RunDirError, match="train.epochs"):
        RunDir(tmp_path).write_config({"seed": 0, "train": {"epochs": 4, "progress": False}})
    assert results_view({"a": [{"progress": 1, "b": 2}], "tensorboard": "x"}) == {"a": [{"b": 2}]}


def test_sweep_draws_its_figure(tmp_path):
    result = invoke(["--quiet", "sweep", CONFIG, "--grid", "train.epochs=1,2",
                     "--grid", "seed=0,1", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    png = tmp_path / "sweep.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and f"figure: {png}" in result.output


def test_demo_set_changes_one_key_of_the_demo_section():
    """`demo --set badsnn.unet.eps=0.3` keeps the demo's other BadSNN settings (not the
    paper's defaults the section would fall back to)."""
    from snnbackdoor.experiments.badsnn import demo_config, demo_options

    config = demo_config(2, ["badsnn.unet.eps=0.3", "train.epochs=3"])
    assert config.badsnn.unet.eps == 0.3
    assert config.badsnn.malicious_weight == demo_options().malicious_weight == 2.0  # paper: 1
    assert config.badsnn.unet.epochs == demo_options().unet.epochs
    assert (config.train.epochs, config.train.seed, config.seed) == (3, 2, 2)
