"""The CLI end to end on a tiny run: train, resume, evaluate, analyze, bad input."""

import json

from click.testing import CliRunner

from snnbackdoor.cli import main


def test_train_resume_evaluate_analyze(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "configs/digits_clean.yaml", "--out", str(out), "--set", "train.epochs=3",
            "--set", "train.progress=false"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"clean_ca", "val_accuracy"} and 0.3 < metrics["clean_ca"] <= 1
    assert (out / "model.safetensors").exists() and (out / "config.yaml").exists()
    again = runner.invoke(main, args)
    assert again.exit_code == 0
    assert '"status": "reused"' in (out / "log.jsonl").read_text()
    assert json.loads((out / "metrics.json").read_text()) == metrics

    result = runner.invoke(main, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["models"]["model"]["accuracy"] == metrics["clean_ca"]

    result = runner.invoke(main, ["analyze", str(out), "--set", "analyze.v_thresholds=[1.0,2.0]",
                                  "--set", "analyze.taus=[2.0]", "--set", "analyze.powers=[1.0]"])
    assert result.exit_code == 0, result.output
    assert "| v_threshold | 2 |" in result.output
    assert (out / "figures" / "analysis_model.png").stat().st_size > 1000
    assert json.loads((out / "analysis.json").read_text())["v_threshold"][0]["value"] == 1.0


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "configs/digits_clean.yaml", "--set", "model.tau=1.0"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "tau=2.0" in result.output
    result = runner.invoke(main, ["train", "configs/digits_clean.yaml", "--set",
                                  "dataset.root=/nonexistent"])
    assert result.exit_code == 2


def test_datasets_lists_the_embedded_digits():
    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0 and "digits" in result.output and "embedded" in result.output
