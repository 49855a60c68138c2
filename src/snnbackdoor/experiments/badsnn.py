"""`kind: badsnn`: the BadSNN pipeline end to end, as resumable stages.

clean model -> malicious config (auto) -> dual-spike backdoor -> T_p grid -> T_o (DeepFool,
blending, U-Net) -> attack-config grid and selection on validation data -> control T_o on
the clean model -> spikes, perturbation size -> metrics.json, report.md, figures.
For event data the triggers are T_s (noise) and event thinning, and the T_o stages are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..analysis import neuron_sweep
from ..attacks.badsnn import (
    BadSNNConfig,
    auto_malicious_threshold,
    choose_poisoned_target_samples,
    dual_spike_loss,
    select_attack_row,
)
from ..attacks.base import AttackOutcome
from ..attacks.poisoning import apply_in_batches, triggered_non_target
from ..data.augment import dataset_augmentation
from ..data.bundle import DatasetBundle, Split
from ..metrics import attack_success_rate, event_count_change, perturbation_stats
from ..neurons import NeuronConfig, count_spikes, set_neuron_params, use_config
from ..report.badsnn import badsnn_figures, badsnn_report, trigger_label
from ..report.frames import plot_frames
from ..report.tables import table_csv, table_rows
from ..rundir import RunDir
from ..training import TrainConfig, evaluate, predict, seed_everything, train
from ..triggers.events import ThinningTrigger
from ..triggers.image import NoiseTrigger, PowerTrigger
from ..triggers.optimised import (
    OptimisedTrigger,
    UNetConfig,
    blend_targets,
    deepfool_deltas,
    fit_unet,
    load_generator,
    save_generator,
)
from ..util import resolve_device
from .base import (
    AnalyzeConfig,
    DatasetConfig,
    ExperimentConfig,
    ModelConfig,
    dataset_from_config,
    new_model,
    register_experiment,
    train_clean,
)


@dataclass
class BadSNNExperiment(ExperimentConfig):
    """Defaults are the digits demo: digits_net, T=4, S_n = (1.0, tau 2.0)."""

    kind: str = "badsnn"
    name: str = "badsnn"
    seed: int = 0
    device: str = "auto"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15))
    badsnn: BadSNNConfig = field(default_factory=BadSNNConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    control: bool = True  # also fit T_o against the clean model (asr_o_clean_model)
    figures: bool = True


def prepare_frames(data: DatasetBundle, mode: str) -> DatasetBundle:
    """Event frames as the model sees them: divided by the training split's largest count
    ("unit", so T_s acts on [0, 1]) or raw counts ("counts"). Records `frame_scale` (what
    the frames were divided by) and `count_max` in the info."""
    count_max = float(data.train.x.float().max()) or 1.0
    scale = count_max if mode == "unit" else 1.0
    data.info.extra.update(frame_scale=scale, count_max=count_max)
    if scale == 1.0:
        return data
    split = lambda s: Split(s.floats() / scale, s.y)  # noqa: E731
    return DatasetBundle(split(data.train), split(data.val), split(data.test), data.info)


EVENT_KEYS = {"noise": "asr_s", "thinning": "asr_thin"}


@dataclass(frozen=True)
class UnitScaledNoise:
    """T_s on count frames divided by ``scale`` (to [0, 1]), scaled back: the trigger as
    PAPERS.md 1.4 states it, for a model fed raw counts."""

    beta: float
    seed: int
    scale: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return NoiseTrigger(self.beta, self.seed)(x / self.scale) * self.scale


def event_triggers(cfg: BadSNNConfig, seed: int, frame_scale: float, count_max: float) -> dict:
    """The event-frame triggers, keyed by their metric: T_s (paper), event thinning and, on
    count frames, T_s on unit-scaled frames. `frame_scale`: what the frames were divided by."""
    counts = cfg.frames == "counts"
    triggers = {"asr_s": NoiseTrigger(cfg.noise_beta, seed, counts=counts)}
    if counts:
        triggers["asr_s_unit"] = UnitScaledNoise(cfg.noise_beta, seed, count_max)
    triggers["asr_thin"] = ThinningTrigger(cfg.thinning_keep, seed, frame_scale)
    return triggers


def _grid(cfg: BadSNNConfig) -> list[NeuronConfig]:
    return [NeuronConfig(v, t) for t in cfg.taus_a for v in cfg.v_thresholds_a]


def _asr(model, split: Split, trigger, target: int, config: NeuronConfig) -> float:
    return _asr_triggered(model, triggered_non_target(split, trigger, target), target, config)


def _asr_triggered(model, triggered: Split, target: int, config: NeuronConfig) -> float:
    pred = predict(model, triggered.x, neuron_config=config).cpu()
    return attack_success_rate(pred, triggered.y.cpu(), target)


def grid_rows(model, data: DatasetBundle, triggers: dict, target: int,
              grid: list[NeuronConfig], progress: bool = True, with_ca: bool = True) -> list[dict]:
    """CA and ASR per trigger at every attack config, on val (selection) and test (report).

    Triggers do not depend on the neuron config: each split is triggered once.
    """
    from tqdm.auto import tqdm

    triggered = {(key, name): triggered_non_target(split, trigger, target)
                 for key, trigger in triggers.items()
                 for name, split in (("val", data.val), ("test", data.test))}
    rows = []
    for config in tqdm(grid, desc="attack grid", leave=False, disable=not progress):
        row = {"v_threshold_a": config.v_threshold, "tau_a": config.tau}
        if with_ca:
            row["val_ca"] = evaluate(model, data.val, neuron_config=config)
            row["ca"] = evaluate(model, data.test, neuron_config=config)
        for key in triggers:
            row[f"val_{key}"] = _asr_triggered(model, triggered[key, "val"], target, config)
            row[key] = _asr_triggered(model, triggered[key, "test"], target, config)
        rows.append(row)
    return rows


def fit_optimised(model, data: DatasetBundle, cfg: BadSNNConfig, unet: UNetConfig,
                  nominal: NeuronConfig, attack: NeuronConfig, seed: int) -> tuple:
    """T_o against `model`: DeepFool at S_n, blending at `attack`, U-Net training."""
    gen = torch.Generator().manual_seed(seed)
    count = min(cfg.deepfool_samples, len(data.train))
    index = torch.randperm(len(data.train), generator=gen)[:count].to(data.train.y.device)
    x = data.train.floats(index)
    delta_df, flipped = deepfool_deltas(
        model, x, cfg.deepfool_overshoot, cfg.deepfool_max_iter, nominal
    )
    delta, alpha, reached = blend_targets(
        model, x, delta_df, cfg.power, cfg.target, attack, cfg.blend_k, cfg.blend_mode,
        cfg.delta_sign,
    )
    adv_config = nominal if unet.adv_config == "nominal" else attack
    generator, history = fit_unet(
        model, x, delta, cfg.target, data.info.num_classes, unet, adv_config, seed
    )
    info = {
        "deepfool_flip_rate": float(flipped.float().mean()),
        "deepfool_l2": float(delta_df.flatten(1).norm(dim=1).mean()),
        "blend_reached_target": float(reached.float().mean()),
        "blend_alpha_mean": float(alpha.mean()),
        "target_delta_l2": float(delta.flatten(1).norm(dim=1).mean()),
        "unet_history": history,
    }
    return generator, info


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


def frames_figure(path, split: Split, triggers: dict, target: int):
    """Clean and triggered frames of the first non-target test sample, over time."""
    sample = int(torch.nonzero(split.y.cpu() != target).flatten()[0])
    clean = split.floats(torch.tensor([sample], device=split.y.device))
    return plot_frames(clean[0], {trigger_label(key): trigger(clean)[0]
                                  for key, trigger in triggers.items()}, path)


def _spikes(model, x: torch.Tensor, config: NeuronConfig) -> float:
    with use_config(model, config):
        return float(count_spikes(model, x)["total"].mean())


@register_experiment("badsnn", BadSNNExperiment)
def run_badsnn(config: BadSNNExperiment, run: RunDir) -> dict:
    device = resolve_device(config.device)
    cfg, seed = config.badsnn, config.seed
    data = dataset_from_config(config, device)
    events = data.info.kind == "events"
    counts = events and cfg.frames == "counts"
    if events:
        data = prepare_frames(data, cfg.frames)
        cfg.trigger = "noise" if cfg.trigger == "optimised" else cfg.trigger
    elif cfg.trigger != "optimised":
        raise ValueError(f"badsnn.trigger {cfg.trigger!r} is for event frames; "
                         f"{data.info.name} is an image dataset (use 'optimised')")
    nominal = NeuronConfig(config.model.v_threshold, config.model.tau)
    lif = config.model.neuron == "lif"
    tau = (lambda t: t) if lif else (lambda t: None)

    clean, clean_info = run.model_stage(
        "clean_model", lambda: train_clean(config, data, device, "clean"), device
    )

    def choose_malicious() -> dict:
        if cfg.v_threshold_t is not None:
            return {"v_threshold_t": cfg.v_threshold_t, "tau_t": cfg.tau_t, "curve": []}
        level = cfg.auto_level or 2.0 / data.info.num_classes
        v, curve = auto_malicious_threshold(clean, data.val, cfg.auto_grid, level, tau(cfg.tau_t))
        return {"v_threshold_t": v, "tau_t": cfg.tau_t, "curve": curve, "level": level}

    malicious_info = run.stage("malicious_config", choose_malicious)
    malicious = NeuronConfig(malicious_info["v_threshold_t"], tau(malicious_info["tau_t"]))

    def train_backdoor():
        seed_everything(config.train.seed)
        model = new_model(config, data.info, device)
        poisoned = choose_poisoned_target_samples(data.train.y, cfg.target, cfg.poison_ratio, seed)
        mask = torch.zeros(len(data.train), dtype=torch.bool, device=device)
        mask[poisoned.to(device)] = True
        augment = dataset_augmentation(data.info, config.train.augment)
        result = train(model, data.train, config.train, data.val, augment=augment,
                       loss_fn=dual_spike_loss(mask, malicious), description="BadSNN")
        info = {
            "poisoned_count": len(poisoned),
            "target_count": int((data.train.y == cfg.target).sum()),
            "base_ca": evaluate(model, data.test),
            "val_base_ca": evaluate(model, data.val),
            "train_seconds": round(result.seconds, 3),
            "history": result.history,
        }
        return model, info

    backdoor, backdoor_info = run.model_stage("badsnn_model", train_backdoor, device)
    grid = [NeuronConfig(c.v_threshold, tau(c.tau)) for c in _grid(cfg)]
    if events:
        first_trigger = event_triggers(cfg, seed, data.info.extra["frame_scale"],
                                       data.info.extra["count_max"])
        primary = first_key = EVENT_KEYS[cfg.trigger]
    else:
        first_trigger, primary, first_key = {"asr_p": PowerTrigger(cfg.power)}, "asr_o", "asr_p"
    rows_first = run.stage(
        "grid_first", lambda: {"rows": grid_rows(backdoor, data, first_trigger, cfg.target, grid)}
    )["rows"]
    provisional = select_attack_row(
        rows_first, backdoor_info["val_base_ca"], cfg.ca_tolerance, f"val_{first_key}"
    )
    provisional_config = NeuronConfig(provisional["v_threshold_a"], provisional["tau_a"])
    triggers = dict(first_trigger)

    if not events:
        generator_path = run.path / "trigger_o.safetensors"

        def optimise() -> dict:
            generator, info = fit_optimised(
                backdoor, data, cfg, config.unet, nominal, provisional_config, seed
            )
            save_generator(generator, generator_path, {"target": cfg.target})
            return {"blend_config": provisional_config.as_dict(), **info}

        optimise_info = run.stage("trigger_o", optimise)
        generator, _ = load_generator(generator_path, device)
        triggers["asr_o"] = OptimisedTrigger(generator, cfg.target)

        def full_grid() -> dict:
            rows = grid_rows(backdoor, data, {"asr_o": triggers["asr_o"]}, cfg.target, grid,
                             with_ca=False)  # CA is in rows_first
            merged = [{**a, **b} for a, b in zip(rows_first, rows)]
            return {"rows": merged}

        rows = run.stage("grid", full_grid)["rows"]
    else:
        optimise_info, rows = {}, rows_first

    selected = select_attack_row(
        rows, backdoor_info["val_base_ca"], cfg.ca_tolerance, f"val_{primary}"
    )
    attack = NeuronConfig(selected["v_threshold_a"], selected["tau_a"])
    metrics_keys = ["v_threshold_a", "tau_a", "ca"] + list(triggers)
    public_row = lambda r: {k: r[k] for k in metrics_keys}  # noqa: E731

    control = {}
    if not events and config.control:

        def clean_control() -> dict:
            generator, info = fit_optimised(
                clean, data, cfg, config.unet, nominal, attack, seed
            )
            save_generator(generator, run.path / "trigger_o_clean_model.safetensors",
                           {"target": cfg.target})
            trigger = OptimisedTrigger(generator, cfg.target)
            return {
                "asr_o_clean_model": _asr(clean, data.test, trigger, cfg.target, attack),
                "asr_o_clean_model_nominal": _asr(clean, data.test, trigger, cfg.target, nominal),
                "clean_model_ca_at_attack_config": evaluate(clean, data.test, neuron_config=attack),
                # Untriggered: where a silent clean net already answers y_t, T_o gets it free.
                "clean_model_target_share_at_attack_config": _asr(
                    clean, data.test, lambda x: x, cfg.target, attack),
                **{k: v for k, v in info.items() if k != "unet_history"},
            }

        control = run.stage("control", clean_control)
    elif config.control:

        def clean_control_events() -> dict:
            out = {"clean_model_ca_at_attack_config": evaluate(clean, data.test,
                                                               neuron_config=attack)}
            for key, trigger in triggers.items():
                triggered = triggered_non_target(data.test, trigger, cfg.target)
                out[f"{key}_clean_model"] = _asr_triggered(clean, triggered, cfg.target, attack)
                out[f"{key}_clean_model_nominal"] = _asr_triggered(clean, triggered, cfg.target,
                                                                   nominal)
            return out

        control = run.stage("control", clean_control_events)

    # Perturbation sizes on [0, 1] frames in both modes, so l2, linf and mse compare across
    # them (SSIM and PSNR use each sample's own range anyway).
    unit = data.info.extra["count_max"] if counts else 1.0

    def measure_spikes() -> dict:
        x = data.test.floats()
        out = {"clean_nominal": _spikes(backdoor, x, nominal),
               "clean_attack": _spikes(backdoor, x, attack)}
        for key, trigger in triggers.items():
            name = key.replace("asr_", "")
            triggered = apply_in_batches(trigger, x)
            out[f"{name}_attack"] = _spikes(backdoor, triggered, attack)
            out[f"{name}_perturbation"] = perturbation_stats(x / unit, triggered / unit)
            if events:
                out[f"{name}_perturbation"]["event_count_change"] = event_count_change(
                    x, triggered)
        return out

    spikes = run.stage("spikes_and_perturbation", measure_spikes)

    noise_sweep = []
    if events:

        def sweep_noise() -> dict:
            x = data.test.floats()
            rows = []
            for beta in cfg.noise_beta_sweep:
                trigger = NoiseTrigger(beta, seed, counts=counts)
                rows.append({"beta": beta,
                             "asr_s": _asr(backdoor, data.test, trigger, cfg.target, attack),
                             "spikes_attack": _spikes(backdoor, apply_in_batches(trigger, x),
                                                      attack)})
            return {"rows": rows}

        noise_sweep = run.stage("noise_beta_sweep", sweep_noise)["rows"]

    if config.figures:
        def figures() -> dict:
            sweeps = {
                "clean": neuron_sweep(clean, data.test, config.analyze.v_thresholds,
                                      config.analyze.taus if lif else [],
                                      [] if events else config.analyze.powers),
                "badsnn": neuron_sweep(backdoor, data.test, config.analyze.v_thresholds,
                                       config.analyze.taus if lif else [],
                                       [] if events else config.analyze.powers),
            }
            paths = badsnn_figures(run.path / "figures", rows, sweeps, data, triggers, primary)
            if events:
                paths.append(frames_figure(run.path / "figures" / "frames.png", data.test,
                                           triggers, cfg.target))
            return {"sweeps": sweeps, "paths": [str(p) for p in paths]}

        run.stage("figures", figures)

    set_neuron_params(backdoor, v_threshold=attack.v_threshold, tau=attack.tau)
    from ..checkpoint import save_model

    save_model(backdoor, run.path / "badsnn_deployed.safetensors",
               {"attack_config": attack.as_dict(), "nominal_config": nominal.as_dict()})
    seconds = run.stage_seconds()
    seconds["total"] = round(sum(seconds.values()), 3)
    chosen = public_row(selected)
    metrics = {
        "clean_ca": clean_info["test_accuracy"],
        "base_ca": backdoor_info["base_ca"],
        **chosen,  # ca, asr_* at the selected attack config (also under "selected")
        "frame_scale": data.info.extra.get("frame_scale"),
        "count_max": data.info.extra.get("count_max"),
        "T": data.info.shape[0] if events else config.model.T,
        "frames": cfg.frames if events else None,
        "selected": chosen,
        "grid": [public_row(r) for r in rows],
        "asr_o_clean_model": control.get("asr_o_clean_model"),
        "seconds": seconds,
        "nominal_config": nominal.as_dict(),
        "malicious_config": malicious.as_dict(),
        "malicious_choice": malicious_info,
        "provisional_attack_config": {k: provisional.get(k) for k in metrics_keys},
        "selection": {"split": "val", "key": f"val_{primary}", "ca_tolerance": cfg.ca_tolerance,
                      "val_base_ca": backdoor_info["val_base_ca"]},
        "poisoning": {"poisoned_count": backdoor_info["poisoned_count"],
                      "target_count": backdoor_info["target_count"],
                      "poison_ratio": cfg.poison_ratio},
        "spikes_per_sample": {k: v for k, v in spikes.items() if not k.endswith("perturbation")},
        "perturbation": {k.replace("_perturbation", ""): v for k, v in spikes.items()
                         if k.endswith("perturbation")},
        "asr_s_by_beta": noise_sweep,
        "trigger_o": {k: v for k, v in optimise_info.items() if k != "unet_history"},
        "control": control,
    }
    run.write_text("table.csv", table_csv(badsnn_table_rows(metrics)))
    run.write_text("report.md", badsnn_report(config, metrics, rows))
    return metrics


def badsnn_outcome(config, data, device, run: RunDir) -> AttackOutcome:
    """For the attack x defense matrix: the BadSNN model deployed at S_a with T_o (or T_s)."""
    from ..checkpoint import load_model

    metrics = run_badsnn(config, run)
    model = load_model(run.path / "badsnn_deployed.safetensors", device)
    if data.info.kind == "events":
        triggers = event_triggers(config.badsnn, config.seed, metrics["frame_scale"],
                                  metrics["count_max"])
        trigger = triggers[EVENT_KEYS[config.badsnn.trigger]]
    else:
        generator, _ = load_generator(run.path / "trigger_o.safetensors", device)
        trigger = OptimisedTrigger(generator, config.badsnn.target)
    return AttackOutcome("badsnn", model, trigger, config.badsnn.target, info=metrics)
