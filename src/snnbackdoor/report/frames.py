"""Figures of event frames: clean vs triggered over time, as a PNG grid and an animated GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _rgb(frames: np.ndarray, scale: float) -> np.ndarray:
    """[P=2, H, W] counts -> RGB image: ON red, OFF blue, on black."""
    off, on = np.clip(frames[0] / scale, 0, 1), np.clip(frames[1] / scale, 0, 1)
    return np.stack([on, np.zeros_like(on), off], axis=-1)


def plot_frames(clean: torch.Tensor, triggered: dict[str, torch.Tensor], path: Path,
                bins: int = 4) -> Path:
    """Per trigger, one row: a few time bins of the clean sample, the triggered one, and the
    change (ON red, OFF blue; the change scaled to its own peak). ``clean`` is [T, P, H, W]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_frames = clean.shape[0]
    times = sorted({int(round(t)) for t in np.linspace(0, num_frames - 1, min(bins, num_frames))})
    clean_np = clean.detach().float().cpu().numpy()
    scale = max(float(clean_np.max()), 1e-6)
    groups = ("clean", "triggered", "change")
    cols = len(groups) * len(times)
    fig, axes = plt.subplots(len(triggered), cols, figsize=(1.3 * cols, 1.45 * len(triggered)),
                             squeeze=False)
    for row, (label, frames) in enumerate(triggered.items()):
        trig = frames.detach().float().cpu().numpy()
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
