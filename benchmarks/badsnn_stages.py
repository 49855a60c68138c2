"""Stage times of the BadSNN demo, and batched DeepFool against the per-image reference loop.

    python benchmarks/badsnn_stages.py [--runs 3] [--samples 64] [--repeats 3] [--threads N]
                                       [--quick] [--no-deepfool]

1. Runs the demo job (`snnbackdoor demo`, configs/badsnn_digits.yaml) `--runs` times in
   temporary folders and prints the seconds of every stage of the median run (clean model,
   malicious config, collapse class, dual-spike training, the T_p grid, the eps search on
   the control, T_o, the T_o grid, the controls, the curves, spikes, figures) and the median
   wall time. `--quick` leaves out the control and the figures.
2. Times DeepFool, the costliest inner step of T_o, on `--samples` digits against the
   backdoored demo model: ours (`triggers.deepfool.deepfool`, the whole batch at once: one
   forward/backward per candidate class per iteration, finished samples masked out) against
   the reference shape of the original DeepFool code, one image at a time (the same function
   with `batch_size=1`). Repetitions interleave the two; figures are medians. Both must flip
   the same share of samples.

The last line printed is JSON: the stage seconds, `deepfool_batched_s`, `deepfool_per_image_s`
and `deepfool_ratio` (per-image / batched: above 1 means ours is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from snnbackdoor.checkpoint import load_model
from snnbackdoor.config import read_yaml
from snnbackdoor.data import load_dataset
from snnbackdoor.experiments.base import parse_config, run_experiment
from snnbackdoor.triggers.deepfool import deepfool


def timed_deepfool(model, x: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(seconds, flip rate) of one DeepFool pass over `x` in batches of `batch_size`."""
    start = time.perf_counter()
    _, flipped = deepfool(model, x, batch_size=batch_size)
    return time.perf_counter() - start, float(flipped.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64, help="images for the DeepFool timing")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--quick", action="store_true", help="demo without control and figures")
    parser.add_argument("--runs", type=int, default=1, help="demo runs (median wall time)")
    parser.add_argument("--no-deepfool", action="store_true", help="skip the DeepFool timing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    summary: dict = {}
    data = read_yaml(Path(__file__).resolve().parents[1] / "configs" / "badsnn_digits.yaml")
    data["name"] = "demo"
    if args.quick:
        data["figures"] = False
        data["badsnn"]["control"] = False
    walls, stages = [], []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            out = Path(folder) / f"demo{run}"
            start = time.perf_counter()
            metrics = run_experiment(parse_config(data), out).metrics
            walls.append(round(time.perf_counter() - start, 2))
            stages.append(metrics["seconds"])
            print(f"demo run {run + 1}: {walls[-1]:.1f} s")
        middle = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
        summary["demo_wall_s"] = walls
        summary["demo_wall_median_s"] = walls[middle]
        summary["stages_s"] = stages[middle]
        for stage, seconds in stages[middle].items():
            print(f"stage {stage:24s} {seconds:8.2f} s")
        model = load_model(out / "badsnn_model.safetensors")
    if args.no_deepfool:
        print(json.dumps(summary))
        return

    x = load_dataset("digits").train.floats()[: args.samples]
    timed_deepfool(model, x[:4], 4)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {"batched": [], "per_image": []}
    for rep in range(args.repeats):
        order = ("batched", "per_image") if rep % 2 == 0 else ("per_image", "batched")
        for name in order:
            runs[name].append(timed_deepfool(model, x, len(x) if name == "batched" else 1))
            seconds, flips = runs[name][-1]
            print(f"rep {rep + 1} DeepFool {name:9s}: {seconds:.3f} s for {len(x)} images, "
                  f"flipped {flips:.3f}")
    median = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
    summary.update({
        "deepfool_samples": len(x),
        "deepfool_batched_s": round(median["batched"], 4),
        "deepfool_per_image_s": round(median["per_image"], 4),
        "deepfool_ratio": round(median["per_image"] / median["batched"], 2),
        "deepfool_flip_rate": {k: v[-1][1] for k, v in runs.items()},
        "threads": torch.get_num_threads(),
    })
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
