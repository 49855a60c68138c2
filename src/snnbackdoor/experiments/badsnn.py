"""`kind: badsnn`: BadSNN's Table 1 and figures as resumable stages of one run directory.

It only orchestrates: the clean model, then the attack's stages (`attacks.badsnn`:
malicious config, dual-spike backdoor, T_p grid, T_o, attack-config selection, control),
then the Table-1 extras (spikes and perturbation size per trigger, the T_s noise-scale sweep
on events, the Fig. 2 neuron sweeps and the Fig. 5 examples), the deployed model, and
metrics.json. `report.badsnn.render_badsnn` writes report.md, table.csv and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..analysis import neuron_sweep
from ..attacks.badsnn import (
    BadSNNOptions,
    BadSNNResult,
    asr_at,
    deploy,
    prepare_frames,
    resolve_trigger,
    run_badsnn_stages,
    tau_is_setting,
    trigger_label,
)
from ..attacks.badsnn.attack import stage
from ..attacks.badsnn.curves import eps_curve, threshold_curve
from ..attacks.badsnn.optimise import shared_deepfool
from ..attacks.badsnn.stages import attack_grid
from ..attacks.base import AttackSetup
from ..attacks.poisoning import apply_in_batches
from ..checkpoint import save_model
from ..config import to_dict
from ..metrics import event_count_change, perturbation_stats
from ..neurons import NeuronConfig, count_spikes, use_config
from ..report.badsnn import EXAMPLES_FILE, render_badsnn
from ..report.badsnn_figures import save_examples
from ..rundir import RunDir
from ..training import TrainConfig
from ..triggers.image import NoiseTrigger
from ..triggers.optimised import UNetConfig
from ..util import resolve_device
from .base import (
    AnalyzeConfig,
    ExperimentConfig,
    dataset_from_config,
    model_warning,
    new_model,
    parse_config,
    register_experiment,
    train_clean,
    warnings_of,
)

EXAMPLE_COUNT = 4  # test inputs shown per trigger in Fig. 5


def demo_options() -> BadSNNOptions:
    """The digits demo's BadSNN options (the `badsnn:` section of configs/badsnn_digits.yaml;
    `BadSNNOptions()` keeps the paper's settings)."""
    return BadSNNOptions(
        target_class_ratio=0.5, malicious_weight=2.0, collapse_target="avoid",
        v_thresholds_a=[1.0, 1.1, 1.2, 1.25, 1.3, 1.35, 1.4, 1.45, 1.5],
        deepfool_samples=256, deepfool_max_iter=20, blend_mode="image", blend_k=1,
        keep_weight=0.3, eps_grid=[0.7, 0.5, 0.3], eps_control_max=0.10, eps_nominal_max=0.2,
        unet_patience=3, ca_reference="clean",
        unet=UNetConfig(eps=0.5, epochs=10, width=8, batch_size=64, lr=0.02,
                        weights=[0.0, 5.0, 0.0], adv_config="attack", form="dimming",
                        objective="spikes"),
    )


# The demo's ASR_o-vs-eps curve: eps_grid's budgets (the search's fits are reused).
DEMO_EPS_CURVE = (0.3, 0.5, 0.7)


@dataclass
class BadSNNExperiment(ExperimentConfig):
    """Defaults are the digits demo: digits_net, T=4, S_n = (1.0, tau 2.0), target 0.
    `badsnn` holds the attack's options (what a matrix's `attack_options.badsnn` holds); a
    `badsnn:` section replaces the demo's as a whole (unset keys: the paper's values)."""

    kind: str = "badsnn"
    name: str = "badsnn"
    target: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12))
    badsnn: BadSNNOptions = field(default_factory=demo_options)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    figures: bool = True  # Fig. 2 sweeps, Fig. 3 grid, Fig. 5 examples (and event frames)
    # Curves with controls (images): ASR_p / CA vs V_thr^a beside the clean model (cheap),
    # and ASR_o vs eps for each budget listed (two T_o fits per eps; [] = none).
    threshold_curve: bool = True
    eps_curve: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target < 0:
            raise ValueError(f"target must be a class index >= 0, got {self.target}")
        if any(not 0 < e <= 1 for e in self.eps_curve):
            raise ValueError("eps_curve values are L_inf budgets in (0, 1]")


