"""BadSNN figures: Fig. 3 (CA and ASR over the attack configs) and Fig. 5 (trigger examples),
drawn from what a run directory holds (its grid rows and stored example tensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import load_tensors, save_tensors
from .sweeps import pyplot

EXAMPLES_FORMAT = "snnbackdoor-badsnn-examples/1"

ANNOTATE_MAX_COLUMNS = 24  # cells get their numbers (and every tick) up to this many columns


def _title(key: str) -> str:
    return "CA" if key == "ca" else f"ASR of {key.replace('asr_', 'T_')}"


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def _tau_value(row: dict) -> float | None:
    return row.get("tau_a")


def grid_figure(rows: list[dict], keys: list[str], path: Path,
                selected: dict | None = None) -> Path:
    """Fig. 3: each metric over the attack configs (V_thr^a, tau^a), the selected one marked.

    Curves (metric vs the axis with several values, one line per value of the other) when
    one axis holds a single value; a heat map per metric only when both have several.
    """
    vs = sorted({r["v_threshold_a"] for r in rows})
    taus = sorted({_tau_value(r) for r in rows}, key=lambda t: (t is None, t or 0.0))
    if len(vs) > 1 and len(taus) > 1:
        return _heat_maps(rows, keys, vs, taus, path, selected)
    return _curves(rows, keys, vs, taus, path, selected)


def _curves(rows, keys, vs, taus, path: Path, selected: dict | None) -> Path:
    plt = pyplot()
    along_v = len(vs) > 1 or len(taus) == 1
    x_key, line_key = ("v_threshold_a", "tau_a") if along_v else ("tau_a", "v_threshold_a")
    lines = taus if along_v else vs
    fig, axes = plt.subplots(1, len(keys), figsize=(3.8 * len(keys), 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for value in lines:
            chosen = sorted((r for r in rows if r.get(line_key) == value),
                            key=lambda r: r[x_key])
            label = f"{'tau^a' if along_v else 'V_thr^a'} {value:g}" if value else None
            ax.plot([r[x_key] for r in chosen], [100 * r[key] for r in chosen], "o-",
                    markersize=3, label=label)
        if selected is not None and selected.get(key) is not None:
            ax.plot([selected[x_key]], [100 * selected[key]], marker="*", markersize=14,
                    color="black", linestyle="none", label="selected S_a")
            ax.axvline(selected[x_key], color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel("V_thr^a" if along_v else "tau^a")
        ax.set_ylabel(f"{_title(key)} (%, test split)")
        ax.set_ylim(-2, 102)
        ax.set_title(_title(key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def _heat_maps(rows, keys, vs, taus, path: Path, selected: dict | None) -> Path:
    plt = pyplot()
    width, height = max(3.6, 0.42 * len(vs) + 1.6), 0.45 * len(taus) + 2.0
    stacked = width * len(keys) > 16  # a wide grid: one panel per row, not side by side
    shape = (len(keys), 1) if stacked else (1, len(keys))
    fig, axes = plt.subplots(*shape, figsize=(width * shape[1], height * shape[0]),
                             squeeze=False)
    annotate = len(vs) <= ANNOTATE_MAX_COLUMNS
    step = max(1, -(-len(vs) // ANNOTATE_MAX_COLUMNS))  # thin the ticks of a wide grid
    for ax, key in zip(axes.flat, keys):
        grid = np.full((len(taus), len(vs)), np.nan)
        for r in rows:
            grid[taus.index(_tau_value(r)), vs.index(r["v_threshold_a"])] = r[key]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(0, len(vs), step), [f"{v:g}" for v in vs[::step]], rotation=45,
                      fontsize=7)
        ax.set_yticks(range(len(taus)), [f"{t:g}" if t else "-" for t in taus], fontsize=7)
        ax.set_xlabel("V_thr^a")
        ax.set_ylabel("tau^a")
        ax.set_title(_title(key))
        if annotate:
            for i in range(len(taus)):
                for j in range(len(vs)):
                    if not np.isnan(grid[i, j]):
                        ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center",
                                color="white" if grid[i, j] < 0.6 else "black", fontsize=6)
        if selected is not None and selected["v_threshold_a"] in vs and (
                _tau_value(selected) in taus):
            j, i = vs.index(selected["v_threshold_a"]), taus.index(_tau_value(selected))
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                       linewidth=2))
        fig.colorbar(image, ax=ax, fraction=0.046)
    if selected is not None:
        fig.suptitle("red box: the selected attack config S_a", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def as_image(x: torch.Tensor) -> np.ndarray:
    """Images [N, C, H, W] -> HxW(x3) arrays; event frames -> time-summed ON minus OFF."""
    x = x.detach().float().cpu()
    if x.ndim == 5:
        summed = x.sum(1)
        x = (summed[:, -1] - summed[:, 0]).unsqueeze(1)
        x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True)
                                                   - x.amin((2, 3), keepdim=True)).clamp_min(1e-8)
    x = x.clamp(0, 1)
    return x[:, 0].numpy() if x.shape[1] == 1 else x.permute(0, 2, 3, 1).numpy()


def trigger_examples(clean: torch.Tensor, triggered: dict[str, torch.Tensor],
                     path: Path) -> Path:
    """Fig. 5: clean inputs, each trigger's version and the perturbation scaled to [0, 1]."""
    plt = pyplot()
    columns = 1 + 2 * len(triggered)
    fig, axes = plt.subplots(len(clean), columns, figsize=(1.6 * columns, 1.6 * len(clean)),
                             squeeze=False)
    shown = as_image(clean)
    for i in range(len(clean)):
        axes[i][0].imshow(shown[i], cmap="gray", vmin=0, vmax=1)
    axes[0][0].set_title("clean", fontsize=8)
    for t, (label, x_t) in enumerate(triggered.items()):
        diff = (x_t - clean).abs()
        diff = diff / diff.flatten(1).amax(1).clamp_min(1e-8).view(-1, *[1] * (clean.ndim - 1))
        for i, image in enumerate((as_image(x_t), as_image(diff))):
            for row in range(len(clean)):
                axes[row][1 + 2 * t + i].imshow(image[row], cmap="gray", vmin=0, vmax=1)
            axes[0][1 + 2 * t + i].set_title(label if i == 0 else f"|{label} - x| (norm.)",
                                              fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def save_examples(path: Path, clean: torch.Tensor, triggered: dict[str, torch.Tensor]) -> Path:
    """The Fig. 5 inputs of a run (a few clean test inputs and their triggered versions,
    keyed by trigger label), so the figure is redrawn from the run directory alone."""
    tensors = {"clean": clean, **{f"triggered.{k}": v for k, v in triggered.items()}}
    return save_tensors(path, tensors, EXAMPLES_FORMAT, {"triggers": list(triggered)})


def load_examples(path: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(clean inputs, {trigger label: triggered inputs}) written by `save_examples`."""
    tensors, meta = load_tensors(path, EXAMPLES_FORMAT)
    return tensors["clean"], {k: tensors[f"triggered.{k}"] for k in meta["triggers"]}
