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
    fit_unet,
)
from ..poisoning import triggered_non_target
from .options import BadSNNOptions
from .stages import asr_at, asr_on_triggered


def fit_optimised_trigger(model: nn.Module, data: DatasetBundle, options: BadSNNOptions,
                          target: int, nominal: NeuronConfig, attack: NeuronConfig,
                          seed: int, progress: bool = True) -> tuple[ConditionalUNet, dict]:
    """T_o against `model`: DeepFool at S_n, blending at `attack`, U-Net training.

    The DeepFool samples are a seeded draw of `options.deepfool_samples` training inputs.
    Info (JSON-able): DeepFool flip rate and size, blend reach, target size, U-Net history.
    Bars for the three steps when `progress` and `options.unet.progress` are both on.
    """
    progress = progress and options.unet.progress
    unet = options.unet if progress else dataclasses.replace(options.unet, progress=False)
    gen = torch.Generator().manual_seed(seed)
    count = min(options.deepfool_samples, len(data.train))
    index = torch.randperm(len(data.train), generator=gen)[:count].to(data.train.y.device)
    x = data.train.floats(index)
    delta_df, flipped = deepfool_deltas(
        model, x, options.deepfool_overshoot, options.deepfool_max_iter, nominal, progress
    )
    delta, alpha, reached = blend_targets(
        model, x, delta_df, options.power, target, attack, options.blend_k, options.blend_mode,
        options.delta_sign, progress=progress,
    )
    adv_config = nominal if options.unet.adv_config == "nominal" else attack
    generator, history = fit_unet(
        model, x, delta, target, data.info.num_classes, unet, adv_config, seed
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
