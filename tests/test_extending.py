"""README "Extending": the plugin example, installed through a real entry point, is listed
and runs in a matrix next to the built-in components."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

README = Path(__file__).resolve().parents[1] / "README.md"
CLI = [sys.executable, "-m", "snnbackdoor.cli"]


def plugin_source() -> str:
    text = README.read_text()
    match = re.search(r"<!-- plugin: my_backdoors.py -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its plugin example"
    return match.group(1)


def install_plugin(tmp_path: Path) -> dict:
    """The README's module plus a dist-info with its entry point, on PYTHONPATH."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_backdoors.py").write_text(plugin_source())
    dist = site / "my_backdoors-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my_backdoors\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[snnbackdoor.plugins]\nmy_backdoors = my_backdoors\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_the_readme_plugin_is_listed_and_runs_in_a_matrix(tmp_path):
    env = install_plugin(tmp_path)
    listed = json.loads(subprocess.run(CLI + ["list", "--json"], env=env, check=True,
                                       capture_output=True, text=True).stdout)
    assert listed["attack"]["stripe"]["options"] == {"value": 1.0}
    assert listed["defense"]["head_retrain"]["options"] == {"epochs": 30, "lr": 0.01}

    config = {
        "kind": "table2", "name": "plugin", "device": "cpu", "seed": 0,
        "dataset": {"name": "digits", "options": {"size": 8}},
        "train": {"epochs": 4, "batch_size": 64, "progress": False},
        "attacks": ["stripe"], "defenses": ["none", "head_retrain"], "detectors": [],
        "target": 2, "poison_ratio": 0.1,
        "defense_options": {"head_retrain": {"epochs": 20}},
    }
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    done = subprocess.run(CLI + ["run", str(path), "--out", str(out)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["defense"]: r for r in csv.DictReader(open(out / "table.csv"))}
    assert set(rows) == {"none", "head_retrain"}
    assert float(rows["none"]["asr"]) > 0.8  # the stripe backdoor was planted
    assert float(rows["head_retrain"]["ca"]) > 0.5  # the repaired model still classifies

    config["defenses"] = ["none", "head_retrian"]
    path.write_text(yaml.safe_dump(config))
    typo = subprocess.run(CLI + ["run", str(path), "--out", str(tmp_path / "typo")], env=env,
                          capture_output=True, text=True)
    assert typo.returncode != 0 and "Did you mean 'head_retrain'" in typo.stderr
