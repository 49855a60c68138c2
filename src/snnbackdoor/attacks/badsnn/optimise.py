"""BadSNN's optimised trigger T_o fitted against a model, and the clean-model controls that
separate what the backdoor adds from plain adversarial vulnerability."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from ...data.bundle import DatasetBundle
from ...neurons import NeuronConfig
from ...training import evaluate
from ...triggers.optimised import (
    ConditionalUNet,
    OptimisedTrigger,
    blend_targets,
    deepfool_deltas,
)
from ..poisoning import triggered_non_target
from .options import BadSNNOptions
from .stages import asr_at, asr_on_triggered
from .trigger_fit import fit_trigger_unet


def trigger_inputs(data: DatasetBundle, options: BadSNNOptions, seed: int) -> torch.Tensor:
    """The T_o samples: a seeded draw of `options.deepfool_samples` training inputs."""
    gen = torch.Generator().manual_seed(seed)
    count = min(options.deepfool_samples, len(data.train))
    index = torch.randperm(len(data.train), generator=gen)[:count].to(data.train.y.device)
    return data.train.floats(index)


def deepfool_step(model: nn.Module, x: torch.Tensor, options: BadSNNOptions,
                  nominal: NeuronConfig, progress: bool = False) -> tuple:
    """DeepFool at S_n on the T_o samples: (deltas, flipped mask). Skipped (zeros, nothing
    flipped) when the blend never uses it: `blend_k` 1 with `blend_mode: image` blends at
    alpha 0 only, i.e. toward T_p(x) = x^q itself."""
    if options.blend_k == 1 and options.blend_mode == "image":
        return torch.zeros_like(x), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    return deepfool_deltas(model, x, options.deepfool_overshoot, options.deepfool_max_iter,
                           nominal, progress)


def fit_optimised_trigger(model: nn.Module, data: DatasetBundle, options: BadSNNOptions,
                          target: int, nominal: NeuronConfig, attack: NeuronConfig,
                          seed: int, progress: bool = True, eps: float | None = None,
                          deepfool: tuple | None = None) -> tuple[ConditionalUNet, dict]:
    """T_o against `model`: DeepFool at S_n, blending at `attack`, U-Net training (with
    `options.keep_weight` / `unet_patience` as a backdoor trigger; see trigger_fit).

    `eps` overrides the budget `options.unet.eps`; `deepfool` passes DeepFool's (deltas,
    flipped) on the same samples (`trigger_inputs`) when already computed, so the backdoored
    and the control fit share that step. Info (JSON-able): DeepFool flip rate and size, blend
    reach, target size, eps, U-Net history.
    """
    progress = progress and options.unet.progress
    unet = dataclasses.replace(options.unet, progress=progress,
                               eps=options.unet.eps if eps is None else eps)
    x = trigger_inputs(data, options, seed)
    delta_df, flipped = deepfool or deepfool_step(model, x, options, nominal, progress)
    delta, alpha, reached = blend_targets(
        model, x, delta_df, options.power, target, attack, options.blend_k, options.blend_mode,
        options.delta_sign, progress=progress,
    )
    adv_config = nominal if unet.adv_config == "nominal" else attack
    generator, history = fit_trigger_unet(
        model, x, delta, target, data.info.num_classes, unet, adv_config, nominal,
        options.keep_weight, options.unet_patience, seed, progress)
    info = {
        "eps": unet.eps,
        "deepfool_flip_rate": float(flipped.float().mean()),
        "deepfool_l2": float(delta_df.flatten(1).norm(dim=1).mean()),
        "blend_reached_target": float(reached.float().mean()),
        "blend_alpha_mean": float(alpha.mean()),
        "target_delta_l2": float(delta.flatten(1).norm(dim=1).mean()),
        "unet_epochs": len(history),
        "unet_history": history,
    }
    return generator, info


def optimised_control(clean: nn.Module, generator: ConditionalUNet, fit_info: dict,
                      data: DatasetBundle, target: int, nominal: NeuronConfig,
                      attack: NeuronConfig) -> dict:
    """T_o fitted against the clean model, measured on it at S_a and S_n (test split)."""
    trigger = OptimisedTrigger(generator, target)
    return {
        "asr_o_clean_model": asr_at(clean, data.test, trigger, target, attack),
        "asr_o_clean_model_nominal": asr_at(clean, data.test, trigger, target, nominal),
        "clean_model_ca_at_attack_config": evaluate(clean, data.test, neuron_config=attack),
        # Untriggered: where a silent clean net already answers y_t, T_o gets it free.
        "clean_model_target_share_at_attack_config": asr_at(
            clean, data.test, lambda x: x, target, attack),
        **{k: v for k, v in fit_info.items() if k != "unet_history"},
    }


def event_control(clean: nn.Module, triggers: dict, data: DatasetBundle, target: int,
                  nominal: NeuronConfig, attack: NeuronConfig) -> dict:
    """The event triggers on the clean model at S_a and S_n (test split)."""
    out = {"clean_model_ca_at_attack_config": evaluate(clean, data.test, neuron_config=attack)}
    for key, trigger in triggers.items():
        triggered = triggered_non_target(data.test, trigger, target)
        out[f"{key}_clean_model"] = asr_on_triggered(clean, triggered, target, attack)
        out[f"{key}_clean_model_nominal"] = asr_on_triggered(clean, triggered, target, nominal)
    return out


CONTROL_KEYS = ("asr_o_clean_model", "asr_o_transfer", "asr_o_nominal")


def shared_deepfool(model: nn.Module, data: DatasetBundle, options: BadSNNOptions,
                    nominal: NeuronConfig, seed: int, progress: bool = False):
    """A callable returning DeepFool's (deltas, flipped) on the T_o samples against `model`
    at S_n, computed on first call only: the backdoored fit and every control fit share it
    (blending and the U-Net are still fitted against each model)."""
    cache: list = []

    def get() -> tuple:
        if not cache:
            x = trigger_inputs(data, options, seed)
            cache.append(deepfool_step(model, x, options, nominal,
                                       progress and options.unet.progress))
        return cache[0]

    return get


def control_generator(setup, clean: nn.Module, data: DatasetBundle, options: BadSNNOptions,
                      target: int, nominal: NeuronConfig, attack: NeuronConfig, seed: int,
                      deepfool, eps: float, progress: bool = False, cache: dict | None = None):
    """T_o re-optimised against the clean model at `attack` with budget `eps` (the same
    procedure as the backdoored fit): (generator, info), a resumable stage per eps, and
    kept in `cache` (keyed by eps) so an in-memory run fits it once."""
    from .store import generator_stage

    cache = {} if cache is None else cache
    if eps not in cache:
        given = not options.eps_grid and eps == options.unet.eps  # the paper's one budget
        name = "trigger_o_clean_model" + ("" if given else f"_eps{eps:g}")
        cache[eps] = generator_stage(setup, name, target, lambda: fit_optimised_trigger(
            clean, data, options, target, nominal, attack, seed, progress, eps, deepfool()))
    return cache[eps]


def choose_eps(setup, clean: nn.Module, data: DatasetBundle, options: BadSNNOptions,
               target: int, nominal: NeuronConfig, attack: NeuronConfig, seed: int, deepfool,
               progress: bool = False, cache: dict | None = None,
               nominal_asr=None) -> dict:
    """The largest eps of `options.eps_grid` whose control (T_o re-fitted against the clean
    model at `attack`) keeps val ASR <= `options.eps_control_max` and, with
    `options.eps_nominal_max` set, whose backdoored T_o (`nominal_asr(eps)`: its val ASR at
    S_n) stays dormant at S_n; tried largest first; when none passes, the smallest (`within`
    False). Validation split only."""
    from .store import stage

    nominal_max = options.eps_nominal_max

    def search() -> dict:
        rows = []
        for eps in sorted(set(options.eps_grid), reverse=True):
            generator, _ = control_generator(setup, clean, data, options, target, nominal,
                                             attack, seed, deepfool, eps, progress, cache)
            asr = asr_at(clean, data.val, OptimisedTrigger(generator, target), target, attack)
            row = {"eps": eps, "val_asr_o_clean_model": asr}
            rows.append(row)
            if asr > options.eps_control_max:
                continue
            if nominal_max is not None and nominal_asr is not None:
                row["val_asr_o_nominal"] = nominal_asr(eps)
                if row["val_asr_o_nominal"] > nominal_max:
                    continue
            return {"eps": eps, "within": True, "rows": rows,
                    "control_max": options.eps_control_max, "nominal_max": nominal_max}
        return {"eps": min(options.eps_grid), "within": False, "rows": rows,
                "control_max": options.eps_control_max, "nominal_max": nominal_max}

    return stage(setup, "eps_search", search)


def optimised_controls(backdoor: nn.Module, clean: nn.Module, data: DatasetBundle,
                       target: int, nominal: NeuronConfig, attack: NeuronConfig, trigger,
                       control: tuple | None) -> dict:
    """T_o's controls on the test split: `asr_o_nominal` (backdoored model at S_n),
    `asr_o_transfer` (the backdoored model's T_o on the clean model at S_a) and, given the
    `control` (generator, fit info), `asr_o_clean_model` (T_o re-fitted on the clean model)."""
    out = {"asr_o_nominal": asr_at(backdoor, data.test, trigger, target, nominal),
           "asr_o_transfer": asr_at(clean, data.test, trigger, target, attack),
           "asr_o_transfer_nominal": asr_at(clean, data.test, trigger, target, nominal)}
    if control is not None:
        out.update(optimised_control(clean, *control, data, target, nominal, attack))
    return out
