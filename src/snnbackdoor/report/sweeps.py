"""The Fig. 2 neuron sweep as a markdown table and a figure (accuracy and spikes per sample
vs V_thr, tau and the input power q), with the model's nominal values marked."""

from __future__ import annotations

from pathlib import Path

LABELS = {"v_threshold": "V_thr", "tau": "tau (SpikingJelly)", "power": "power q (x -> x^q)"}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep_table(result: dict) -> str:
    """A markdown table of a neuron sweep."""
    lines = ["| swept | value | accuracy | spikes/sample |", "|---|---|---|---|"]
    for key in ("v_threshold", "tau", "power"):
        for row in result.get(key) or []:
            lines.append(
                f"| {key} | {row['value']:g} | {row['accuracy']:.4f} | "
                f"{row['spikes_per_sample']:.1f} |"
            )
    return "\n".join(lines)


def plot_sweep(result: dict, path: str | Path, nominal: dict | None = None,
               title: str = "") -> Path:
    """Fig. 2 style: accuracy (left axis) and spikes/sample (right axis) per swept quantity;
    `nominal` ({v_threshold, tau, power}) marks the model's own values."""
    plt = pyplot()
    keys = [k for k in ("v_threshold", "tau", "power") if result.get(k)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.4),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = result[key]
        values = [r["value"] for r in rows]
        ax.plot(values, [r["accuracy"] for r in rows], "o-", color="tab:blue")
        ax.set_xlabel(LABELS[key])
        ax.set_ylabel("accuracy", color="tab:blue")
        ax.set_ylim(0, 1.02)
        twin = ax.twinx()
        twin.plot(values, [r["spikes_per_sample"] for r in rows], "s--", color="tab:red")
        twin.set_ylabel("spikes / sample", color="tab:red")
        marker = (nominal or {}).get(key)
        if marker is not None:
            ax.axvline(marker, color="gray", linestyle=":", linewidth=1, label="nominal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
