"""The BadSNN Fig. 2 study: accuracy and spikes per sample as V_thr, tau and power q move.

It measures, it assumes no direction: on small digit models q > 1 lowers the spike count,
while the paper reports the opposite on CIFAR-10 ResNet-19 (PAPERS.md 1.2).
"""

from __future__ import annotations

import torch.nn as nn

from .data.bundle import Split
from .neurons import NeuronConfig, forward_with_spikes, get_neuron_params, use_config
from .training import model_device


def _point(model: nn.Module, split: Split, config: NeuronConfig | None, transform=None) -> dict:
    x = split.floats().to(model_device(model))
    if transform is not None:
        x = transform(x)
    with use_config(model, config):
        logits, spikes = forward_with_spikes(model, x)
    accuracy = (logits.argmax(1).cpu() == split.y.cpu()).float().mean().item()
    return {"accuracy": accuracy, "spikes_per_sample": spikes["total"].mean().item()}


def neuron_sweep(
    model: nn.Module,
    split: Split,
    v_thresholds: list[float] = (),
    taus: list[float] = (),
    powers: list[float] = (),
) -> dict:
    """Rows of {value, accuracy, spikes_per_sample} for each swept quantity.

    The V_thr sweep keeps tau as trained, the tau sweep keeps V_thr as trained, and the
    power sweep (x -> x**q in pixel space) runs at the trained config.
    """
    has_lif = any(p["tau"] is not None for p in get_neuron_params(model).values())
    result: dict = {"v_threshold": [], "tau": [], "power": []}
    for v in v_thresholds:
        row = _point(model, split, NeuronConfig(v_threshold=v))
        result["v_threshold"].append({"value": v, **row})
    if has_lif:
        for tau in taus:
            row = _point(model, split, NeuronConfig(tau=tau))
            result["tau"].append({"value": tau, **row})
    for q in powers:
        row = _point(model, split, None, transform=lambda x, q=q: x.clamp(0, 1) ** q)
        result["power"].append({"value": q, **row})
    return result


def sweep_table(result: dict) -> str:
    """A markdown table of a neuron sweep."""
    lines = ["| swept | value | accuracy | spikes/sample |", "|---|---|---|---|"]
    for key, rows in result.items():
        for row in rows:
            lines.append(
                f"| {key} | {row['value']:g} | {row['accuracy']:.4f} | "
                f"{row['spikes_per_sample']:.1f} |"
            )
    return "\n".join(lines)


def plot_sweep(result: dict, path, nominal: dict | None = None, title: str = "") -> None:
    """Fig. 2 style: accuracy (left axis) and spikes/sample (right axis) per swept quantity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("v_threshold", "tau", "power") if result.get(k)]
    labels = {"v_threshold": "V_thr", "tau": "tau (SpikingJelly)", "power": "power q (x -> x^q)"}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = result[key]
        values = [r["value"] for r in rows]
        ax.plot(values, [r["accuracy"] for r in rows], "o-", color="tab:blue")
        ax.set_xlabel(labels[key])
        ax.set_ylabel("accuracy", color="tab:blue")
        ax.set_ylim(0, 1.02)
        twin = ax.twinx()
        twin.plot(values, [r["spikes_per_sample"] for r in rows], "s--", color="tab:red")
        twin.set_ylabel("spikes / sample", color="tab:red")
        marker = (nominal or {}).get(key)
        if marker is not None:
            ax.axvline(marker, color="gray", linestyle=":", linewidth=1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
