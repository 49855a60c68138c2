"""BadSNN's report layer: report.md (Table 1 style), table.csv and the figures, rendered
from a run directory (config.yaml, metrics.json, examples.safetensors) by `render_badsnn`."""

from __future__ import annotations

from pathlib import Path

from ..attacks.badsnn import trigger_label
from ..config import read_yaml
from ..io import atomic_write_text, read_json
from .badsnn_curves import eps_figure, threshold_figure
from .badsnn_figures import grid_figure, load_examples, trigger_examples
from .frames import plot_frames
from .sweeps import plot_sweep
from .tables import table_csv, table_rows, warnings_block

EXAMPLES_FILE = "examples.safetensors"
FIGURE_TITLES = {"fig2_clean": "Fig. 2 clean", "fig2_badsnn": "Fig. 2 BadSNN",
                 "fig3_grid": "Fig. 3", "fig5_triggers": "Fig. 5",
                 "frames": "clean and triggered frames over time",
                 "threshold_curve": "ASR_p and CA vs V_thr^a, backdoored vs clean",
                 "eps_curve": "ASR_o vs eps, backdoored vs control, at S_a and S_n"}


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def table1(metrics: dict, rows: list[dict]) -> str:
    """Table-1 style: Clean CA, Base CA, then CA / ASR per V_thr^a at the selected tau^a."""
    keys = [k for k in metrics["selected"] if k.startswith("asr_")]
    tau = metrics["selected"]["tau_a"]
    chosen = [r for r in rows if r["tau_a"] == tau]
    head = "| Clean CA | Base CA | V_thr^a | tau^a | CA | " + " | ".join(
        "ASR_" + k[4:] for k in keys) + " |"
    lines = [head, "|" + "---|" * (5 + len(keys))]
    for index, row in enumerate(chosen):
        first = (pct(metrics["clean_ca"]), pct(metrics["base_ca"])) if index == 0 else ("", "")
        mark = " *" if (row["v_threshold_a"], row["tau_a"]) == (
            metrics["selected"]["v_threshold_a"], metrics["selected"]["tau_a"]) else ""
        cells = [*first, f"{row['v_threshold_a']:g}{mark}", f"{row['tau_a']:g}" if row["tau_a"]
                 else "-", pct(row["ca"]), *(pct(row[k]) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def malicious_lines(metrics: dict) -> list[str]:
    """How S_t was chosen: given, or the clean model's val accuracy curve over V_thr."""
    choice = metrics.get("malicious_choice") or {}
    curve = choice.get("curve") or []
    if not curve:
        return []
    lines = ["", "## How S_t was chosen (validation split)", "",
             f"The smallest V_thr at which the clean model's val accuracy falls below "
             f"{pct(choice.get('level'))}% (2x chance unless `badsnn.auto_level` says):", "",
             "| V_thr | clean val accuracy (%) |", "|---|---|"]
    lines += [f"| {r['v_threshold']:g}{' *' if r['v_threshold'] == choice['v_threshold_t'] else ''}"
              f" | {pct(r['val_accuracy'])} |" for r in curve]
    return lines


def selection_lines(metrics: dict, val_rows: list[dict]) -> list[str]:
    """How S_a was chosen: the rule, the val base CA, and every grid config's val figures."""
    sel, selection = metrics["selected"], metrics["selection"]
    floor = selection["val_base_ca"] - selection["ca_tolerance"]
    lines = ["", "## How S_a was chosen (validation split)", "",
             f"Rule: {selection.get('rule', 'largest val ASR within the CA tolerance')} "
             f"(selecting on val {selection['key'].removeprefix('val_')}; val "
             f"{'clean-model' if selection.get('ca_reference') == 'clean' else 'base'} CA "
             f"{pct(selection['val_base_ca'])}%, tolerance {100 * selection['ca_tolerance']:g} "
             f"points, so val CA >= {pct(floor)}%; {selection.get('candidates', 'n/a')} configs "
             "qualified). `*` marks S_a."]
    selected_val = metrics.get("selected_val") or {}
    if selected_val:
        lines += ["", "At S_a: " + ", ".join(
            f"{k.replace('val_asr_', 'val ASR_').replace('val_ca', 'val CA')} {pct(v)}%"
            for k, v in selected_val.items())]
    if val_rows:
        keys = [k for k in val_rows[0] if k.startswith("val_asr")]
        lines += ["", "| V_thr^a | tau^a | val CA | " + " | ".join(
            k.replace("val_asr_", "val ASR_") for k in keys) + " | within tolerance |",
            "|" + "---|" * (4 + len(keys))]
        for row in val_rows:
            mark = " *" if (row["v_threshold_a"], row["tau_a"]) == (
                sel["v_threshold_a"], sel["tau_a"]) else ""
            tau = "-" if row["tau_a"] is None else f"{row['tau_a']:g}"
            ok = "yes" if row["val_ca"] >= floor else "no"
            lines.append(f"| {row['v_threshold_a']:g}{mark} | {tau} | {pct(row['val_ca'])} | "
                         + " | ".join(pct(row.get(k)) for k in keys) + f" | {ok} |")
    return lines


def collapse_lines(metrics: dict) -> list[str]:
    """The clean model's collapse class and what it did to the target."""
    collapse = metrics.get("collapse")
    if not collapse:
        return []
    moved = collapse["target_requested"] != collapse["target"]
    return ["", "## Collapse class of the clean model (validation split)", "",
            f"With every neuron silent the clean model answers class {collapse['collapse_class']}"
            f" ({pct(collapse['collapse_share'])}% of val inputs); at S_t it answers mostly "
            f"{collapse['collapse_class_malicious']} ({pct(collapse['collapse_share_malicious'])}"
            "%). A spike-lowering trigger reaches that class on any model, so it is no target "
            "for a backdoor claim. "
            + (f"The configured target {collapse['target_requested']} is one: moved to "
               f"{collapse['target']} (`collapse_target: {collapse['policy']}`)." if moved else
               f"Target {collapse['target']} (policy `{collapse['policy']}`).")]


def control_lines(metrics: dict) -> list[str]:
    """T_o's controls: re-optimised against the clean model, transferred, and at S_n; and
    how eps was chosen."""
    sel, control = metrics["selected"], metrics.get("control") or {}
    if "asr_o" not in sel:
        return []
    lines = ["", "## Controls of T_o (test split, %)", "",
             "| measurement | ASR_o |", "|---|---|",
             f"| backdoored model at S_a (`asr_o`) | {pct(sel.get('asr_o'))} |",
             f"| backdoored model at S_n (`asr_o_nominal`) | {pct(metrics.get('asr_o_nominal'))} |",
             f"| T_o re-optimised against the clean model at S_a (`asr_o_clean_model`) | "
             f"{pct(metrics.get('asr_o_clean_model'))} |",
             f"| ... at the clean model's S_n | "
             f"{pct(control.get('asr_o_clean_model_nominal'))} |",
             f"| backdoored model's T_o on the clean model at S_a (`asr_o_transfer`) | "
             f"{pct(metrics.get('asr_o_transfer'))} |",
             "", "The gap between the backdoored model and the re-optimised control is what the "
             "backdoor adds; the control's own rate is adversarial vulnerability."]
    share = control.get("clean_model_target_share_at_attack_config")
    if share is not None:
        lines.append(f"Untriggered, the clean model at S_a sends {pct(share)}% of non-target "
                     "test inputs to the target.")
    search = metrics.get("eps_search")
    if search:
        nominal_max = search.get("nominal_max")
        also = ("" if nominal_max is None else
                f" and whose backdoored T_o keeps val ASR at S_n <= {pct(nominal_max)}%")
        lines += ["", f"eps (L_inf budget of T_o) = {search['eps']:g}: the largest of the grid "
                  f"whose control keeps val ASR <= {pct(search['control_max'])}%{also} (tried "
                  "largest first" + ("" if search["within"] else "; none did, so the smallest")
                  + "):", "", "| eps | control val ASR_o (%) | backdoored val ASR_o at S_n (%) |",
                  "|---|---|---|"]
        lines += [f"| {r['eps']:g} | {pct(r['val_asr_o_clean_model'])} | "
                  f"{pct(r.get('val_asr_o_nominal'))} |" for r in search["rows"]]
    elif metrics.get("eps") is not None:
        lines += ["", f"eps (L_inf budget of T_o) = {metrics['eps']:g} (given)."]
    return lines


def grid_val_rows(run_dir: Path) -> list[dict]:
    """The attack-config grid with its validation columns, from the run's stage store
    (`grid`, or `grid_first` where no T_o was fitted); [] when the run has none."""
    path = run_dir / "stages.json"
    if not path.is_file():
        return []
    stages = read_json(path, dict, "stages file")
    for name in ("grid", "grid_first"):
        rows = (stages.get(name) or {}).get("rows")
        if rows and "val_ca" in rows[0]:
            return rows
    return []


def badsnn_report(config: dict, metrics: dict, figures: list[str],
                  val_rows: list[dict] | None = None) -> str:
    """report.md of a BadSNN run from its config.yaml mapping and metrics.json;
    `figures`: the figure files (relative to the run) to link."""
    model = config["model"]
    sel = metrics["selected"]
    mal = metrics["malicious_config"]
    nom = metrics["nominal_config"]
    lines = [
        f"# BadSNN: {config['name']}",
        "",
        *warnings_block(metrics),
        f"Dataset `{config['dataset']['name']}`, model `{model['name']}` ({model['neuron']}, "
        f"T={metrics.get('T', model['T'])}), seed {config['seed']}, target class "
        f"{metrics.get('target', config.get('target'))}. "
        "Rates in percent on the test split unless a heading says otherwise; the attack "
        f"config is selected on the validation split (largest {metrics['selection']['key']} "
        f"with val CA >= val base CA - {100 * metrics['selection']['ca_tolerance']:g} points, "
        "figures below). `*` marks the selected row.",
        "",
        f"- Nominal S_n: V_thr {nom['v_threshold']}, tau {nom['tau']}; malicious S_t: "
        f"V_thr {mal['v_threshold']}, tau {mal['tau']} (SpikingJelly tau; paper tau = 1/tau).",
        f"- Poisoned target samples: {metrics['poisoning']['poisoned_count']} of "
        f"{metrics['poisoning']['target_count']} of the target class "
        f"(P = {pct(metrics['poisoning']['target_class_ratio'])}%).",
        "",
        table1(metrics, metrics["grid"]),
        "",
        f"Selected attack config: V_thr^a {sel['v_threshold_a']}, tau^a {sel['tau_a']} "
        f"(trigger {metrics.get('trigger', 'n/a')}).",
        *selection_lines(metrics, val_rows or []),
        *malicious_lines(metrics),
    ]
    if metrics["selection"].get("within_tolerance") is False:
        lines += ["", "**No attack config kept val CA within the tolerance**: the one with the "
                  "highest val CA was taken (widen the grid toward S_n or raise the tolerance)."]
    lines += collapse_lines(metrics) + control_lines(metrics)
    if metrics.get("frames"):
        lines += ["", f"Event frames fed to the model: `{metrics['frames']}` "
                  f"(largest training count {metrics['count_max']:g}). "
                  + ("T_s acts on the raw counts, so its clip caps every count at 1; ASR_s_unit "
                     "is T_s on the frames divided by that count, as on [0, 1] frames."
                     if metrics["frames"] == "counts" else "T_s acts on frames in [0, 1].")]
    event_control = {k[:-len("_clean_model")]: v for k, v in metrics.get("control", {}).items()
                     if k.endswith("_clean_model") and k != "asr_o_clean_model"}
    if event_control:
        lines += ["", "## Control: the same triggers on the clean model at the attack config "
                  "(test split, %)",
                  "", "| trigger | backdoored | clean model | clean model at S_n |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {pct(sel.get(k))} | {pct(v)} | "
                  f"{pct(metrics['control'].get(k + '_clean_model_nominal'))} |"
                  for k, v in event_control.items()]
    if metrics.get("asr_s_by_beta"):
        lines += ["", "## T_s noise scale at the selected attack config (test; not used for "
                  "selection)", "", "| beta | ASR_s (%) | spikes per sample |", "|---|---|---|"]
        lines += [f"| {r['beta']:g} | {pct(r['asr_s'])} | {r['spikes_attack']:.1f} |"
                  for r in metrics["asr_s_by_beta"]]
    lines += ["", "## Spikes per sample (test split)", "", "| input / config | spikes |",
              "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in metrics["spikes_per_sample"].items()]
    events = any("event_count_change" in s for s in metrics["perturbation"].values())
    lines += ["", "## Trigger perturbation (test split, mean per sample"
              + ("; frames scaled to [0, 1]" if events else "") + ")", "",
              "| trigger | L2 | Linf | MSE | SSIM | PSNR |" + (" events |" if events else ""),
              "|---|---|---|---|---|---|" + ("---|" if events else "")]
    for name, stats in metrics["perturbation"].items():
        change = (f" {100 * stats['event_count_change']:+.1f}% |"
                  if "event_count_change" in stats else "")
        lines.append(f"| {name} | {stats['l2']:.3f} | {stats['linf']:.3f} | {stats['mse']:.4f} | "
                     f"{stats['ssim']:.3f} | {stats['psnr']:.2f} |{change}")
    seconds = metrics["seconds"]
    lines += ["", "## Stage times (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in seconds.items()]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{FIGURE_TITLES.get(Path(f).stem, Path(f).stem)}]({f})" for f in figures]
    lines.append("")
    return "\n".join(lines)


def badsnn_table_rows(metrics: dict) -> list[dict]:
    """table.csv rows (attack, trigger, ca, asr, ssim, mse): the clean model, then each
    trigger at the selected attack config."""
    attacks = {}
    for key in metrics["selected"]:
        if key.startswith("asr_"):
            stealth = metrics["perturbation"][key.removeprefix("asr_")]
            attacks[trigger_label(key)] = {"attack": "badsnn", "ca": metrics["ca"],
                                           "asr": metrics[key], "ssim": stealth["ssim"],
                                           "mse": stealth["mse"]}
    return table_rows(metrics["clean_ca"], attacks)


def badsnn_figures(run_dir: Path, metrics: dict) -> list[Path]:
    """Fig. 2 (clean and BadSNN neuron sweeps, nominal values marked), Fig. 3 (the
    attack-config grid, S_a marked), Fig. 5 (trigger examples) and, on event frames, the
    frames over time: each drawn when the run holds its data."""
    folder = run_dir / "figures"
    nominal = {**metrics["nominal_config"], "power": 1.0}
    sel = metrics["selected"]
    paths = []
    for name, sweep in (metrics.get("sweeps") or {}).items():
        paths.append(plot_sweep(sweep, folder / f"fig2_{name}.png", nominal,
                                title=f"{name} model (test)"))
    if metrics.get("threshold_curve"):
        paths.append(threshold_figure([metrics["threshold_curve"]],
                                      folder / "threshold_curve.png", sel["v_threshold_a"]))
    if metrics.get("eps_curve"):
        paths.append(eps_figure([metrics["eps_curve"]], folder / "eps_curve.png",
                                metrics.get("eps")))
    keys = ["ca"] + [k for k in metrics["selected"] if k.startswith("asr_")]
    paths.append(grid_figure(metrics["grid"], keys, folder / "fig3_grid.png",
                             metrics["selected"]))
    if (run_dir / EXAMPLES_FILE).exists():
        clean, triggered = load_examples(run_dir / EXAMPLES_FILE)
        paths.append(trigger_examples(clean, triggered, folder / "fig5_triggers.png"))
        if clean.ndim == 5:
            paths.append(plot_frames(clean[0], {k: v[0] for k, v in triggered.items()},
                                     folder / "frames.png"))
    return paths


def render_badsnn(run_dir: str | Path) -> list[Path]:
    """Write table.csv, the figures (when the config asks for them) and report.md of a
    BadSNN run from its directory; the paths written."""
    run_dir = Path(run_dir)
    config = read_yaml(run_dir / "config.yaml")
    metrics = read_json(run_dir / "metrics.json", dict, "run file")
    paths = [atomic_write_text(run_dir / "table.csv", table_csv(badsnn_table_rows(metrics)))]
    if config.get("figures", True):
        paths += badsnn_figures(run_dir, metrics)
    figures = [str(p.relative_to(run_dir)) for p in paths if p.suffix == ".png"]
    paths.append(atomic_write_text(run_dir / "report.md", badsnn_report(
        config, metrics, figures, grid_val_rows(run_dir))))
    return paths
