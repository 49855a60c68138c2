"""Look at a finished run again: evaluate its models, or run the Fig. 2 neuron sweep on one."""

from __future__ import annotations

from pathlib import Path

from .analysis import neuron_sweep
from .checkpoint import CheckpointError, load_model
from .config import read_yaml
from .experiments.base import dataset_from_config, parse_config
from .io import atomic_write_json
from .neurons import count_spikes
from .report.sweeps import plot_sweep, sweep_table
from .training import evaluate
from .util import resolve_device


def open_run(run_dir: str | Path, overrides=()):
    """The run's resolved config and dataset (on the config's device)."""
    run_dir = Path(run_dir)
    config = parse_config(read_yaml(run_dir / "config.yaml"), overrides)
    device = resolve_device(config.device)
    return config, dataset_from_config(config, device), device


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict:
    """Accuracy and mean spikes per sample of each model file in the run."""
    config, data, device = open_run(run_dir)
    chosen = getattr(data, split)
    paths = sorted(Path(run_dir).glob("*.safetensors"))
    if not paths:
        raise CheckpointError(f"no model file (*.safetensors) in {run_dir}")
    result = {}
    for path in paths:
        model = load_model(path, device)
        row = {"accuracy": evaluate(model, chosen)}
        if not model.spec.ann:
            spikes = count_spikes(model, chosen.floats())["total"]
            row["spikes_per_sample"] = float(spikes.mean())
        result[path.stem] = row
    return {"split": split, "models": result}


def analyze_run(run_dir: str | Path, model_name: str = "model", overrides=()) -> tuple:
    """Sweep V_thr, tau and q on the test split; write analysis.json and a figure."""
    run_dir = Path(run_dir)
    config, data, device = open_run(run_dir, overrides)
    model = load_model(run_dir / f"{model_name}.safetensors", device)
    grids = config.analyze
    result = neuron_sweep(model, data.test, grids.v_thresholds, grids.taus, grids.powers)
    nominal = {"v_threshold": model.spec.v_threshold, "tau": model.spec.tau, "power": 1.0}
    json_path = run_dir / "analysis.json"
    atomic_write_json(json_path, {"model": model_name, "split": "test", "nominal": nominal,
                                  **result})
    figure = run_dir / "figures" / f"analysis_{model_name}.png"
    plot_sweep(result, figure, nominal, title=f"{config.name}: {model_name} (test split)")
    return sweep_table(result), [json_path, figure]

