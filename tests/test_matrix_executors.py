"""The attack x defense matrix on executors: a cut-down digits matrix gives byte-identical
tables here, on a real local Ray cluster and as submitit jobs; a cell task killed mid-run is
finished by the next run (whatever executor) without recomputing the others."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest
import ray
import ray.cloudpickle

from snnbackdoor.executors import RayExecutor, SlurmExecutor, Task, TaskFailed, stage_file
from snnbackdoor.experiments.base import parse_config, run_experiment

# Task wrappers of this test module travel to Ray workers by value.
for _pickler in (cloudpickle, ray.cloudpickle):
    _pickler.register_pickle_by_value(sys.modules[__name__])

ATTACKS, DEFENSES, DETECTORS = ["badnet", "blend"], ["none", "finetune"], ["strip"]
CELLS = [f"cell/{a}/{d}" for a in ATTACKS for d in DEFENSES] + \
    [f"detect/{a}/{d}" for a in ATTACKS for d in DETECTORS]
KILLED = "cell/blend/finetune"


def matrix_config() -> dict:
    """Two attacks x (two defenses + one detector) on 8x8 digits, two epochs per model (CA
    about 0.8-0.95, so the figures compared are not those of a model at chance)."""
    return {
        "kind": "table2", "name": "tiny", "device": "cpu",
        "dataset": {"name": "digits", "options": {"size": 8}},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "progress": False},
        "attacks": ATTACKS, "defenses": DEFENSES, "detectors": DETECTORS,
        "poison_ratio": 0.1, "detection_samples": 100,
        "defense_options": {"finetune": {"epochs": 1}},
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The matrix run in this process, cell after cell (the reference)."""
    out = tmp_path_factory.mktemp("matrix") / "local"
    run_experiment(parse_config(matrix_config()), out)
    return out




def _figures(value):
    """Metrics without their timings (the only values allowed to differ)."""
    if isinstance(value, dict):
        return {k: _figures(v) for k, v in value.items() if "seconds" not in k}
    return value


