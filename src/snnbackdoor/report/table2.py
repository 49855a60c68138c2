"""The attack x defense matrix's report, rendered from its run directory alone
(`config.yaml`, `metrics.json`): `table.csv`, `detection.csv`, `report.md` and the
`figures/table2_asr.png` heat maps. Every figure in the report is a percentage.

An attack's line under "Attacks" is its `summary` (a string in `AttackOutcome.info`) when
it gives one, else what its info says about poisoning, epochs and validation figures. A row
or column whose method runs at a setting other than its paper's is marked `†` and the
settings are listed under "Deviations". With both `badsnn` and `badsnn_control` rows (a
clean model deployed and triggered the same way), the report adds BadSNN's
backdoor-attributable ASR: its ASR minus the control's, per defense.
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
MARK = "†"
CONTROLLED = {"badsnn": "badsnn_control"}  # attack row -> its control row
TABLE_COLUMNS = ["attack", "defense", "ca", "asr", "ra"]
DETECTION_COLUMNS = ["attack", "detector", "detection_rate", "auroc"]
ATTRIBUTABLE_COLUMNS = ["attack", "control", "defense", "asr", "control_asr",
                        "attributable_asr"]


def pct(value) -> str:
    """A fraction as a percentage with two decimals; `n/a` when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.2f}"


def share(value) -> str:
    """A fraction as a short percentage (`5%`, `12.5%`)."""
    return "n/a" if value is None else f"{100 * value:g}%"


