"""Executors: one tiny sweep under local, a real local Ray cluster and submitit's local
executor gives the same figures; a failed or killed task is recorded, and running again
finishes it without recomputing the work that was done."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest
import ray
import ray.cloudpickle
from click.testing import CliRunner

from snnbackdoor.cli import main
from snnbackdoor.executors import (
    LocalExecutor,
    RayExecutor,
    SlurmExecutor,
    StageCall,
    TaskFailed,
    make_executor,
    map_stages,
    stage_file,
    time_minutes,
)
from snnbackdoor.rundir import RunDir
from snnbackdoor.sweep import run_sweep

CONFIG = "configs/digits_clean.yaml"
TINY = ("train.epochs=1", "train.lr=0.01", "train.progress=false", "model.T=2")

# Task functions of this test module travel to Ray workers and submitit jobs by value.
for _pickler in (cloudpickle, ray.cloudpickle):
    _pickler.register_pickle_by_value(sys.modules[__name__])




def _figures(path: Path) -> list[dict]:
    """sweep.csv rows without timings (the only columns allowed to differ)."""
    with open(path) as handle:
        return [{k: v for k, v in row.items() if not k.endswith("seconds")}
                for row in csv.DictReader(handle)]


def _check_same_figures(tmp_path: Path, name: str, local: list[dict]) -> None:
    """Executor `name`'s sweep under tmp_path/name equals the local one, weights included."""
    assert _figures(tmp_path / name / "sweep.csv") == local, name
    for cell in ("seed=0", "seed=1"):
        weights = (tmp_path / name / cell / "model.safetensors").read_bytes()
        assert weights == (tmp_path / "local" / cell / "model.safetensors").read_bytes()
    record = json.loads((tmp_path / name / "tasks" / "tasks.json").read_text())
    assert {k: (v["executor"], v["status"]) for k, v in record.items()} == dict.fromkeys(
        ["seed=0", "seed=1"], (name, "done"))


def _local_sweep(tmp_path: Path) -> list[dict]:
    executor = LocalExecutor(progress=False)
    result = run_sweep(CONFIG, ["seed=0,1"], TINY, tmp_path / "local", executor)
    local = _figures(result.path)
    assert [row["seed"] for row in local] == ["0", "1"] and not result.failed
    assert local[0]["clean_ca"] != local[1]["clean_ca"]  # the seed reached each cell
    return local


