"""Figures of event frames: clean vs triggered over time, as a PNG grid and an animated GIF,
and the figure-saving helpers every report uses (atomic writes, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..io import FileFormatError, atomic_write, load_tensors, save_tensors

GIF_FPS = 3
SAMPLE_FORMAT = "snnbackdoor-frames-sample/1"


def _rgb(frames: np.ndarray, scale: float) -> np.ndarray:
    """[P=2, H, W] counts -> RGB image: ON red, OFF blue, on black."""
    off, on = np.clip(frames[0] / scale, 0, 1), np.clip(frames[1] / scale, 0, 1)
    return np.stack([on, np.zeros_like(on), off], axis=-1)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save a figure atomically (the format from the path's suffix) and close it."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    finally:
        pyplot().close(fig)
    return Path(path)


def _write_gif(path: Path, save: Callable[[str], None]) -> Path:
    """`save(name)` writes a GIF to a file named `*.gif`; it lands atomically at `path`."""

    def write(tmp: str) -> None:
        named = f"{tmp}.gif"  # Pillow picks the format from the suffix
        try:
            save(named)
            os.replace(named, tmp)
        finally:
            if os.path.exists(named):
                os.unlink(named)

    return atomic_write(path, write)


def _numpy(frames: torch.Tensor) -> np.ndarray:
    return frames.detach().float().cpu().numpy()


def plot_frames(clean: torch.Tensor, triggered: dict[str, torch.Tensor], path: Path,
                bins: int = 4) -> Path:
    """Per trigger, one row: a few time bins of the clean sample, the triggered one, and the
    change (ON red, OFF blue; the change scaled to its own peak). ``clean`` is [T, P, H, W]."""
    plt = pyplot()
    num_frames = clean.shape[0]
    times = sorted({int(round(t)) for t in np.linspace(0, num_frames - 1, min(bins, num_frames))})
    clean_np = _numpy(clean)
    scale = max(float(clean_np.max()), 1e-6)
    groups = ("clean", "triggered", "change")
    cols = len(groups) * len(times)
    fig, axes = plt.subplots(len(triggered), cols, figsize=(1.3 * cols, 1.45 * len(triggered)),
                             squeeze=False)
    for row, (label, frames) in enumerate(triggered.items()):
        trig = _numpy(frames)
        diff = np.abs(trig - clean_np)
        diff_scale = max(float(diff.max()), 1e-12)
        images = {"clean": (clean_np, scale), "triggered": (trig, scale),
                  "change": (diff, diff_scale)}
        for g, group in enumerate(groups):
            source, s = images[group]
            for k, t in enumerate(times):
                ax = axes[row, g * len(times) + k]
                ax.imshow(_rgb(source[t], s), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{group} t={t}", fontsize=7)
                if g == 0 and k == 0:
                    ax.set_ylabel(label, fontsize=7)
    fig.suptitle("ON red, OFF blue; change = |triggered - clean| scaled to its peak", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def animate_frames(clean: torch.Tensor, triggered: dict[str, torch.Tensor], path: Path,
                   fps: int = GIF_FPS) -> Path:
    """Animated GIF of the event stream over time: per trigger one row with the clean sample
    and the triggered one at time bin t (ON red, OFF blue, scaled to the clean sample's peak
    as in `plot_frames`), one GIF frame per time bin. Samples are [T, P, H, W]."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    plt = pyplot()
    clean_np = _numpy(clean)
    rows = {label: _numpy(frames) for label, frames in triggered.items()}
    scale = max(float(clean_np.max()), 1e-6)
    fig, axes = plt.subplots(len(rows), 2, figsize=(3.2, 1.7 * len(rows) + 0.4), squeeze=False)
    images = []
    for row, (label, frames) in enumerate(rows.items()):
        for col, source in enumerate((clean_np, frames)):
            ax = axes[row, col]
            images.append((ax.imshow(_rgb(source[0], scale), interpolation="nearest"), source))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("clean" if col == 0 else "triggered", fontsize=8)
        axes[row, 0].set_ylabel(label, fontsize=8)
    title = fig.suptitle("", fontsize=8)
    fig.tight_layout()

    def draw(t: int) -> list:
        for image, source in images:
            image.set_data(_rgb(source[t], scale))
        title.set_text(f"t = {t + 1} / {len(clean_np)}  (ON red, OFF blue)")
        return [image for image, _ in images]

    animation = FuncAnimation(fig, draw, frames=len(clean_np), blit=False)
    try:
        return _write_gif(path, lambda name: animation.save(
            name, writer=PillowWriter(fps=fps), dpi=120))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- figure inputs


def save_sample(path: Path, clean: torch.Tensor, triggered: dict[str, torch.Tensor],
                meta: dict | None = None) -> Path:
    """Keep one clean sample [T, P, H, W] and its triggered versions in the run directory,
    so the figures are drawn again from the run alone (no data, no trigger needed)."""
    tensors = {"clean": clean, **{f"triggered.{label}": x for label, x in triggered.items()}}
    return save_tensors(path, tensors, SAMPLE_FORMAT, {"labels": list(triggered),
                                                       **(meta or {})})


def load_sample(path: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(clean, {label: triggered}) written by `save_sample`, in the order they were saved."""
    tensors, meta = load_tensors(path, SAMPLE_FORMAT)
    labels = meta.get("labels")
    missing = [k for k in ["clean", *(f"triggered.{label}" for label in labels or [])]
               if k not in tensors]
    if not isinstance(labels, list) or missing:
        raise FileFormatError(f"{path} lacks the samples its sidecar lists ({missing}); "
                              "run the experiment again to rewrite it")
    return tensors["clean"], {label: tensors[f"triggered.{label}"] for label in labels}
