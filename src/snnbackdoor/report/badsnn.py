"""Tables and figures from run results (markdown and PNG), in the style of the papers."""

from __future__ import annotations

from pathlib import Path

import torch

from ..analysis import plot_sweep


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def trigger_label(key: str) -> str:
    """A metric key's trigger name: asr_s -> T_s (figures and table.csv)."""
    return key.replace("asr_", "T_")


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


def badsnn_report(config, metrics: dict, rows: list[dict]) -> str:
    """report.md of a BadSNN run."""
    sel = metrics["selected"]
    mal = metrics["malicious_config"]
    nom = metrics["nominal_config"]
    lines = [
        f"# BadSNN: {config.name}",
        "",
        f"Dataset `{config.dataset.name}`, model `{config.model.name}` ({config.model.neuron}, "
        f"T={metrics.get('T', config.model.T)}), seed {config.seed}. "
        "Test-split figures in percent; the attack config is selected on the validation split "
        f"(largest {metrics['selection']['key']} with val CA >= val base CA - "
        f"{metrics['selection']['ca_tolerance']}). `*` marks the selected row.",
        "",
        f"- Nominal S_n: V_thr {nom['v_threshold']}, tau {nom['tau']}; malicious S_t: "
        f"V_thr {mal['v_threshold']}, tau {mal['tau']} (SpikingJelly tau; paper tau = 1/tau).",
        f"- Poisoned target samples: {metrics['poisoning']['poisoned_count']} of "
        f"{metrics['poisoning']['target_count']} (P = {metrics['poisoning']['poison_ratio']}).",
        "",
        table1(metrics, rows),
        "",
        f"Selected attack config: V_thr^a {sel['v_threshold_a']}, tau^a {sel['tau_a']}.",
    ]
    if metrics.get("asr_o_clean_model") is not None:
        lines += [
            "",
            "## Control: the same T_o optimisation against the clean model",
            "",
            f"ASR_o of the backdoored model: {pct(sel.get('asr_o'))}; of the clean model at the "
            f"same attack config and budget: {pct(metrics['asr_o_clean_model'])} "
            f"(at its nominal config: {pct(metrics['control'].get('asr_o_clean_model_nominal'))})."
            " The gap is what the backdoor itself adds; the rest is adversarial vulnerability.",
        ]
        share = metrics["control"].get("clean_model_target_share_at_attack_config")
        if share is not None:
            lines.append(
                f"Without any trigger the clean model already sends {pct(share)} of non-target "
                "test inputs to the target at that config (a net near silence answers with "
                "one class; if that class is the target, part of the attack comes free)."
            )
    if metrics.get("frames"):
        lines += ["", f"Event frames fed to the model: `{metrics['frames']}` "
                  f"(largest training count {metrics['count_max']:g}). "
                  + ("T_s acts on the raw counts, so its clip caps every count at 1; ASR_s_unit "
                     "is T_s on the frames divided by that count, as on [0, 1] frames."
                     if metrics["frames"] == "counts" else "T_s acts on frames in [0, 1].")]
    event_control = {k[:-len("_clean_model")]: v for k, v in metrics.get("control", {}).items()
                     if k.endswith("_clean_model") and k != "asr_o_clean_model"}
    if event_control:
        lines += ["", "## Control: the same triggers on the clean model at the attack config",
                  "", "| trigger | backdoored | clean model | clean model at S_n |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {pct(sel.get(k))} | {pct(v)} | "
                  f"{pct(metrics['control'].get(k + '_clean_model_nominal'))} |"
                  for k, v in event_control.items()]
    if metrics.get("asr_s_by_beta"):
        lines += ["", "## T_s noise scale at the selected attack config (test; not used for "
                  "selection)", "", "| beta | ASR_s | spikes per sample |", "|---|---|---|"]
        lines += [f"| {r['beta']:g} | {pct(r['asr_s'])} | {r['spikes_attack']:.1f} |"
                  for r in metrics["asr_s_by_beta"]]
    lines += ["", "## Spikes per sample (test)", "", "| input / config | spikes |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in metrics["spikes_per_sample"].items()]
    events = any("event_count_change" in s for s in metrics["perturbation"].values())
    lines += ["", "## Trigger perturbation (test, mean per sample"
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
    lines += ["", "## Figures", "", "![Fig. 2 clean](figures/fig2_clean.png)",
              "![Fig. 2 BadSNN](figures/fig2_badsnn.png)", "![Fig. 3](figures/fig3_grid.png)",
              "![Fig. 5](figures/fig5_triggers.png)"]
    if events:
        lines.append("![clean and triggered frames over time](figures/frames.png)")
    lines.append("")
    return "\n".join(lines)


def grid_heatmaps(rows: list[dict], keys: list[str], path: Path) -> Path:
    """Fig. 3 style: CA and each ASR over (V_thr^a, tau^a)."""
    plt = _pyplot()
    vs = sorted({r["v_threshold_a"] for r in rows})
    taus = sorted({r["tau_a"] or 0.0 for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 0.9 + 0.55 * len(taus) + 1.2),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        grid = torch.full((len(taus), len(vs)), float("nan"))
        for r in rows:
            grid[taus.index(r["tau_a"] or 0.0), vs.index(r["v_threshold_a"])] = r[key]
        image = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(vs)), [f"{v:g}" for v in vs], rotation=45)
        ax.set_yticks(range(len(taus)), [f"{t:g}" for t in taus])
        ax.set_xlabel("V_thr^a")
        ax.set_ylabel("tau^a")
        ax.set_title(key.upper())
        for i in range(len(taus)):
            for j in range(len(vs)):
                if not torch.isnan(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center",
                            color="white", fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trigger_examples(x: torch.Tensor, triggers: dict, path: Path, count: int = 4) -> Path:
    """Fig. 5 style: clean, triggered, and the perturbation normalised to [0, 1]."""
    plt = _pyplot()
    x = x[:count]
    columns = 1 + 2 * len(triggers)
    fig, axes = plt.subplots(len(x), columns, figsize=(1.6 * columns, 1.6 * len(x)),
                             squeeze=False)
    shown = _as_image(x)
    for i in range(len(x)):
        axes[i][0].imshow(shown[i], cmap="gray", vmin=0, vmax=1)
        axes[0][0].set_title("clean", fontsize=8)
    for t, (name, trigger) in enumerate(triggers.items()):
        triggered = trigger(x)
        diff = (triggered - x).abs()
        diff = diff / diff.flatten(1).amax(1).clamp_min(1e-8).view(-1, *[1] * (x.ndim - 1))
        for i, image in enumerate((_as_image(triggered), _as_image(diff))):
            for row in range(len(x)):
                axes[row][1 + 2 * t + i].imshow(image[row], cmap="gray", vmin=0, vmax=1)
            label = trigger_label(name)
            axes[0][1 + 2 * t + i].set_title(label if i == 0 else f"|{label} - x| (norm.)",
                                             fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _as_image(x: torch.Tensor):
    """Images [N, C, H, W] -> HxW(x3) arrays; event frames -> time-summed ON minus OFF."""
    x = x.detach().float().cpu()
    if x.ndim == 5:
        summed = x.sum(1)
        x = (summed[:, -1] - summed[:, 0]).unsqueeze(1)
        x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True)
                                                   - x.amin((2, 3), keepdim=True)).clamp_min(1e-8)
    x = x.clamp(0, 1)
    return x[:, 0].numpy() if x.shape[1] == 1 else x.permute(0, 2, 3, 1).numpy()


def badsnn_figures(folder: Path, rows, sweeps, data, triggers: dict, primary: str) -> list[Path]:
    """Fig. 2 (clean and BadSNN sweeps), Fig. 3 (grid heatmaps), Fig. 5 (trigger examples)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sweep in sweeps.items():
        path = folder / f"fig2_{name}.png"
        plot_sweep(sweep, path, {"v_threshold": 1.0, "power": 1.0}, title=f"{name} model (test)")
        paths.append(path)
    keys = ["ca"] + list(triggers)
    paths.append(grid_heatmaps(rows, keys, folder / "fig3_grid.png"))
    target_free = data.test.floats(torch.nonzero(data.test.y != 0).flatten()[:4])
    paths.append(trigger_examples(target_free, triggers, folder / "fig5_triggers.png"))
    return paths
