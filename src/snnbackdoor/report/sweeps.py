"""The Fig. 2 neuron sweep as a markdown table and a figure (accuracy and spikes per sample
vs V_thr, tau and the input power q), with the model's nominal values marked."""

from __future__ import annotations

import textwrap
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
        ax.plot(values, [100 * r["accuracy"] for r in rows], "o-", color="tab:blue")
        ax.set_xlabel(LABELS[key])
        ax.set_ylabel("accuracy (%)", color="tab:blue")
        ax.set_ylim(0, 102)
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


# --- `snnbackdoor sweep`: the swept key against the run metrics -------------------------

CONTROL_SUFFIX = "_clean_model"  # asr_o_clean_model: the clean model's control of asr_o


def is_seed_key(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def rate_panels(rows: list[dict]) -> dict[str, list[str]]:
    """Panels of rates in [0, 1] found in the rows' top-level metrics: one for the CAs
    (ca, base_ca, clean_ca) and one per trigger's ASR with its clean-model control."""
    def numeric(key: str) -> bool:
        values = [row.get(key) for row in rows]
        return any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)

    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if "." not in k]
    panels: dict[str, list[str]] = {}
    cas = [k for k in ("ca", "base_ca", "clean_ca") if k in keys and numeric(k)]
    if cas:
        panels["CA"] = cas
    for key in keys:
        if key.startswith("asr") and not key.endswith(CONTROL_SUFFIX) and numeric(key):
            control = key + CONTROL_SUFFIX
            with_control = control in keys and numeric(control)
            panels[key.replace("asr", "ASR")] = [key] + ([control] if with_control else [])
    return panels


def interval95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for a single value)."""
    import numpy as np
    from scipy import stats

    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, 0.0
    sem = float(array.std(ddof=1)) / len(array) ** 0.5
    return mean, float(stats.t.ppf(0.975, len(array) - 1)) * sem


def varying_l2(rows: list[dict]) -> list[str]:
    """Flattened `perturbation.<trigger>.l2` keys whose value changes across the cells (a
    trigger budget or a generator fitted per cell): Fig. 4b's L2 panel."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row)
            if k.startswith("perturbation.") and k.endswith(".l2")]
    out = []
    for key in keys:
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        if values and max(values) - min(values) > 1e-6 * max(1.0, abs(max(values))):
            out.append(key)
    return out


def _axes_keys(grid: dict[str, list]) -> tuple[str | None, str | None, str | None]:
    """(x key, line key, seed key): the swept key with most values on x, another as lines."""
    seed = next((k for k in grid if is_seed_key(k)), None)
    others = sorted((k for k in grid if k != seed), key=lambda k: -len(grid[k]))
    x = others[0] if others else seed
    line = others[1] if len(others) > 1 else None
    return x, line, (seed if x != seed else None)


def plot_sweep_metrics(rows: list[dict], grid: dict[str, list], path: str | Path,
                       extra: list[str] | tuple = (), title: str = "") -> Path | None:
    """sweep.png: each rate panel (percent, test split) against the swept key; a second
    swept key draws separate lines; seeds give mean +- 95% interval. Trigger L2s that vary
    and `extra` (flattened, dotted metric keys) are drawn as they are."""
    x_key, line_key, seed_key = _axes_keys(grid)
    panels = {name: (keys, True) for name, keys in rate_panels(rows).items()}
    for key in [*extra, *varying_l2(rows)]:
        if any(isinstance(row.get(key), (int, float)) for row in rows):
            panels[key] = ([key], False)
    if x_key is None or not panels:
        return None
    plt = pyplot()
    xs = grid[x_key]
    numeric_x = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    positions = xs if numeric_x else list(range(len(xs)))
    lines = grid[line_key] if line_key else [None]
    count = len(panels)
    fig, axes = plt.subplots(1, count, figsize=(max(4.2 * count, 7.0), 3.8), squeeze=False)
    styles = ["-", "--", ":"]
    for ax, (name, (keys, percent)) in zip(axes[0], panels.items()):
        for li, line in enumerate(lines):
            for ki, key in enumerate(keys):
                means, errors = [], []
                for value in xs:
                    cell = [row.get(key) for row in rows if row.get(x_key) == value
                            and (line_key is None or row.get(line_key) == line)]
                    cell = [float(v) for v in cell if isinstance(v, (int, float))]
                    mean, half = interval95(cell) if cell else (float("nan"), 0.0)
                    scale = 100.0 if percent else 1.0
                    means.append(scale * mean)
                    errors.append(scale * half)
                label = key if line_key is None else f"{key}, {line_key.split('.')[-1]}={line}"
                ax.errorbar(positions, means, yerr=errors if seed_key else None,
                            fmt="o" + styles[ki % len(styles)],
                            color=f"C{li}", alpha=1.0 if ki == 0 else 0.7, capsize=3,
                            label=label)
        ax.set_title(name)
        ax.set_xlabel(x_key)
        if not numeric_x or len(xs) <= 8:
            ax.set_xticks(positions, [f"{v:g}" if numeric_x else str(v) for v in xs])
        if percent:
            ax.set_ylabel("% (test split)")
            ax.set_ylim(-2, 102)
        ax.legend(fontsize=7)
    seeds = f"; mean +- 95% interval over {len(grid[seed_key])} seeds" if seed_key else ""
    fig.suptitle(textwrap.fill((title + ": " if title else "") + "one point per run (its "
                               "deployed config)" + seeds, 110), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
