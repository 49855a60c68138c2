"""BadSNN: a backdoor in the neurons' hyperparameters (dual-spike learning, attack configs,
power / optimised / noise triggers). The stages are plain functions of a model and a
DatasetBundle; `badsnn(setup, options)` is the registered attack that chains them."""

from .attack import (
    BadSNNResult,
    badsnn,
    deploy,
    run_badsnn_stages,
    train_clean_model,
    trigger_label,
)
from .collapse import CollapseTargetError, collapse_record, resolve_target
from .control import badsnn_control
from .events import PreparedFrames, UnitScaledNoise, event_triggers, prepare_frames
from .optimise import event_control, fit_optimised_trigger, optimised_control
from .options import TRIGGER_KEYS, BadSNNOptions, resolve_trigger
from .stages import (
    AttackChoice,
    asr_at,
    asr_on_triggered,
    attack_config_grid,
    attack_grid,
    auto_malicious_threshold,
    choose_malicious_config,
    choose_poisoned_target_samples,
    dual_spike_loss,
    nominal_config,
    select_attack_config,
    tau_is_setting,
    train_dual_spike,
)

__all__ = [
    "TRIGGER_KEYS",
    "AttackChoice",
    "BadSNNOptions",
    "BadSNNResult",
    "CollapseTargetError",
    "PreparedFrames",
    "UnitScaledNoise",
    "asr_at",
    "asr_on_triggered",
    "attack_config_grid",
    "attack_grid",
    "auto_malicious_threshold",
    "badsnn",
    "badsnn_control",
    "choose_malicious_config",
    "choose_poisoned_target_samples",
    "collapse_record",
    "deploy",
    "dual_spike_loss",
    "event_control",
    "event_triggers",
    "fit_optimised_trigger",
    "nominal_config",
    "optimised_control",
    "prepare_frames",
    "resolve_target",
    "resolve_trigger",
    "run_badsnn_stages",
    "select_attack_config",
    "tau_is_setting",
    "train_clean_model",
    "train_dual_spike",
    "trigger_label",
]
