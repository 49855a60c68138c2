"""Renders a `kind: neuromorphic` run directory: `table.csv`, `report.md`,
`figures/frames.png` (clean vs triggered frames over time, every trigger), one animated
`figures/frames_<label>.gif` per trigger and, for an entry chosen by `select:`, its
validation ASR-SSIM trade-off `figures/tradeoff_<label>.png`. Reads only the run directory."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text, write_csv
from .frames import animate_frames, load_sample, plot_frames, pyplot, save_figure
from .tables import TABLE_COLUMNS, fmt, pct, read_run, table_rows, warnings_block

SAMPLE_FILE = "frames_sample.safetensors"


def report_markdown(config: dict, metrics: dict) -> str:
    """report.md of a neuromorphic run: the setting, the table, what the columns mean."""
    a = config["attack"]
    splits = metrics["splits"]
    lines = [
        f"# Neuromorphic backdoors: {config['name']}",
        "",
        *warnings_block(metrics),
        f"Dataset `{metrics['dataset']}` (frames {metrics['frames']}, train {splits['train']}, "
        f"val {splits['val']}, test {splits['test']}), model `{config['model']['name']}`, "
        f"{config['train']['epochs']} epochs. Poisoning: {pct(a['poison_ratio'], 1)}% of the "
        f"training split, target "
        f"{a['target']}{', clean-label' if a['clean_label'] else ''}, seed {config['seed']}.",
        "",
        f"Clean model: CA {pct(metrics['clean_ca'])}% on the test split "
        f"({pct(metrics.get('clean_val_ca'))}% on the validation split).",
        "",
        "Rates in percent; `val ca` on the validation split, every other column on the test "
        "split.",
        "",
        "| attack | trigger | poisoned | ca | val ca | asr | ssim | mse | ca drop (points) | "
        "event count change | asr of the clean model | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, info in metrics["attacks"].items():
        change = info.get("event_count_change")
        ratio = info.get("poison_ratio", a["poison_ratio"])
        lines.append(
            f"| {info['attack']} | {label} | {pct(ratio, 1)} | "
            f"{pct(info['ca'])} | {pct(info.get('val_ca'))} | "
            f"{pct(info['asr'])} | {fmt(info['ssim'])} | {fmt(info['mse'], 5)} | "
            f"{pct(info['ca_drop'])} | "
            f"{'n/a' if change is None else f'{100 * change:+.1f}%'} | "
            f"{pct(info['asr_clean_model'])} | {fmt(info.get('train_seconds'), 1)} |")
    lines += [
        "",
        "`poisoned`: % of the training split with the backdoor (relabelled, or for the "
        "dynamic trigger given the poisoned twin term); "
        "`ca`: clean test accuracy of the backdoored model; `asr`: share of triggered "
        "non-target test samples classified as the target; `ssim`/`mse`: clean vs triggered "
        "frames (range: the clean sample's max count); event count change: relative change "
        "of the total count per sample.",
        "",
        *selection_lines(metrics),
        "![clean and triggered frames](figures/frames.png)",
        "",
        "Clean vs triggered event stream over time (ON red, OFF blue):",
        "",
        *(f"![{label} over time](figures/frames_{label}.gif)" for label in metrics["attacks"]),
        "",
    ]
    return "\n".join(lines)


def selection_lines(metrics: dict) -> list[str]:
    """Markdown of every `select:` entry: its candidates on validation and the kept value."""
    lines: list[str] = []
    for label, info in metrics["attacks"].items():
        sel = info.get("selection")
        if not sel:
            continue
        option = sel["option"]
        lines += [
            f"`{label}`: {option} chosen on the validation split, the highest validation ASR "
            f"at validation SSIM >= {sel['ssim_floor']:g}; kept {option} = {sel['kept']:g} "
            "(the table's row is that model on the test split).",
            "",
            f"| {option} | val asr | val ca | val ssim | val mse |",
            "| --- | --- | --- | --- | --- |",
            *(f"| {row[option]:g}{' (kept)' if row[option] == sel['kept'] else ''} | "
              f"{pct(row['val_asr'])} | {pct(row['val_ca'])} | {fmt(row['val_ssim'])} | "
              f"{fmt(row['val_mse'], 5)} |" for row in sel["candidates"]),
            "",
            *_deploy_lines(sel),
            f"![{label} ASR-SSIM trade-off](figures/tradeoff_{label}.png)",
            "",
        ]
    return lines


def _deploy_lines(sel: dict) -> list[str]:
    """The kept candidate's pattern rescaled at test time (validation), if it has a curve."""
    kept = next(row for row in sel["candidates"] if row[sel["option"]] == sel["kept"])
    curve = kept.get("deploy_curve")
    if not curve:
        return []
    return [
        "The kept generator with its pattern rescaled at test time (validation; not used to "
        "choose): " + ", ".join(f"{sel['option']} {c['gamma']:g}: ASR {pct(c['val_asr'], 1)}, "
                                f"SSIM {fmt(c['val_ssim'])}" for c in curve) + ".",
        "",
    ]


def plot_tradeoff(selection: dict, path: Path, title: str = "") -> Path:
    """Validation ASR against validation SSIM, one point per candidate, the floor dashed;
    dotted: each candidate's trained pattern rescaled at test time."""
    plt = pyplot()
    option, rows = selection["option"], selection["candidates"]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ssim = [row["val_ssim"] for row in rows]
    asr = [100 * row["val_asr"] for row in rows]
    for row in rows:  # each trained candidate's pattern rescaled at test time (dotted)
        curve = row.get("deploy_curve") or []
        ax.plot([c["val_ssim"] for c in curve], [100 * c["val_asr"] for c in curve], ":",
                color="tab:gray", linewidth=1)
    ax.plot(ssim, asr, "o-", color="tab:blue", label=f"trained at each {option}")
    for row, x, y in zip(rows, ssim, asr):
        kept = row[option] == selection["kept"]
        ax.annotate(f"{option} {row[option]:g}", (x, y), textcoords="offset points",
                    xytext=(4, 4), fontsize=8, fontweight="bold" if kept else "normal")
        if kept:
            ax.plot([x], [y], "o", markersize=11, fillstyle="none", color="tab:red")
    ax.axvline(selection["ssim_floor"], color="gray", linestyle="--", linewidth=1,
               label=f"SSIM floor {selection['ssim_floor']:g}")
    ax.set_xlabel("SSIM, clean vs triggered (validation)")
    ax.set_ylabel("ASR (%, validation)")
    ax.set_ylim(-2, 102)
    ax.legend(loc="lower left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def render_neuromorphic(run_dir: str | Path) -> list[Path]:
    """Write the table, report and figures of a neuromorphic run; the paths written."""
    run_dir = Path(run_dir)
    config, metrics = read_run(run_dir)
    figures = run_dir / "figures"
    paths = [write_csv(run_dir / "table.csv", TABLE_COLUMNS,
                       table_rows(metrics["clean_ca"], metrics["attacks"]))]
    clean, triggered = load_sample(run_dir / SAMPLE_FILE)
    paths.append(plot_frames(clean, triggered, figures / "frames.png", config["figure_bins"]))
    paths += [animate_frames(clean, {label: frames}, figures / f"frames_{label}.gif")
              for label, frames in triggered.items()]
    paths += [plot_tradeoff(info["selection"], figures / f"tradeoff_{label}.png",
                            f"{config['name']}: {label}")
              for label, info in metrics["attacks"].items() if info.get("selection")]
    paths.append(atomic_write_text(run_dir / "report.md", report_markdown(config, metrics)))
    return paths