def test_sweep_figures_match_under_local_and_ray(tmp_path, ray_cluster):
    local = _local_sweep(tmp_path)
    result = run_sweep(CONFIG, ["seed=0,1"], TINY, tmp_path / "ray", RayExecutor(progress=False))
    assert not result.failed, result.failed
    _check_same_figures(tmp_path, "ray", local)
    # Finished cells are skipped whoever ran them: Ray's cells, re-run locally, stay as is.
    stamp = (tmp_path / "ray" / "seed=0" / "metrics.json").stat().st_mtime_ns
    again = run_sweep(CONFIG, ["seed=0,1"], TINY, tmp_path / "ray", LocalExecutor(progress=False))
    assert _figures(again.path) == local
    assert (tmp_path / "ray" / "seed=0" / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_sweep_figures_match_under_submitit_local(tmp_path):
    local = _local_sweep(tmp_path)
    executor = SlurmExecutor(cluster="local", time=10, poll_s=0.2, progress=False)
    result = run_sweep(CONFIG, ["seed=0,1"], TINY, tmp_path / "slurm", executor)
    assert not result.failed, result.failed
    _check_same_figures(tmp_path, "slurm", local)


def _fails(value: int) -> dict:
    raise ValueError(f"stage {value} cannot be computed")


def test_submitit_runs_stages_as_jobs_with_their_own_logs(tmp_path):
    calls = {"cell/a": StageCall(_stage, (1,)), "cell/c": StageCall(_fails, (3,))}
    executor = SlurmExecutor(cluster="local", time="0:10:00", poll_s=0.2, progress=False)
    run = RunDir(tmp_path / "run")
    with pytest.raises(TaskFailed, match="cell/c"):
        map_stages(executor, run, calls)
    assert run.stages["cell/a"]["value"] == 1 and not run.done("cell/c")
    assert run.stages["cell/a"]["pid"] != os.getpid()  # it ran as a job of its own
    record = json.loads((run.path / "tasks" / "tasks.json").read_text())
    assert "stage 3 cannot be computed" in record["cell/c"]["error"]
    folder = run.path / "tasks" / "slurm"
    jobs = json.loads((folder / "jobs.json").read_text())
    assert set(jobs) == set(calls)
    logs = {Path(job["stdout"]).parent for job in jobs.values()}
    assert len(logs) == 2 and all(log.parent == folder for log in logs)  # a folder per task
    assert all(Path(record[k]["log"]).exists() for k in calls)


def _crash_seed_one(real_train):
    def train(model, data, config, *args, **kwargs):
        if config.seed == 1:
            raise RuntimeError("simulated crash in cell seed=1")
        return real_train(model, data, config, *args, **kwargs)

    return train


def test_failed_cell_is_recorded_and_rerun_finishes_only_it(tmp_path, monkeypatch):
    import snnbackdoor.experiments.base as base

    out = tmp_path / "sweep"
    args = ["sweep", CONFIG, "--grid", "seed=0,1", "--out", str(out), "-q"]
    for item in TINY:
        args += ["--set", item]
    monkeypatch.setattr(base, "train", _crash_seed_one(base.train))
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1, first.output
    assert "failed: seed=1" in first.output and "simulated crash" in first.output
    record = json.loads((out / "tasks" / "tasks.json").read_text())
    assert record["seed=0"]["status"] == "done" and record["seed=1"]["status"] == "failed"
    assert "simulated crash in cell seed=1" in record["seed=1"]["error"]
    assert [row["seed"] for row in _figures(out / "sweep.csv")] == ["0"]
    done = [out / "seed=0" / name for name in ("metrics.json", "model.safetensors", "log.jsonl")]
    stamps = [path.stat().st_mtime_ns for path in done]

    monkeypatch.undo()
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert [row["seed"] for row in _figures(out / "sweep.csv")] == ["0", "1"]
    assert [path.stat().st_mtime_ns for path in done] == stamps  # seed=0 not even reopened
    assert json.loads((out / "tasks" / "tasks.json").read_text())["seed=1"]["status"] == "done"


def _stage(value: int) -> dict:
    return {"value": value, "pid": os.getpid()}


def _stage_killed_once(marker: str, value: int) -> dict:
    """A stage whose process is killed the first time it runs (a node lost mid-task)."""
    if not Path(marker).exists():
        Path(marker).write_text("killed once")
        os.kill(os.getpid(), signal.SIGKILL)
    return _stage(value)


def test_killed_task_is_recorded_and_rerun_recomputes_only_it(tmp_path, ray_cluster):
    marker = str(tmp_path / "marker")
    calls = {"attack/a": StageCall(_stage, (1,)),
             "attack/b": StageCall(_stage_killed_once, (marker, 2), num_cpus=1)}
    executor = RayExecutor(max_retries=0, progress=False)
    with pytest.raises(TaskFailed, match="attack/b"):
        map_stages(executor, RunDir(tmp_path / "run"), calls)
    run = RunDir(tmp_path / "run")  # a new parent process reads the truth from files
    assert run.done("attack/a") and not run.done("attack/b")
    record = json.loads((tmp_path / "run" / "tasks" / "tasks.json").read_text())
    assert record["attack/b"]["status"] == "failed" and record["attack/b"]["error"]
    stamp = stage_file(run.path, "attack/a").stat().st_mtime_ns
    first_pid = run.stages["attack/a"]["pid"]

    results = map_stages(executor, run, calls)
    assert list(results) == ["attack/a", "attack/b"]
    assert results["attack/a"] == {"value": 1, "pid": first_pid}  # reused, not recomputed
    assert results["attack/b"]["value"] == 2
    assert stage_file(run.path, "attack/a").stat().st_mtime_ns == stamp
    again = json.loads((tmp_path / "run" / "tasks" / "tasks.json").read_text())
    assert again["attack/a"] == record["attack/a"] and again["attack/b"]["status"] == "done"


def test_map_stages_in_process_keeps_order_and_picks_up_unrecorded_results(tmp_path):
    order = []
    calls = {f"cell/{i}": StageCall(_record_call, (order, i)) for i in (2, 0, 1)}
    run = RunDir(tmp_path / "run")
    assert map_stages(None, run, calls) == {f"cell/{i}": {"i": i} for i in (2, 0, 1)}
    assert order == [2, 0, 1]  # in this process, in the given order (today's behaviour)
    assert [k for k in run.stages if k != "_seconds"] == ["cell/2", "cell/0", "cell/1"]
    # A task finished but its parent died before recording it: the stage file is the truth.
    path = stage_file(tmp_path / "other", "cell/9")
    path.parent.mkdir(parents=True)
    path.write_text('{"i": 9}')
    other = RunDir(tmp_path / "other")
    assert map_stages(LocalExecutor(progress=False), other,
                      {"cell/9": StageCall(_record_call, (order, 9))}) == {"cell/9": {"i": 9}}
    assert order == [2, 0, 1] and other.done("cell/9")
    with pytest.raises(ValueError, match="plain names"):
        stage_file(tmp_path, "cell/../x")


def _record_call(order: list, i: int) -> dict:
    order.append(i)
    return {"i": i}


def test_executor_options_fail_early_with_a_hint():
    assert time_minutes("90") == 90 and time_minutes("2:00:00") == 120
    assert time_minutes("1-12") == 36 * 60 and time_minutes("45:30") == 46
    with pytest.raises(ValueError, match="HH:MM:SS"):
        time_minutes("two hours")
    with pytest.raises(ValueError, match="did you mean 'slurm'"):
        make_executor("slurn")
    with pytest.raises(ValueError, match="--partition"):
        make_executor("ray", partition="gpu")
    assert isinstance(make_executor("slurm", partition="gpu", time="1:00:00"), SlurmExecutor)
    result = CliRunner().invoke(main, ["sweep", CONFIG, "--grid", "seed=0",
                                       "--executor", "local", "--gpus-per-task", "1"])
    assert result.exit_code == 2 and "--gpus-per-task" in result.output


def test_run_sends_a_single_run_whole_to_the_executor(tmp_path, ray_cluster):
    out = tmp_path / "run"
    args = ["run", CONFIG, "--out", str(out), "--executor", "ray", "--cpus-per-task", "1", "-q"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(result.output[:result.output.rindex("}") + 1]) == metrics
    record = json.loads((out / "tasks" / "tasks.json").read_text())
    assert record == {"digits_clean": {**record["digits_clean"], "executor": "ray",
                                       "status": "done"}}
