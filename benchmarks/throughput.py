"""Training throughput of our fast path against a plain SpikingJelly loop, in the same run.

    python benchmarks/throughput.py            # full run (a few minutes on a 2-core CPU)
    python benchmarks/throughput.py --quick    # fewer repetitions, smaller tables
    python benchmarks/throughput.py --compile  # also time ours with torch.compile

Models: `digits_net` on the embedded digits, and `spiking_resnet19` (T=4) on synthetic
uint8 32x32 images with a small batch. Ours is `snnbackdoor.training.train` as users call
it: data held on the device (uint8 where stored so), batches by index gather, crop/flip on
the whole batch on the device, the first conv + BN run once for all T steps (their input
is the same image at every step), channels-last, the fused CPU neuron kernel (SpikingJelly's
CUDA/Triton kernel on a GPU). The plain loop (benchmarks/plain_loop.py) is a DataLoader over
a Dataset that crops and flips one sample at a time in `__getitem__`, `num_workers=0`, the
SpikingJelly torch backend, NCHW, on the same model object with the same initial weights.
Repetitions interleave ours and plain (alternating which goes first) and the figures are
medians, so load from other processes hits both alike. Peak memory comes from one
subprocess per variant (ru_maxrss; torch.cuda.max_memory_allocated on CUDA).

The last line printed is JSON: `digits_net_ratio` and `resnet19_ratio` (ours / plain
images per second) plus the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from plain_loop import per_sample_loader, plain_epoch, plain_model, plain_optimizer

from snnbackdoor.backend import neuron_implementations, set_neuron_backend
from snnbackdoor.data import Split, load_dataset
from snnbackdoor.data.augment import RandomCropFlip, crop_padding_for, dataset_augmentation
from snnbackdoor.models import ModelSpec, build_model
from snnbackdoor.training import TrainConfig, train

LR = 1e-3
SEED = 0
CIFAR10_TRAIN_IMAGES = 45_000  # CIFAR-10's 50,000 less the 10% validation carve


# ---------------------------------------------------------------- workloads


class Workload:
    """One model on one dataset: builds identical models and runs an epoch of each loop."""

    def __init__(self, name: str, model_name: str, x: np.ndarray, y: np.ndarray,
                 num_classes: int, T: int, batch_size: int, padding: int, hflip: bool,
                 device: torch.device):
        self.name, self.model_name, self.T = name, model_name, T
        self.x, self.y, self.num_classes = x, y, num_classes
        self.batch_size, self.padding, self.hflip, self.device = batch_size, padding, hflip, device
        floats = torch.from_numpy(x[:256]).float()
        if x.dtype == np.uint8:
            floats /= 255.0
        self.mean = floats.mean(dim=(0, 2, 3)).tolist()
        self.std = floats.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        # Ours: the whole split on the device, in its stored dtype.
        self.split = Split(torch.from_numpy(x), torch.from_numpy(y)).to(device)
        self.augment = RandomCropFlip(padding, hflip)

    def model(self, T: int | None = None):
        torch.manual_seed(SEED)
        spec = ModelSpec(name=self.model_name, num_classes=self.num_classes,
                         in_channels=self.x.shape[1], image_size=self.x.shape[-1],
                         T=T or self.T, mean=self.mean, std=self.std)
        return build_model(spec).to(self.device)

    def ours_runner(self, compile: bool = False, T: int | None = None,
                    n: int | None = None, batch_size: int | None = None,
                    channels_last: bool = True, fused: bool = True,
                    static_prefix: bool = True) -> Callable[[], int]:
        """An epoch of our trainer over the first `n` images; returns images seen.
        `channels_last=False` / `fused=False` / `static_prefix=False` switch one piece off
        (ablations)."""
        model = self.model(T)
        if not fused:
            set_neuron_backend(model, "spikingjelly")
        if not static_prefix:
            model.static_prefix = 0
        split = self.split if n is None else self.split.subset(torch.arange(n))
        batch = batch_size or self.batch_size
        calls = iter(range(10**9))

        def run() -> int:
            config = TrainConfig(epochs=1, batch_size=batch, optimizer="adam", lr=LR,
                                 progress=False, seed=next(calls), augment=True,
                                 channels_last=channels_last, compile=compile)
            if compile:  # keep one compiled graph across epochs (full batches only)
                train_compiled(model, split, config, self.augment)
            else:
                train(model, split, config, augment=self.augment)
            return len(split)

        return run

    def plain_runner(self, T: int | None = None, n: int | None = None,
                     batch_size: int | None = None) -> Callable[[], int]:
        """An epoch of the peer loop over the first `n` images; returns images seen."""
        model = plain_model(self.model(T))
        x, y = (self.x, self.y) if n is None else (self.x[:n], self.y[:n])
        batch = batch_size or self.batch_size
        loader = per_sample_loader(x, y, batch, self.padding, self.hflip, SEED, self.device)
        opt, sched = plain_optimizer(model, "adam", LR, 10**6)

        def run() -> int:
            plain_epoch(model, loader, opt, sched, self.device)
            return len(y)

        return run


_COMPILED: dict[int, object] = {}


def train_compiled(model, split, config, augment) -> None:
    """Our trainer on a model compiled once, in place, for all the epochs of the benchmark
    (what `TrainConfig(compile=True)` does inside one multi-epoch `train` call)."""
    if id(model) not in _COMPILED:
        model.compile()
        _COMPILED[id(model)] = model
    config.compile = False  # already compiled in place; train() must not undo it
    train(model, split, config, augment=augment)


def digits_workload(device: torch.device, batch_size: int) -> Workload:
    bundle = load_dataset("digits")
    info = bundle.info
    augment = dataset_augmentation(info)
    return Workload("digits_net", "digits_net", bundle.train.x.numpy(), bundle.train.y.numpy(),
                    info.num_classes, 4, batch_size, augment.padding, augment.hflip, device)


def resnet_workload(device: torch.device, batch_size: int, steps: int) -> Workload:
    rng = np.random.default_rng(SEED)
    n = batch_size * steps
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    return Workload("resnet19", "spiking_resnet19", x, y, 10, 4, batch_size,
                    crop_padding_for(32), True, device)


# ---------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], int], device: torch.device) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, images) of one call."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    images = run()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, images


def interleaved(runners: dict[str, Callable[[], int]], reps: int,
                device: torch.device) -> dict[str, dict]:
    """Warm each runner once, then `reps` rounds with the order rotated every round."""
    warm = {name: timed(run, device)[0] for name, run in runners.items()}
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runners}
    names = list(runners)
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            samples[name].append(timed(runners[name], device))
    out = {}
    for name, rows in samples.items():
        rates = [images / wall for wall, _, images in rows]
        cpu_rates = [images / max(cpu, 1e-9) for _, cpu, images in rows]
        out[name] = {
            "images_per_s": round(statistics.median(rates), 2),
            "images_per_cpu_s": round(statistics.median(cpu_rates), 2),
            "images_per_s_all": [round(r, 2) for r in rates],
            "first_epoch_s": round(warm[name], 3),
        }
    return out


def compare(workload: Workload, reps: int, with_compile: bool, ablate: bool = False) -> dict:
    """Ours vs plain (and ours compiled, and ours with one piece off) on one workload."""
    runners = {"ours": workload.ours_runner(), "plain": workload.plain_runner()}
    if with_compile:
        runners["ours_compiled"] = workload.ours_runner(compile=True)
    if ablate:
        runners["ours_without_fused_neurons"] = workload.ours_runner(fused=False)
        runners["ours_without_channels_last"] = workload.ours_runner(channels_last=False)
        runners["ours_without_static_prefix"] = workload.ours_runner(static_prefix=False)
    result = interleaved(runners, reps, workload.device)
    ours, plain = result["ours"], result["plain"]
    summary = {
        "batch_size": workload.batch_size, "T": workload.T, "images_per_epoch": len(workload.y),
        "repetitions": reps, **{k: v for k, v in result.items()},
        "ratio": round(ours["images_per_s"] / plain["images_per_s"], 3),
        "cpu_time_ratio": round(ours["images_per_cpu_s"] / plain["images_per_cpu_s"], 3),
    }
    for name in result:
        if name.startswith("ours_"):
            summary[f"{name}_ratio"] = round(
                result[name]["images_per_s"] / plain["images_per_s"], 3)
    return summary


def scaling_table(workload: Workload, Ts: list[int], batches: list[int], steps: int,
                  device: torch.device) -> list[dict]:
    """Seconds per training step, ours and plain, as T grows and as the batch grows."""
    cells = [(T, workload.batch_size) for T in Ts]
    cells += [(workload.T, b) for b in batches if b != workload.batch_size]
    rows = []
    for T, batch in cells:
        n = batch * steps
        if n > len(workload.y):
            continue
        runners = {"ours": workload.ours_runner(T=T, n=n, batch_size=batch),
                   "plain": workload.plain_runner(T=T, n=n, batch_size=batch)}
        result = interleaved(runners, 1, device)
        row = {"model": workload.name, "T": T, "batch_size": batch}
        for name in runners:
            row[f"{name}_s_per_step"] = round(batch / result[name]["images_per_s"], 4)
        row["ratio"] = round(row["plain_s_per_step"] / row["ours_s_per_step"], 3)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- memory (one process each)


def process_memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MiB, from /proc (Linux). Elsewhere the
    peak from getrusage, which on Linux would also count the parent's memory before exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def probe_memory(variant: str, workload_name: str, args) -> dict:
    """Run one epoch of one variant; report the process's peak memory (own process)."""
    device = torch.device(args.device)
    workload = (digits_workload(device, args.digits_batch) if workload_name == "digits_net"
                else resnet_workload(device, args.resnet_batch, 2))
    run = workload.ours_runner() if variant == "ours" else workload.plain_runner()
    before_mb = process_memory_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run()
    peak_mb = process_memory_mb("VmHWM")
    report = {"peak_rss_mb": round(peak_mb, 1),
              "training_rss_growth_mb": round(peak_mb - before_mb, 1)}
    if device.type == "cuda":
        report["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return report


def memory_table(args, workloads: list[str]) -> dict:
    table = {}
    for name in workloads:
        for variant in ("ours", "plain"):
            command = [sys.executable, os.path.abspath(__file__), "--probe", variant, name,
                       "--device", args.device, "--digits-batch", str(args.digits_batch),
                       "--resnet-batch", str(args.resnet_batch)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            table[f"{name}_{variant}"] = (json.loads(lines[-1]) if lines
                                          else {"error": done.stderr[-300:]})
    return table


# ---------------------------------------------------------------- main


def print_table(rows: list[dict], keys: list[str]) -> None:
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and cells")
    parser.add_argument("--compile", action="store_true", help="also time ours + torch.compile")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--digits-batch", type=int, default=32)
    parser.add_argument("--resnet-batch", type=int, default=0, help="default: 8 CPU, 64 CUDA")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--ablate", action="store_true",
                        help="digits_net: also time ours without the fused neurons, "
                             "without channels-last and without the static prefix")
    parser.add_argument("--probe", nargs=2, metavar=("VARIANT", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.resnet_batch = args.resnet_batch or (64 if cuda else 8)
    if args.probe:
        print(json.dumps(probe_memory(args.probe[0], args.probe[1], args)))
        return

    reps = 3 if args.quick else 5
    # CPU: a ResNet-19 step takes seconds; 4 steps x 5 rounds keep the noise of a shared
    # machine below the gap being measured.
    resnet_steps = (10 if cuda else 1) if args.quick else (30 if cuda else 4)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"neurons={neuron_implementations(device)}")

    digits = digits_workload(device, args.digits_batch)
    digits_result = compare(digits, reps, args.compile, args.ablate)
    print(f"digits_net: ours {digits_result['ours']['images_per_s']} img/s, plain "
          f"{digits_result['plain']['images_per_s']} img/s, ratio {digits_result['ratio']}")
    for key, value in digits_result.items():
        if key.startswith("ours_") and key.endswith("_ratio"):
            print(f"  {key[:-6]}: {value} x plain")

    resnet = resnet_workload(device, args.resnet_batch, resnet_steps)
    resnet_result = compare(resnet, reps, args.compile and cuda)
    print(f"resnet19 T=4 batch {args.resnet_batch}: ours {resnet_result['ours']['images_per_s']}"
          f" img/s, plain {resnet_result['plain']['images_per_s']} img/s, "
          f"ratio {resnet_result['ratio']}")
    for result in (digits_result, resnet_result):
        result["cifar10_epoch_s_ours"] = round(
            CIFAR10_TRAIN_IMAGES / result["ours"]["images_per_s"], 1)
        result["cifar10_epoch_s_plain"] = round(
            CIFAR10_TRAIN_IMAGES / result["plain"]["images_per_s"], 1)

    Ts, batches = ([1, 4], [8, 64]) if args.quick else ([1, 2, 4, 8], [8, 16, 64, 128])
    scaling = scaling_table(digits, Ts, batches, 2 if args.quick else 3, device)
    if cuda:
        scaling += scaling_table(resnet_workload(device, 32, 8), [1, 2, 4], [64, 128], 4, device)
    print("\nSeconds per training step as T and the batch grow:")
    print_table(scaling, ["model", "T", "batch_size", "ours_s_per_step", "plain_s_per_step",
                          "ratio"])

    memory = {} if args.no_memory else memory_table(
        args, ["digits_net"] if args.quick else ["digits_net", "resnet19"])
    if memory:
        print("\nPeak memory (one process per variant):")
        for key, value in memory.items():
            print(f"  {key}: {value}")

    summary = {
        "digits_net_ratio": digits_result["ratio"],
        "resnet19_ratio": resnet_result["ratio"],
        "digits_net": digits_result,
        "resnet19": resnet_result,
        "scaling": scaling,
        "memory": memory,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "neuron_implementations": neuron_implementations(device),
        "quick": args.quick,
        "note": "ratio = ours / plain images per second (wall-clock medians of interleaved "
                "repetitions); cpu_time_ratio uses process CPU time instead",
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
