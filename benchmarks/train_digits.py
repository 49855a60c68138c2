"""Seconds per epoch of our trainer against a plain SpikingJelly loop on the embedded digits.

    python benchmarks/train_digits.py [--epochs 3] [--repeats 3] [--threads N]

Both train the same `digits_net` (same initial weights from the same seed) with the
`configs/digits_clean.yaml` recipe (Adam, lr 2e-3, cosine, batch 64, no augmentation) and
check validation accuracy after every epoch. Ours: `snnbackdoor.training.train`. Plain: a
DataLoader over a TensorDataset (`num_workers=0`), SpikingJelly's own neuron path, NCHW,
`functional.reset_net` after each batch (benchmarks/plain_loop.py). Repetitions interleave
the two, alternating which goes first, and the figures are medians.

What makes ours faster: batches are index gathers on tensors already on the device (no
per-sample `__getitem__`, no collate); the first conv + BN of a direct-encoded image run
once per batch instead of once per time step (their input is the same at every step); the
fused CPU LIF kernel (forward without an autograd graph, closed-form backward: about half
the time of SpikingJelly's reference on CPU); channels-last convolutions. On a GPU:
SpikingJelly's CUDA/Triton neuron kernel, bf16 autocast and the fused optimiser (the
plain loop gets the same autocast).

The last line printed is JSON with `ours_s_per_epoch`, `plain_s_per_epoch` and `ratio`
(plain / ours: above 1 means ours is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from plain_loop import plain_epoch, plain_evaluate, plain_model, plain_optimizer, tensor_loader

from snnbackdoor.data import load_dataset
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.training import TrainConfig, evaluate, train

BATCH_SIZE = 64
LR = 2e-3
SEED = 0


def ours(bundle, epochs: int, device: torch.device) -> tuple[float, float]:
    """(seconds, final validation accuracy) of our trainer."""
    torch.manual_seed(SEED)
    model = build_model(model_spec(ModelConfig(), bundle.info)).to(device)
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=SEED, progress=False)
    start = time.perf_counter()
    result = train(model, bundle.train, config, bundle.val)
    seconds = time.perf_counter() - start
    return seconds, result.history[-1]["val_accuracy"] if result.history else evaluate(
        model, bundle.val)


def plain(bundle, epochs: int, device: torch.device) -> tuple[float, float]:
    """(seconds, final validation accuracy) of the plain loop."""
    torch.manual_seed(SEED)
    model = plain_model(build_model(model_spec(ModelConfig(), bundle.info)).to(device))
    train_x, train_y = bundle.train.floats().cpu(), bundle.train.y.cpu()
    loader = tensor_loader(train_x, train_y, BATCH_SIZE, shuffle=True, seed=SEED)
    val_loader = tensor_loader(bundle.val.floats().cpu(), bundle.val.y.cpu(), BATCH_SIZE * 4,
                               shuffle=False)
    opt, sched = plain_optimizer(model, "adam", LR, epochs * len(loader))
    accuracy = 0.0
    start = time.perf_counter()
    for _ in range(epochs):
        plain_epoch(model, loader, opt, sched, device)
        accuracy = plain_evaluate(model, val_loader, device)
    return time.perf_counter() - start, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bundle = load_dataset("digits").to(device)
    ours(bundle, 1, device)  # warm-up: first-call costs of both paths
    plain(bundle, 1, device)
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
    for rep in range(args.repeats):
        order = ("ours", "plain") if rep % 2 == 0 else ("plain", "ours")
        for name in order:
            runs[name].append((ours if name == "ours" else plain)(bundle, args.epochs, device))
            seconds, accuracy = runs[name][-1]
            print(f"rep {rep + 1} {name:5s}: {seconds / args.epochs:.3f} s/epoch, "
                  f"val accuracy {accuracy:.3f}")
    per_epoch = {k: statistics.median(s for s, _ in v) / args.epochs for k, v in runs.items()}
    summary = {
        "ours_s_per_epoch": round(per_epoch["ours"], 4),
        "plain_s_per_epoch": round(per_epoch["plain"], 4),
        "ratio": round(per_epoch["plain"] / per_epoch["ours"], 3),
        "ours_val_accuracy": round(statistics.median(a for _, a in runs["ours"]), 4),
        "plain_val_accuracy": round(statistics.median(a for _, a in runs["plain"]), 4),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "batch_size": BATCH_SIZE,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
