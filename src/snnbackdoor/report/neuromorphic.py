"""Renders a `kind: neuromorphic` run directory: `table.csv`, `report.md`,
`figures/frames.png` (clean vs triggered frames over time, every trigger) and one animated
`figures/frames_<label>.gif` per trigger. Reads only the run directory."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text, write_csv
from .frames import animate_frames, load_sample, plot_frames
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
        "| attack | trigger | ca | val ca | asr | ssim | mse | ca drop (points) | event count "
        "change | asr of the clean model | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, info in metrics["attacks"].items():
        change = info.get("event_count_change")
        lines.append(
            f"| {info['attack']} | {label} | {pct(info['ca'])} | {pct(info.get('val_ca'))} | "
            f"{pct(info['asr'])} | {fmt(info['ssim'])} | {fmt(info['mse'], 5)} | "
            f"{pct(info['ca_drop'])} | "
            f"{'n/a' if change is None else f'{100 * change:+.1f}%'} | "
            f"{pct(info['asr_clean_model'])} | {fmt(info.get('train_seconds'), 1)} |")
    lines += [
        "",
        "`ca`: clean test accuracy of the backdoored model; `asr`: share of triggered "
        "non-target test samples classified as the target; `ssim`/`mse`: clean vs triggered "
        "frames (range: the clean sample's max count); event count change: relative change "
        "of the total count per sample.",
        "",
        "![clean and triggered frames](figures/frames.png)",
        "",
        "Clean vs triggered event stream over time (ON red, OFF blue):",
        "",
        *(f"![{label} over time](figures/frames_{label}.gif)" for label in metrics["attacks"]),
        "",
    ]
    return "\n".join(lines)


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
    paths.append(atomic_write_text(run_dir / "report.md", report_markdown(config, metrics)))
    return paths
