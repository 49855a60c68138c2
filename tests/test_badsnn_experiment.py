"""The BadSNN experiment end to end on a tiny budget: every output, resume, CLI demo keys."""

import json

from snnbackdoor.experiments.base import parse_config, run_experiment

TINY = {
    "kind": "badsnn",
    "name": "tiny",
    "train": {"epochs": 3, "progress": False},
    "badsnn": {"v_threshold_t": 1.8, "v_thresholds_a": [1.0, 1.3], "deepfool_samples": 48,
               "deepfool_max_iter": 10},
    "unet": {"epochs": 2, "width": 8, "progress": False},
    "analyze": {"v_thresholds": [1.0, 2.0], "taus": [2.0], "powers": [1.0, 2.0]},
}


def test_badsnn_run_writes_every_output_and_resumes(tmp_path):
    result = run_experiment(parse_config(TINY), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"clean_ca", "base_ca", "selected", "grid", "asr_o_clean_model",
                            "seconds"}
    assert set(metrics["selected"]) == {"v_threshold_a", "tau_a", "ca", "asr_p", "asr_o"}
    assert len(metrics["grid"]) == 2 and all(set(r) == set(metrics["selected"])
                                             for r in metrics["grid"])
    assert 0 <= metrics["asr_o_clean_model"] <= 1 and metrics["seconds"]["total"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "| Clean CA | Base CA | V_thr^a |" in report and "Control" in report
    for name in ("fig2_clean", "fig2_badsnn", "fig3_grid", "fig5_triggers"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    assert (tmp_path / "trigger_o.safetensors").exists()
    assert (tmp_path / "badsnn_deployed.json").exists()

    again = run_experiment(parse_config(TINY), tmp_path)
    assert again.metrics["selected"] == result.metrics["selected"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    reused = {e["stage"] for e in log if e.get("status") == "reused"}
    assert {"clean_model", "badsnn_model", "trigger_o", "grid", "control"} <= reused