def _grid(cells: dict, rows: list[str], columns: list[str], render,
          marked: set | frozenset = frozenset()) -> list[str]:
    """Markdown table lines: one row per `rows` entry, one column per `columns` entry; a
    row or column named in `marked` gets the deviation mark."""
    def label(name: str) -> str:
        return f"{name} {MARK}" if name in marked else name

    head = ["Attack", *(label(c) for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        parts = [label(row)] + [render(cells.get((row, column))) for column in columns]
        lines.append("| " + " | ".join(parts) + " |")
    return lines


def table2_markdown(rows: list[dict], attacks: list[str], defenses: list[str],
                    marked: set | frozenset = frozenset()) -> str:
    """Rows = attacks, columns = defenses, cells `CA / ASR` in percent."""
    cells = {(r["attack"], r["defense"]): r for r in rows}
    lines = _grid(cells, attacks, defenses,
                  lambda r: f"{pct(r['ca'])} / {pct(r['asr'])}" if r else "-", marked)
    lines[0] = lines[0].replace(f"| {NO_DEFENSE} |", f"| {NO_DEFENSE} (before) |", 1)
    return "\n".join(lines)


def detection_markdown(rows: list[dict], attacks: list[str], detectors: list[str],
                       marked: set | frozenset = frozenset()) -> str:
    """Rows = attacks, columns = detectors, cells `detection rate / AUROC` in percent."""
    cells = {(r["attack"], r["detector"]): r for r in rows}
    return "\n".join(_grid(
        cells, attacks, detectors,
        lambda r: f"{pct(r['detection_rate'])} / {pct(r['auroc'])}" if r else "-", marked))


def attributable_rows(rows: list[dict]) -> list[dict]:
    """Per defense, an attack's ASR minus its control's (`CONTROLLED`), where both rows
    exist: the share of the ASR the backdoor itself is responsible for."""
    cells = {(r["attack"], r["defense"]): r for r in rows}
    out = []
    for attack, control in CONTROLLED.items():
        for (name, defense), row in cells.items():
            other = cells.get((control, defense))
            if name == attack and other is not None:
                out.append({"attack": attack, "control": control, "defense": defense,
                            "asr": row["asr"], "control_asr": other["asr"],
                            "attributable_asr": row["asr"] - other["asr"]})
    return out


def attributable_markdown(rows: list[dict], defenses: list[str]) -> list[str]:
    """The backdoor-attributable ASR table (attack minus control, points), or nothing."""
    found = attributable_rows(rows)
    if not found:
        return []
    lines = ["## Backdoor-attributable ASR", "",
             "ASR of the attack minus the ASR of its control (a clean model, same recipe, "
             "deployed and triggered the same way, trigger fitted against it under the same "
             "budget), in points, per defense; cells are `attack / control / difference`.",
             ""]
    cells = {(r["attack"], r["defense"]): r for r in found}
    lines += _grid(cells, list(dict.fromkeys(r["attack"] for r in found)), defenses,
                   lambda r: (f"{pct(r['asr'])} / {pct(r['control_asr'])} / "
                              f"{100 * r['attributable_asr']:+.2f}") if r else "-")
    return [*lines, ""]


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def deviations_markdown(metrics: dict) -> list[str]:
    """The settings that differ from each method's default (its paper's), with the preset's
    reason for each method, or nothing when every method runs at its paper's setting."""
    deviations = metrics.get("deviations") or {}
    if not deviations:
        return []
    notes = metrics.get("deviation_notes") or {}
    lines = ["## Deviations", "",
             f"Rows and columns marked {MARK} run a method at a setting other than its "
             "default (the paper's; for an attack's `train.*`, the matrix's recipe):", ""]
    for method, changed in deviations.items():
        shown = ", ".join(f"{key} {_value(v['value'])} (default {_value(v['default'])})"
                          for key, v in changed.items())
        note = f" — {notes[method]}" if notes.get(method) else ""
        lines.append(f"- `{method}`: {shown}{note}")
    return [*lines, ""]


def budget_markdown(metrics: dict) -> list[str]:
    """The defender's budget: the clean subset per attack and what each method spent it
    on (samples per use; a range where attacks differ)."""
    budget = metrics.get("defender_budget") or {}
    subset, uses = budget.get("subset") or {}, budget.get("uses") or {}
    if not subset:
        return []
    sizes = sorted(set(subset.values()))
    size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    lines = ["## Defender budget", "",
             f"Every repair and detector got the defender's clean subset ({size} training "
             f"samples, {share(budget.get('fraction'))} of the clean training split, none "
             "the attack touched) and nothing else; samples per use:", ""]
    for method, per_attack in uses.items():
        parts = {}
        for counts in per_attack.values():
            for use, count in counts.items():
                parts.setdefault(use, set()).add(count)
        shown = ", ".join(f"{use} {min(c)}" + (f"-{max(c)}" if len(c) > 1 else "")
                          for use, c in parts.items())
        lines.append(f"- `{method}`: {shown}")
    return [*lines, ""]


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
    if info.get("surrogate_accuracy_on_poison") is not None:
        parts.append(f"{info.get('surrogate', '')} surrogate's accuracy on the perturbed "
                     f"target samples {pct(info['surrogate_accuracy_on_poison'])}% (on them "
                     f"unperturbed {pct(info.get('surrogate_accuracy_on_clean_poison'))}%)")
    return "; ".join(parts) or "see its folder under attacks/"


RATE_WORDS = ("acc", "ca", "asr", "rate", "ratio", "fraction", "share")


def _setting(key: str, value) -> str:
    """A defense's reported setting: rates (by name, in [0, 1]) in percent, else as given."""
    if isinstance(value, float) and 0.0 <= value <= 1.0 and any(
            word in key.lower() for word in RATE_WORDS):
        return f"{key} {pct(value)}%"
    return f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"


def defense_choices(metrics: dict, attacks: list[str], defenses: list[str]) -> list[str]:
    """What each repair chose and measured inside the defender's clean subset (its
    `defense_info`): the figures behind its settings."""
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
            "What each repair chose and measured inside the defender's clean subset (a "
            "`holdout_accuracy` is on the part of the subset held out for the choice):", "",
            *lines, ""]


def report_markdown(config: dict, metrics: dict, defenses: list[str]) -> str:
    """The matrix's report.md from its config and metrics."""
    attacks, detectors = config["attacks"], config.get("detectors") or []
    model = config["model"]
    cells = {(r["attack"], r["defense"]): r for r in metrics["table"]}
    marked = set(metrics.get("deviations") or {})
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
        f"defense. No setting was chosen on the test split or on ASR. {MARK}: a method run "
        "at a setting other than its paper's (see Deviations).",
        "",
        table2_markdown(metrics["table"], attacks, defenses, marked),
        "",
        *attributable_markdown(metrics["table"], defenses),
        "Robust accuracy (triggered non-target test samples still given their true label), "
        "%:",
        "",
        *_grid(cells, attacks, defenses, lambda r: pct((r or {}).get("ra")), marked),
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
    lines += deviations_markdown(metrics)
    lines += budget_markdown(metrics)
    lines += defense_choices(metrics, attacks, defenses)
    if detectors:
        lines += [
            "## Detection",
            "",
            "Cells are `detection rate / AUROC` in percent on test inputs: the share of "
            "triggered inputs flagged at the false-rejection rate fitted on the defender's "
            "clean subset (training split).",
            "",
            detection_markdown(metrics["detection"], attacks, detectors, marked),
            "",
        ]
    return "\n".join(lines)


def render_table2(run_dir: str | Path) -> list[Path]:
    """Write table.csv, detection.csv, report.md and figures/table2_asr.png of a finished
    matrix run from its config.yaml and metrics.json (and attributable.csv when an attack
    and its control are both rows); returns the paths written."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.yaml: not a run directory")
    config = yaml.safe_load(config_path.read_text()) or {}
    metrics = read_json(run_dir / "metrics.json", dict, "run metrics")
    defenses = [NO_DEFENSE] + [d for d in config.get("defenses", []) if d != NO_DEFENSE]
    attributable = attributable_rows(metrics["table"])
    extra = [write_csv(run_dir / "attributable.csv", ATTRIBUTABLE_COLUMNS, attributable)
             ] if attributable else []
    return [
        *extra,
        write_csv(run_dir / "table.csv", TABLE_COLUMNS, metrics["table"]),
        write_csv(run_dir / "detection.csv", DETECTION_COLUMNS, metrics["detection"]),
        table2_heatmap(metrics["table"], config["attacks"], defenses,
                       run_dir / "figures" / "table2_asr.png"),
        atomic_write_text(run_dir / "report.md", report_markdown(config, metrics, defenses)),
    ]