def _same_tables(run: Path, reference: Path) -> None:
    for name in ("table.csv", "detection.csv"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
    rows = (reference / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + len(ATTACKS) * len(DEFENSES)


def test_matrix_tables_are_identical_under_local_and_ray(tmp_path, local_run, ray_cluster):
    out = tmp_path / "ray"
    result = run_experiment(parse_config(matrix_config()), out, RayExecutor(progress=False))
    _same_tables(out, local_run)
    # One task per stage, each in a worker: clean, one per attack, one per cell.
    record = json.loads((out / "tasks" / "tasks.json").read_text())
    stages = ["clean", *(f"attack/{a}" for a in ATTACKS), *CELLS]
    assert sorted(record) == sorted(stages)
    assert {v["executor"] for v in record.values()} == {"ray"}
    assert all(stage_file(out, name).exists() for name in stages)
    # Each attack trained once in its own folder; the parent's stages.json is the parent's.
    for attack in ATTACKS:
        events = [json.loads(line)["status"] for line in
                  (out / "attacks" / attack / "log.jsonl").read_text().splitlines()]
        assert events[0] == "done" and set(events[1:]) == {"reused"}
    local = json.loads((local_run / "metrics.json").read_text())
    assert _figures(result.metrics["cells"]) == _figures(local["cells"])
    assert _figures(result.metrics["attacks"]) == _figures(local["attacks"])
    assert result.metrics["clean_ca"] == local["clean_ca"]


@pytest.mark.slow
def test_matrix_tables_are_identical_as_submitit_jobs(tmp_path, local_run, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # jobs inherit it: the threads of the reference
    out = tmp_path / "slurm"
    executor = SlurmExecutor(cluster="local", time=10, poll_s=0.2, progress=False)
    run_experiment(parse_config(matrix_config()), out, executor)
    _same_tables(out, local_run)
    jobs = json.loads((out / "tasks" / "slurm" / "jobs.json").read_text())
    assert sorted(jobs) == sorted(["clean", *(f"attack/{a}" for a in ATTACKS), *CELLS])
    assert len({job["job_id"] for job in jobs.values()}) == len(jobs)  # one job per stage


def _killed_mid_cell(marker: str, fn, args: tuple, kwargs: dict):
    """A cell task whose process dies (SIGKILL, as on a lost node) inside the cell's
    measurement, after the dataset and the attacked model were loaded."""
    import snnbackdoor.experiments.table2_cells as cells

    Path(marker).write_text("killed")

    def die(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    cells.measure = die
    return fn(*args, **kwargs)


class KillOneCell(RayExecutor):
    """Ray, except that the process of one chosen cell task is killed mid-run."""

    def __init__(self, key: str, marker: Path) -> None:
        super().__init__(max_retries=0, progress=False)
        self.key, self.marker = key, str(marker)

    def _launch(self, tasks, log_dir):
        tasks = [Task(t.key, _killed_mid_cell, (self.marker, t.fn, t.args, dict(t.kwargs)))
                 if t.key == self.key else t for t in tasks]
        return super()._launch(tasks, log_dir)


def test_a_killed_cell_is_finished_by_the_next_run_and_nothing_else_is_redone(
        tmp_path, local_run, ray_cluster):
    out, marker = tmp_path / "run", tmp_path / "killed"
    with pytest.raises(TaskFailed, match=KILLED):
        run_experiment(parse_config(matrix_config()), out, KillOneCell(KILLED, marker))
    assert marker.exists() and not (out / "metrics.json").exists()
    record = json.loads((out / "tasks" / "tasks.json").read_text())
    assert record[KILLED]["status"] == "failed" and record[KILLED]["error"]
    assert [k for k, v in record.items() if v["status"] != "done"] == [KILLED]
    assert not stage_file(out, KILLED).exists()
    # Finished work, by file: stage results, the clean and attacked models.
    kept = [stage_file(out, name) for name in CELLS if name != KILLED]
    kept += [out / "clean.safetensors", *(out / "attacks" / a / "model.safetensors"
                                          for a in ATTACKS)]
    stamps = [path.stat().st_mtime_ns for path in kept]
    before = len((out / "log.jsonl").read_text().splitlines())

    # The next run is a plain local one: it takes over what Ray finished.
    result = run_experiment(parse_config(matrix_config()), out)
    events = [json.loads(line) for line in
              (out / "log.jsonl").read_text().splitlines()[before:]]
    done = [e["stage"] for e in events if e["status"] == "done"]
    assert done == [KILLED], events
    assert [path.stat().st_mtime_ns for path in kept] == stamps
    _same_tables(out, local_run)
    assert _figures(result.metrics["cells"][KILLED]) == _figures(json.loads(
        (local_run / "metrics.json").read_text())["cells"][KILLED])


def test_stage_files_left_by_a_dead_parent_are_adopted_by_a_local_run(tmp_path, local_run):
    """A parent that died after its tasks wrote their stage files but before it recorded
    them: the next run, here with no executor, records them instead of recomputing."""
    out = tmp_path / "run"
    shutil.copytree(local_run, out)
    stages = json.loads((out / "stages.json").read_text())
    for name in CELLS:
        stage_file(out, name).parent.mkdir(parents=True, exist_ok=True)
        stage_file(out, name).write_text(json.dumps(stages.pop(name)))
    (out / "stages.json").write_text(json.dumps(stages))
    (out / "metrics.json").unlink()
    before = len((out / "log.jsonl").read_text().splitlines())
    run_experiment(parse_config(matrix_config()), out)
    events = [json.loads(line) for line in
              (out / "log.jsonl").read_text().splitlines()[before:]]
    adopted = [e["stage"] for e in events if e["status"] == "done"]
    assert sorted(adopted) == sorted(CELLS) and all(e.get("seconds") is None
                                                    for e in events if e["status"] == "done")
    _same_tables(out, local_run)
