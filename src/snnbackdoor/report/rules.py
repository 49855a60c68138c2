"""Renders a `kind: rules` run directory (Jin et al.): `table.csv` (rule, neuron, T, ca, asr,
migration_rate, seconds), `report.md` (the table, robustness, detection, elimination) and
`figures/migration.png` (migration rate, CA and ASR of the converted SNN against T).
Reads only the run directory (`config.yaml`, `metrics.json`)."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text, write_csv
from .frames import pyplot, save_figure
from .tables import fmt, pct, read_run, warnings_block

TABLE_COLUMNS = ["rule", "neuron", "T", "ca", "asr", "migration_rate", "seconds"]
RATE_COLUMNS = {"ca", "asr"}


def plot_migration(path: Path, lr_c_info: dict, ann_info: dict, title: str) -> Path:
    """Migration rate, CA and ASR of the converted SNN against T (ANN CA/ASR dashed)."""
    plt = pyplot()
    Ts = [int(T) for T in lr_c_info["by_T"]]
    rows = list(lr_c_info["by_T"].values())
    fig, ax = plt.subplots(figsize=(6, 4))
    migration = [r["migration_rate"] if r["migration_rate"] is not None else float("nan")
                 for r in rows]
    ax.plot(Ts, migration, "o-", label="migration rate ASR(SNN)/ASR(ANN)")
    ax.plot(Ts, [r["ca"] for r in rows], "s-", label="CA (converted SNN)")
    ax.plot(Ts, [r["asr"] for r in rows], "^-", alpha=0.6, label="ASR (converted SNN)")
    ax.axhline(ann_info["ca"], color="C1", ls="--", lw=1, label="CA (ANN)")
    ax.axhline(ann_info["asr"], color="C2", ls=":", lw=1, label="ASR (ANN)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("rate (CA, ASR: fraction of the test split)")
    top = max([1.0, *[m for m in migration if m == m]])
    ax.set_ylim(0, top + 0.05)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def report_markdown(config: dict, metrics: dict) -> str:
    """report.md: the table, what each number means, robustness, detection, elimination."""
    attack, conversion = config["attack"], config["conversion"]
    lines = [
        f"# {config['name']}: backdoor poisoning against three SNN learning rules",
        "",
        *warnings_block(metrics),
        f"Dataset `{config['dataset']['name']}`, model `{config['model']['name']}`, trigger "
        f"`{attack['trigger']}` ({attack['options'] or 'defaults'}), target "
        f"{attack['target']}, {pct(attack['poison_ratio'], 1)}% of the training split poisoned. "
        "Conversion: SpikingJelly `ann2snn.Converter(RateCodingRecipe("
        f"mode={conversion['mode']!r}))` calibrated on {conversion['calibration']} training "
        "data.",
        "",
        "CA and ASR in percent, test split.",
        "",
        "| rule | neuron | T | CA | ASR | migration rate | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in metrics["table"]:
        lines.append("| " + " | ".join(
            pct(row[c]) if c in RATE_COLUMNS else fmt(row[c], 1) if c == "seconds"
            else fmt(row[c]) for c in TABLE_COLUMNS) + " |")
    lines += [
        "",
        "- CA: test accuracy; ASR: share of triggered non-target test inputs classified as "
        "the target.",
        "- migration rate = ASR(converted SNN) / ASR(source ANN) (LR_C at each T; LR_H uses the "
        "same ANN as source).",
        "- seconds: wall time of the rule: LR_B = BPTT training; LR_C = ANN training + "
        "conversion; LR_H = LR_C + surrogate-gradient fine-tuning. Inference is not counted "
        f"(LR_C evaluation at all T took {metrics['lr_c']['evaluation_seconds']:.1f} s).",
        "- CPU seconds of each rule (process time, all threads; wall time grows on a shared "
        "machine): " + ", ".join(f"{k}: {fmt(v, 1)}" for k, v in metrics["cpu_seconds"].items())
        + ".",
        "",
    ]
    summary = metrics["summary"]
    lines += [
        "## Migration",
        "",
        "Smallest T with migration rate >= 0.9 and CA within 3 points of the ANN (test split): "
        f"{fmt(summary['first_T_migrating'])}. Highest migration rate: "
        f"{fmt(summary['max_migration_rate'])}. Figure: `figures/migration.png`.",
        "",
    ]
    rob = metrics.get("robustness")
    if rob:
        lines += [
            "## Robustness (ANN vs SNN on the same data)",
            "",
            "Percent, test split. noise_ca: accuracy with Gaussian noise "
            f"(std {rob['noise_std']}, seeded, the same noise for every model); ra: share of "
            "triggered non-target inputs still given their true label. A model is more robust "
            "when both are higher.",
            "",
            "| model | CA | noise CA | ASR | RA |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, row in rob["models"].items():
            lines.append(f"| {label} | {pct(row['ca'])} | {pct(row['noise_ca'])} | "
                         f"{pct(row['asr'])} | {pct(row['ra'])} |")
        by_T = ", ".join(f"T={T}: {pct(v)}%" for T, v in rob["lr_c_noise_ca_by_T"].items())
        lines += ["", f"LR_C noise CA by T: {by_T}.", ""]
    det = metrics.get("detection")
    if det:
        lines += [
            "## Input detection from membrane and spike statistics",
            "",
            "Percent. Fitted on clean training inputs only; threshold at FRR "
            f"{pct(config['detection']['frr'], 1)}% on clean validation inputs; detection rate "
            "= triggered test inputs flagged; FRR (test) = clean test inputs flagged.",
            "",
            "| model | method | detection rate | FRR (test) | AUROC |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, row in det.items():
            for method in config['detection']['methods']:
                r = row[method]
                lines.append(f"| {label} | {method} | {pct(r['detection_rate'])} | "
                             f"{pct(r['false_rejection_rate'])} | {pct(r['auroc'])} |")
        lines.append("")
    eli, eli_config = metrics.get("elimination"), config["elimination"]
    if eli:
        lines += [
            "## Elimination by fine-tuning",
            "",
            f"Each SNN fine-tuned on {eli['clean_samples']} clean training samples "
            f"(the `finetune` defense: {eli_config['epochs']} epochs, SGD, "
            f"momentum {eli_config['momentum']}, cosine) at each learning rate of "
            f"{[eli_config['lr'], *eli_config['lr_candidates']]}; the run with the best "
            "validation accuracy is kept (`val CA`, the figure that chose lr). CA and ASR in "
            "percent on the test split; seconds: all runs of the model.",
            "",
            "| model | lr | val CA | CA before | ASR before | CA after | ASR after | seconds |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, row in eli["models"].items():
            lines.append(f"| {label} | {row['lr']:g} | {pct(row.get('val_ca'))} | "
                         f"{pct(row['before']['ca'])} | {pct(row['before']['asr'])}"
                         f" | {pct(row['after']['ca'])} | {pct(row['after']['asr'])} | "
                         f"{fmt(row['seconds'], 1)} |")
        lines.append("")
    return "\n".join(lines)


def render_rules(run_dir: str | Path) -> list[Path]:
    """Write the table, report and migration figure of a rules run; the paths written."""
    run_dir = Path(run_dir)
    config, metrics = read_run(run_dir)
    figure = plot_migration(run_dir / "figures" / "migration.png", metrics["lr_c"],
                            metrics["ann"], f"{config['name']}: backdoor migration through "
                            "conversion")
    return [write_csv(run_dir / "table.csv", TABLE_COLUMNS, metrics["table"]), figure,
            atomic_write_text(run_dir / "report.md", report_markdown(config, metrics))]
