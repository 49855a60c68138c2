"""`snnbackdoor scan` on run directories and model files, and the `kind: scan` population
benchmark end to end on a tiny budget (tables, figure, resume)."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from snnbackdoor.cli import main
from snnbackdoor.experiments.base import parse_config, run_experiment

SCANNERS = {"tmpbd", "trigger_inversion", "neuron_scan"}
FAST = {"tmpbd": {"steps": 3, "restarts": 1}, "trigger_inversion": {"steps": 3}}


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    """A finished one-epoch train run on 8x8 digits (T=2)."""
    run = tmp_path_factory.mktemp("scan") / "run"
    run_experiment(parse_config({"kind": "train", "name": "t",
                                 "dataset": {"name": "digits", "options": {"size": 8}},
                                 "model": {"T": 2}, "train": {"epochs": 1, "progress": False}}),
                   run)
    return run


def test_scan_a_train_run_prints_one_json_object_and_writes_beside_it(train_run):
    done = CliRunner().invoke(main, ["scan", str(train_run), "--json"])
    assert done.exit_code == 0, done.output
    record = json.loads(done.output)
    assert set(record) == {"verdict", "target", "detectors"}
    assert record["verdict"] in ("clean", "backdoored") and set(record["detectors"]) == SCANNERS
    flagged = [d for d in record["detectors"].values() if d["flagged"]]
    assert (record["verdict"] == "backdoored") == bool(flagged)
    assert (record["target"] is None) == (record["verdict"] == "clean")
    full = json.loads((train_run / "scan.json").read_text())
    assert full["dataset"] == "digits" and full["model"].endswith("model.safetensors")
    assert len(full["detectors"]["neuron_scan"]["info"]["sweep"]) > 20
    assert (train_run / "scan.png").stat().st_size > 1000
    table = CliRunner().invoke(main, ["scan", str(train_run)]).output
    assert "verdict: " in table and all(name in table for name in SCANNERS)


def test_scan_refuses_what_is_no_model_or_the_wrong_data(train_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = CliRunner().invoke(main, ["scan", str(empty)])
    assert refused.exit_code == 2 and "holds no final model" in refused.output
    path = train_run / "model.safetensors"
    nodata = CliRunner().invoke(main, ["scan", str(path)])
    assert nodata.exit_code == 2 and "--data" in nodata.output
    wrong = CliRunner().invoke(main, ["scan", str(path), "--data", "digits"])  # 16x16
    assert wrong.exit_code == 2 and "1x8x8 inputs" in wrong.output
    assert not (train_run / "model_scan.json").exists()


def test_population_benchmark_scores_every_scanner_per_attack_and_resumes(tmp_path):
    config = {"kind": "scan", "name": "tiny", "dataset": {"name": "digits",
                                                          "options": {"size": 8}},
              "model": {"T": 2}, "train": {"epochs": 1, "progress": False},
              "population": {"clean": 2, "badsnn": 1, "badnet": 1},
              "attack_options": {"badsnn": {"v_threshold_t": 1.6}, "badnet": {"size": 2}},
              "scanner_options": FAST}
    run_experiment(parse_config(config), tmp_path)
    rows = list(csv.DictReader((tmp_path / "scan_table.csv").open()))
    assert list(rows[0])[:6] == ["detector", "attack", "auroc", "target_accuracy",
                                 "clean_models", "backdoored_models"]
    assert {(r["detector"], r["attack"]) for r in rows} == {
        (d, a) for d in SCANNERS for a in ("badsnn", "badnet")}
    assert all(r["clean_models"] == "2" and r["backdoored_models"] == "1" for r in rows)
    assert all(0 <= float(r["auroc"]) <= 1 for r in rows)
    scores = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert len(scores) == 4 * 3 and {r["attack"] for r in scores} == {"clean", "badsnn",
                                                                       "badnet"}
    assert (tmp_path / "figures" / "scan_scores.png").stat().st_size > 1000
    assert "| neuron_scan | badsnn |" in (tmp_path / "report.md").read_text()
    before = (tmp_path / "models" / "clean_0.safetensors").stat().st_mtime_ns
    run_experiment(parse_config(config), tmp_path)  # resumes: nothing is trained again
    assert (tmp_path / "models" / "clean_0.safetensors").stat().st_mtime_ns == before
    log = (tmp_path / "log.jsonl").read_text()
    assert log.count('"reused"') >= 4
