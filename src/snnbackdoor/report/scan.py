"""The scan benchmark's report and the figure of one `snnbackdoor scan`, from files alone.

A population run (`kind: scan`) keeps one stage per model with every scanner's score;
`score_rows` flattens them, `scan_table` scores each scanner per attack (AUROC of the
attacked models' scores against the clean models', and the share of attacked models whose
suspected target is the true one), and `render_scan` writes `scan_table.csv`, `report.md`
and `figures/scan_scores.png` (the score distributions with each scanner's fixed level).
"""

from __future__ import annotations

from pathlib import Path

from ..detectors.scoring import auroc
from ..io import atomic_write_text, read_json, write_csv
from .frames import pyplot, save_figure

TABLE_COLUMNS = ["detector", "attack", "auroc", "target_accuracy", "clean_models",
                 "backdoored_models", "flagged_backdoored", "flagged_clean"]
ROW_COLUMNS = ["member", "attack", "seed", "target", "detector", "score", "suspected",
               "threshold", "flagged", "collapse_class"]


def score_rows(members: list[dict], stages: dict[str, dict]) -> list[dict]:
    """One row per (model, scanner): its score, suspected target, level and flag."""
    rows = []
    for member in members:
        stage = stages[member["member"]]
        for name, result in stage["detectors"].items():
            rows.append({**{k: member[k] for k in ("member", "attack", "seed", "target")},
                         "detector": name, "score": result["score"],
                         "suspected": result["target"], "threshold": result["threshold"],
                         "flagged": result["flagged"],
                         "collapse_class": result["info"].get("collapse_class")})
    return rows


def scan_table(rows: list[dict]) -> list[dict]:
    """Per scanner and attack: AUROC over models, target accuracy, counts and flag rates."""
    table = []
    detectors = list(dict.fromkeys(r["detector"] for r in rows))
    attacks = [a for a in dict.fromkeys(r["attack"] for r in rows) if a != "clean"]
    for detector in detectors:
        clean = [r for r in rows if r["detector"] == detector and r["attack"] == "clean"]
        for attack in attacks:
            bad = [r for r in rows if r["detector"] == detector and r["attack"] == attack]
            if not clean or not bad:
                continue
            table.append({
                "detector": detector, "attack": attack,
                "auroc": round(auroc([r["score"] for r in clean], [r["score"] for r in bad]), 4),
                "target_accuracy": round(sum(r["suspected"] == r["target"] for r in bad)
                                         / len(bad), 4),
                "clean_models": len(clean), "backdoored_models": len(bad),
                "flagged_backdoored": round(sum(bool(r["flagged"]) for r in bad) / len(bad), 4),
                "flagged_clean": round(sum(bool(r["flagged"]) for r in clean) / len(clean), 4),
            })
    return table


def render_scan(run_dir: str | Path) -> list[Path]:
    """scan_table.csv, scores.csv, report.md and figures/scan_scores.png of a scan run."""
    run_dir = Path(run_dir)
    rows = read_json(run_dir / "scores.json")["rows"]
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    table = scan_table(rows)
    paths = [write_csv(run_dir / "scan_table.csv", TABLE_COLUMNS, table),
             write_csv(run_dir / "scores.csv", ROW_COLUMNS, rows),
             score_figure(rows, run_dir / "figures" / "scan_scores.png")]
    lines = ["# Model-level scan benchmark", "",
             f"{metrics.get('members', '?')} models; AUROC of each scanner's score, attacked "
             "models against the clean ones; target accuracy = share of attacked models whose "
             "suspected target is the true target; flagged = share over the scanner's fixed "
             "level (set without attacked models).", "", scan_markdown(table), "",
             "![scores](figures/scan_scores.png)", ""]
    paths.append(atomic_write_text(run_dir / "report.md", "\n".join(lines)))
    return paths


def scan_markdown(table: list[dict]) -> str:
    """The scan table as markdown, AUROC and rates in percent."""
    head = ["detector", "attack", "AUROC", "target acc.", "flagged (attacked)",
            "flagged (clean)", "models (clean / attacked)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        lines.append(f"| {r['detector']} | {r['attack']} | {100 * r['auroc']:.1f} | "
                     f"{100 * r['target_accuracy']:.0f} | {100 * r['flagged_backdoored']:.0f} | "
                     f"{100 * r['flagged_clean']:.0f} | {r['clean_models']} / "
                     f"{r['backdoored_models']} |")
    return "\n".join(lines)


def score_figure(rows: list[dict], path: Path) -> Path:
    """One panel per scanner: each model's score by attack (clean first), its fixed level
    dashed; a filled marker = the suspected target is the true one."""
    plt = pyplot()
    detectors = list(dict.fromkeys(r["detector"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    fig, axes = plt.subplots(1, len(detectors), figsize=(4.2 * len(detectors), 3.6),
                             squeeze=False)
    for ax, detector in zip(axes[0], detectors):
        mine = [r for r in rows if r["detector"] == detector]
        for i, attack in enumerate(attacks):
            group = [r for r in mine if r["attack"] == attack]
            for j, r in enumerate(group):
                x = i + 0.3 * ((j % 7) / 6 - 0.5)
                hit = r["target"] is not None and r["suspected"] == r["target"]
                ax.plot(x, r["score"], "o", color="C0" if attack == "clean" else "C3",
                        mfc=None if hit or attack == "clean" else "none", ms=5)
        if mine:
            ax.axhline(mine[0]["threshold"], ls="--", color="k", lw=0.8)
        ax.set_xticks(range(len(attacks)), attacks, rotation=30)
        ax.set_title(detector)
        ax.set_ylabel("score (higher = more suspicious)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def scan_figure(result: dict, path: Path, title: str = "") -> Path:
    """The figure of one scan: per scanner, its per-class statistic with the suspected
    target marked, and the score against the scanner's level in the title."""
    plt = pyplot()
    # scanner -> (per-class statistic in info, axis label, whether the score's level is on
    # the same scale as the bars)
    panels = {"tmpbd": ("margins", "max output-potential margin", False),
              "trigger_inversion": ("mask_l1", "inverted mask L1 (pixels)", False),
              "neuron_scan": ("evidence", "own-margin lead under probes", True)}
    names = [n for n in result["detectors"] if n in panels] or list(result["detectors"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        det = result["detectors"][name]
        key, label, same_scale = panels.get(name, ("", "", False))
        values = det["info"].get(key) or []
        colors = ["C3" if k == det["target"] else "C0" for k in range(len(values))]
        ax.bar(range(len(values)), values, color=colors)
        if same_scale:
            ax.axhline(det["threshold"], ls="--", color="k", lw=0.8)
        flag = "flagged" if det["flagged"] else "not flagged"
        ax.set_title(f"{name}: {det['score']:.2f} vs {det['threshold']:.2f} ({flag})",
                     fontsize=9)
        ax.set_xlabel("class")
        ax.set_ylabel(label)
    fig.suptitle(title or f"verdict: {result['verdict']}"
                 + (f", target {result['target']}" if result["target"] is not None else ""))
    fig.tight_layout()
    return save_figure(fig, path)