def _spikes(model, x: torch.Tensor, config: NeuronConfig) -> float:
    with use_config(model, config):
        return float(count_spikes(model, x)["total"].mean())


def spikes_and_perturbation(result: BadSNNResult, unit: float) -> dict:
    """Spikes per test sample at S_n and S_a, clean and per trigger, and each trigger's
    perturbation size on [0, 1] frames (`unit`: what count frames are divided by)."""
    model, data, attack = result.model, result.data, result.attack
    x = data.test.floats()
    events = data.info.kind == "events"
    out = {"clean_nominal": _spikes(model, x, result.nominal),
           "clean_attack": _spikes(model, x, attack)}
    for key, trigger in result.triggers.items():
        name = key.replace("asr_", "")
        triggered = apply_in_batches(trigger, x)
        out[f"{name}_attack"] = _spikes(model, triggered, attack)
        out[f"{name}_perturbation"] = perturbation_stats(x / unit, triggered / unit)
        if events:
            out[f"{name}_perturbation"]["event_count_change"] = event_count_change(x, triggered)
    return out


def noise_beta_sweep(result: BadSNNResult, betas: list[float], seed: int, counts: bool) -> dict:
    """ASR of T_s and spikes per sample at S_a for each noise scale beta (test split)."""
    x = result.data.test.floats()
    rows = []
    for beta in betas:
        trigger = NoiseTrigger(beta, seed, counts=counts)
        rows.append({"beta": beta,
                     "asr_s": asr_at(result.model, result.data.test, trigger, result.target,
                                     result.attack),
                     "spikes_attack": _spikes(result.model, apply_in_batches(trigger, x),
                                              result.attack)})
    return {"rows": rows}


def figure_data(config: BadSNNExperiment, result: BadSNNResult, run: RunDir) -> dict:
    """Fig. 2 sweeps of the clean and the backdoored model, and the Fig. 5 examples saved
    in the run (the first non-target test inputs and each trigger's version of them)."""
    data, events = result.data, result.data.info.kind == "events"
    taus = config.analyze.taus if tau_is_setting(result.model) else []
    powers = [] if events else config.analyze.powers
    sweeps = {name: neuron_sweep(model, data.test, config.analyze.v_thresholds, taus, powers)
              for name, model in (("clean", result.clean), ("badsnn", result.model))}
    keep = torch.nonzero(data.test.y != result.target).flatten()[:EXAMPLE_COUNT]
    x = data.test.floats(keep)
    save_examples(run.path / EXAMPLES_FILE, x,
                  {trigger_label(k): t(x) for k, t in result.triggers.items()})
    return {"sweeps": sweeps}


