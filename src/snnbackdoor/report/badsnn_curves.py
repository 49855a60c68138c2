"""BadSNN's curves with controls: ASR_o vs eps (backdoored vs T_o re-optimised against the
clean model, at S_a and at S_n) and ASR_p / CA vs V_thr^a (backdoored vs clean), for one run
or as mean +- 95% interval over the runs (seeds) of a sweep. The clean model's ASR_p is drawn
at the same V_thr^a and at the config where its CA matches the backdoored model's."""

from __future__ import annotations

from pathlib import Path

from .sweeps import interval95, pyplot

EPS_LINES = {"asr_o": ("backdoored, S_a", "C3", "-"),
             "asr_o_nominal": ("backdoored, S_n", "C3", ":"),
             "asr_o_clean_model": ("clean control, S_a", "C0", "-"),
             "asr_o_clean_model_nominal": ("clean control, S_n", "C0", ":")}
THRESHOLD_PANELS = {
    "ASR_p (%)": {"asr_p": ("backdoored", "C3", "-"),
                  "clean_asr_p": ("clean control, same V_thr^a", "C0", "-"),
                  "clean_asr_p_ca_matched": ("clean control, same CA (+-2)", "C0", "--")},
    "CA (%)": {"ca": ("backdoored", "C3", "-"), "clean_ca": ("clean", "C0", "-")}}


def _number(key: str) -> float:
    return float(key.split("/")[0])


def _draw(ax, curves: list[dict], metric: str, label: str, color: str, style: str = "-"):
    keys = sorted({k for c in curves for k in c}, key=_number)
    xs, means, halves = [], [], []
    for key in keys:
        values = [float(c[key][metric]) for c in curves
                  if key in c and isinstance(c[key].get(metric), (int, float))]
        if values:
            mean, half = interval95(values)
            xs.append(_number(key))
            means.append(100 * mean)
            halves.append(100 * half)
    if xs:
        ax.errorbar(xs, means, yerr=halves if len(curves) > 1 else None, label=label,
                    color=color, linestyle=style, marker="o", capsize=3)


def eps_figure(curves: list[dict], path: Path, chosen: float | None = None) -> Path:
    """ASR_o (%) vs the L_inf budget eps: one run, or mean +- 95% interval over runs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for metric, (label, color, style) in EPS_LINES.items():
        _draw(ax, curves, metric, label, color, style)
    if chosen is not None:
        ax.axvline(chosen, color="grey", linewidth=0.8, linestyle="--", label="chosen eps")
    ax.set_xlabel("eps (L_inf budget of T_o)")
    ax.set_ylabel("ASR_o (%, test)")
    ax.set_ylim(-3, 103)
    runs = f" (mean +- 95% CI, {len(curves)} seeds)" if len(curves) > 1 else ""
    ax.set_title("ASR_o vs eps" + runs)
    ax.legend(fontsize=8)
    return _save(fig, path)


def threshold_figure(curves: list[dict], path: Path, selected: float | None = None) -> Path:
    """ASR_p and CA (%) vs V_thr^a, backdoored beside clean: one run or mean +- 95% CI."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
    for ax, (title, lines) in zip(axes, THRESHOLD_PANELS.items()):
        for metric, (label, color, style) in lines.items():
            _draw(ax, curves, metric, label, color, style)
        if selected is not None:
            ax.axvline(selected, color="grey", linewidth=0.8, linestyle="--", label="S_a")
        ax.set_xlabel("V_thr^a")
        ax.set_ylabel(title + ", test")
        ax.set_ylim(-3, 103)
        ax.legend(fontsize=8)
    runs = f" (mean +- 95% CI, {len(curves)} seeds)" if len(curves) > 1 else ""
    fig.suptitle("ASR_p and CA vs V_thr^a" + runs)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def sweep_curves(cells: list[dict], folder: Path) -> list[Path]:
    """The curves over a sweep's cells (metrics mappings): eps_curves.png and
    threshold_curves.png, each drawn when at least one cell holds that curve."""
    paths = []
    eps = [m["eps_curve"] for m in cells if m.get("eps_curve")]
    if eps:
        paths.append(eps_figure(eps, Path(folder) / "eps_curves.png"))
    thresholds = [m["threshold_curve"] for m in cells if m.get("threshold_curve")]
    if thresholds:
        paths.append(threshold_figure(thresholds, Path(folder) / "threshold_curves.png"))
    return paths
