"""The attack x defense matrix's report, rendered from its run directory alone
(`config.yaml`, `metrics.json`): `table.csv`, `detection.csv`, `report.md` and the
`figures/table2_asr.png` heat maps. Every figure in the report is a percentage.

An attack's line under "Attacks" is its `summary` (a string in `AttackOutcome.info`) when
it gives one, else what its info says about poisoning, epochs and validation figures.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import yaml

from ..io import atomic_write_bytes, atomic_write_text, read_json, write_csv
from .tables import warnings_block

NO_DEFENSE = "none"
TABLE_COLUMNS = ["attack", "defense", "ca", "asr", "ra"]
DETECTION_COLUMNS = ["attack", "detector", "detection_rate", "auroc"]


def pct(value) -> str:
    """A fraction as a percentage with two decimals; `n/a` when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.2f}"


def share(value) -> str:
    """A fraction as a short percentage (`5%`, `12.5%`)."""
    return "n/a" if value is None else f"{100 * value:g}%"


def _grid(cells: dict, rows: list[str], columns: list[str], render) -> list[str]:
    """Markdown table lines: one row per `rows` entry, one column per `columns` entry."""
    head = ["Attack", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        parts = [row] + [render(cells.get((row, column))) for column in columns]
        lines.append("| " + " | ".join(parts) + " |")
    return lines


def table2_markdown(rows: list[dict], attacks: list[str], defenses: list[str]) -> str:
    """Rows = attacks, columns = defenses, cells `CA / ASR` in percent."""
    cells = {(r["attack"], r["defense"]): r for r in rows}
    lines = _grid(cells, attacks, defenses,
                  lambda r: f"{pct(r['ca'])} / {pct(r['asr'])}" if r else "-")
    lines[0] = lines[0].replace(f"| {NO_DEFENSE} |", f"| {NO_DEFENSE} (before) |", 1)
    return "\n".join(lines)


def detection_markdown(rows: list[dict], attacks: list[str], detectors: list[str]) -> str:
    """Rows = attacks, columns = detectors, cells `detection rate / AUROC` in percent."""
    cells = {(r["attack"], r["detector"]): r for r in rows}
    return "\n".join(_grid(
        cells, attacks, detectors,
        lambda r: f"{pct(r['detection_rate'])} / {pct(r['auroc'])}" if r else "-"))


def table2_heatmap(rows: list[dict], attacks: list[str], defenses: list[str],
                   path: Path) -> Path:
    """Two heat maps side by side: ASR and CA in percent (rows attacks, columns defenses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {(r["attack"], r["defense"]): r for r in rows}
    width = 2.2 + 1.05 * len(defenses)
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, 0.6 * len(attacks) + 1.8))
    for ax, key, cmap in ((axes[0], "asr", "Reds"), (axes[1], "ca", "Blues")):
        grid = np.full((len(attacks), len(defenses)), np.nan)
        for i, attack in enumerate(attacks):
            for j, defense in enumerate(defenses):
                value = (cells.get((attack, defense)) or {}).get(key)
                if value is not None:
                    grid[i, j] = 100 * value
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(len(attacks)):
            for j in range(len(defenses)):
                value = float(grid[i, j])
                text = "n/a" if math.isnan(value) else f"{value:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if value > 60 else "black")
        ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right")
        ax.set_yticks(range(len(attacks)), attacks)
        ax.set_title(f"{key.upper()} (%, test split)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def attack_line(info: dict) -> str:
    """One line on how an attack ran: its own `summary`, or its poisoning, epochs and
    validation figures."""
    if info.get("summary"):
        return str(info["summary"])
    parts = []
    if info.get("poison_mode") == "per_batch":
        parts.append(f"a fresh {share(info.get('poison_ratio'))} of every batch poisoned")
    elif "poison_count" in info:
        parts.append(f"{info['poison_count']} poisoned training samples")
    if "epochs" in info:
        parts.append(f"{info['epochs']} epochs")
    if "val_asr" in info:
        parts.append(f"val CA {pct(info.get('val_ca'))}%, val ASR {pct(info['val_asr'])}%")
    return "; ".join(parts) or "see its folder under attacks/"


RATE_WORDS = ("acc", "ca", "asr", "rate", "ratio", "fraction", "share")


def _setting(key: str, value) -> str:
    """A defense's reported setting: rates (by name, in [0, 1]) in percent, else as given."""
    if isinstance(value, float) and 0.0 <= value <= 1.0 and any(
            word in key.lower() for word in RATE_WORDS):
        return f"{key} {pct(value)}%"
    return f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"


def defense_choices(metrics: dict, attacks: list[str], defenses: list[str]) -> list[str]:
    """What each repair chose and measured on the defender's clean subset or the validation
    split (its `defense_info`): the figures behind its settings."""
    lines = []
    for attack in attacks:
        for defense in defenses:
            info = ((metrics.get("cells") or {}).get(f"cell/{attack}/{defense}") or {}).get(
                "defense_info") or {}
            shown = [_setting(k, v) for k, v in info.items() if k != "defense" and v is not None]
            if shown:
                lines.append(f"- `{attack}` x `{defense}`: " + ", ".join(shown))
    if not lines:
        return []
    return ["## Defense settings", "",
            "What each repair chose on the defender's clean subset, and its accuracy on the "
            "validation split (`val_accuracy`, carved from training, never test):", "",
            *lines, ""]


def report_markdown(config: dict, metrics: dict, defenses: list[str]) -> str:
    """The matrix's report.md from its config and metrics."""
    attacks, detectors = config["attacks"], config.get("detectors") or []
    model = config["model"]
    cells = {(r["attack"], r["defense"]): r for r in metrics["table"]}
    lines = [
        f"# Attack x defense matrix: {config['name']}",
        "",
        *warnings_block(metrics),
        f"Dataset `{config['dataset']['name']}`, model `{model['name']}` ({model['neuron']}, "
        f"T={model['T']}), seed {config['seed']}, target class {config['target']}, poisoning "
        f"ratio {share(config['poison_ratio'])} of the training split (unless an attack "
        f"counts otherwise, see below), defender subset {metrics['defender']['count']} clean "
        f"training samples ({share(config['defender_fraction'])} of the clean training "
        f"split). Clean model CA: {pct(metrics['clean_ca'])}% (test split).",
        "",
        "Cells are `CA / ASR` in percent on the test split; ASR counts triggered non-target "
        "test samples sent to the target. `none (before)` is the attacked model before any "
        "defense. No setting was chosen on the test split or on ASR.",
        "",
        table2_markdown(metrics["table"], attacks, defenses),
        "",
        "Robust accuracy (triggered non-target test samples still given their true label), "
        "%:",
        "",
        *_grid(cells, attacks, defenses, lambda r: pct((r or {}).get("ra"))),
        "",
        "![ASR and CA](figures/table2_asr.png)",
        "",
        "## Attacks",
        "",
    ]
    for attack in attacks:
        info = (metrics.get("attacks") or {}).get(attack) or {}
        lines.append(f"- `{attack}`: {attack_line(info)}")
    lines.append("")
    lines += defense_choices(metrics, attacks, defenses)
    if detectors:
        lines += [
            "## Detection",
            "",
            "Cells are `detection rate / AUROC` in percent on test inputs: the share of "
            "triggered inputs flagged at the false-rejection rate fitted on the defender's "
            "clean subset (training split).",
            "",
            detection_markdown(metrics["detection"], attacks, detectors),
            "",
        ]
    return "\n".join(lines)


def render_table2(run_dir: str | Path) -> list[Path]:
    """Write table.csv, detection.csv, report.md and figures/table2_asr.png of a finished
    matrix run from its config.yaml and metrics.json; returns the paths written."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.yaml: not a run directory")
    config = yaml.safe_load(config_path.read_text()) or {}
    metrics = read_json(run_dir / "metrics.json", dict, "run metrics")
    defenses = [NO_DEFENSE] + [d for d in config.get("defenses", []) if d != NO_DEFENSE]
    return [
        write_csv(run_dir / "table.csv", TABLE_COLUMNS, metrics["table"]),
        write_csv(run_dir / "detection.csv", DETECTION_COLUMNS, metrics["detection"]),
        table2_heatmap(metrics["table"], config["attacks"], defenses,
                       run_dir / "figures" / "table2_asr.png"),
        atomic_write_text(run_dir / "report.md", report_markdown(config, metrics, defenses)),
    ]