@register_experiment("badsnn", BadSNNExperiment)
def run_badsnn(config: BadSNNExperiment, run: RunDir) -> dict:
    """Table 1 of BadSNN for one dataset and model, with its figures."""
    device = resolve_device(config.device)
    options, seed = config.badsnn, config.seed
    raw = dataset_from_config(config, device)
    events = raw.info.kind == "events"
    resolve_trigger(options, raw.info.kind)  # a trigger that cannot apply fails before training
    frames = prepare_frames(raw, options.frames) if events else None
    data = frames.data if frames is not None else raw

    clean, clean_info = run.model_stage(
        "clean_model", lambda: train_clean(config, data, device, "clean"), device
    )
    setup = AttackSetup(
        data=raw, build_model=lambda: new_model(config, data.info, device), train=config.train,
        target=config.target, seed=seed, device=device, clean_model=lambda: clean,
        workdir=run.path,
    )
    result = run_badsnn_stages(setup, options, frames)

    counts = events and options.frames == "counts"
    # Perturbation sizes on [0, 1] frames in both modes, so l2, linf and mse compare across
    # them (SSIM and PSNR use each sample's own range anyway).
    unit = frames.count_max if counts else 1.0
    spikes = stage(setup, "spikes_and_perturbation",
                   lambda: spikes_and_perturbation(result, unit))
    noise_sweep = []
    if events:
        noise_sweep = stage(setup, "noise_beta_sweep", lambda: noise_beta_sweep(
            result, options.noise_beta_sweep, seed, counts))["rows"]
    sweeps = None
    if config.figures:
        sweeps = stage(setup, "figures", lambda: figure_data(config, result, run))["sweeps"]

    curves = {}
    if not events and config.threshold_curve:
        curves["threshold_curve"] = stage(setup, "threshold_curve", lambda: threshold_curve(
            result, attack_grid(options, tau_is_setting(result.model)), options.power))
    if not events and config.eps_curve:
        deepfool = shared_deepfool(result.model, data, options, result.nominal, seed)
        curves["eps_curve"] = stage(setup, "eps_curve", lambda: eps_curve(
            result, options, config.eps_curve, seed, setup, deepfool))

    deploy(result.model, result.attack)
    save_model(result.model, run.path / "badsnn_deployed.safetensors",
               {"attack_config": result.attack.as_dict(),
                "nominal_config": result.nominal.as_dict()})
    seconds = RunDir(run.path).stage_seconds()
    seconds["total"] = round(sum(seconds.values()), 3)
    info = result.info()
    classes = data.info.num_classes
    warnings = warnings_of(
        model_warning("clean model", result.clean, data.test, classes),
        model_warning("backdoored model at the attack config", result.model, data.test, classes))
    metrics = {
        "warnings": warnings,
        "clean_ca": clean_info["test_accuracy"],
        "base_ca": info["base_ca"],
        **info["selected"],  # ca, asr_* at the selected attack config (also under "selected")
        "frame_scale": frames.frame_scale if frames is not None else None,
        "count_max": frames.count_max if frames is not None else None,
        "T": data.info.shape[0] if events else config.model.T,
        "frames": options.frames if events else None,
        "trigger": result.trigger,
        "target": result.target,
        "selected": info["selected"],
        "selected_val": info["selected_val"],  # S_a's validation figures (the selection's)
        "grid": info["grid"],
        "asr_o_clean_model": result.control.get("asr_o_clean_model"),
        "asr_o_transfer": result.control.get("asr_o_transfer"),
        "asr_o_nominal": result.control.get("asr_o_nominal"),
        "collapse_class": info["collapse_class"],
        "collapse": info["collapse"],
        "eps": info["eps"],
        "eps_search": info["eps_search"],
        "seconds": seconds,
        "nominal_config": info["nominal_config"],
        "malicious_config": info["malicious_config"],
        "malicious_choice": result.malicious_choice,
        "provisional_attack_config": result.public_row(result.provisional.row),
        "selection": {**info["selection"], "provisional": result.provisional.record()},
        "poisoning": {**info["poisoning"], "target_class_ratio": options.target_class_ratio},
        "spikes_per_sample": {k: v for k, v in spikes.items() if not k.endswith("perturbation")},
        "perturbation": {k.replace("_perturbation", ""): v for k, v in spikes.items()
                         if k.endswith("perturbation")},
        "asr_s_by_beta": noise_sweep,
        "trigger_o": info["trigger_o"],
        "control": result.control,
        **curves,
    }
    if sweeps is not None:
        metrics["sweeps"] = sweeps
    run.write_metrics(metrics)
    render_badsnn(run.path)
    return metrics


def demo_config(seed: int, overrides=()) -> BadSNNExperiment:
    """The demo's config; `--set badsnn.X` / `train.X` change one key of the demo's sections
    instead of replacing a section with the paper's defaults."""
    demo = BadSNNExperiment()
    base = {"kind": "badsnn", "name": "demo", "seed": seed, "eps_curve": list(DEMO_EPS_CURVE),
            "badsnn": to_dict(demo.badsnn), "train": to_dict(demo.train) | {"seed": None}}
    return parse_config(base, list(overrides))
