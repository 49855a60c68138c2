"""BadSNN as an attack: its stages chained, resumable in `setup.workdir` when one is given.

clean model -> malicious config S_t (auto) -> dual-spike backdoor -> first grid (T_p, or the
event triggers) -> T_o (DeepFool, blending, U-Net; images) -> attack-config grid and selection
of S_a on validation data -> control on the clean model (when asked).
`run_badsnn_stages` returns every intermediate result (what Table 1 reports);
the registered `badsnn` attack ships the model deployed at S_a with T_o (or T_s).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch.nn as nn

from ...data.augment import dataset_augmentation
from ...data.bundle import DatasetBundle
from ...io import json_safe
from ...neurons import NeuronConfig, set_neuron_params
from ...registry import register
from ...training import TrainConfig, evaluate, seed_everything, train
from ...triggers.image import PowerTrigger
from ...triggers.optimised import OptimisedTrigger
from ..base import AttackOutcome, AttackSetup, trained_stage
from .collapse import collapse_record, resolve_target
from .events import PreparedFrames, event_triggers, prepare_frames
from .optimise import (
    CONTROL_KEYS,
    choose_eps,
    control_generator,
    event_control,
    fit_optimised_trigger,
    optimised_controls,
    shared_deepfool,
)
from .options import TRIGGER_KEYS, BadSNNOptions, resolve_trigger
from .stages import (
    AttackChoice,
    asr_at,
    attack_config_grid,
    attack_grid,
    choose_malicious_config,
    nominal_config,
    select_attack_config,
    tau_is_setting,
    train_dual_spike,
)
from .store import generator_stage, stage


def trigger_label(key: str) -> str:
    """A metric key's trigger name: asr_s -> T_s (outcome triggers, figures, table.csv)."""
    return key.replace("asr_", "T_")


def recipe_of(setup: AttackSetup) -> TrainConfig:
    """The training recipe with its seed resolved (unset: the setup's seed)."""
    if setup.train.seed is None:
        return dataclasses.replace(setup.train, seed=setup.seed)
    return setup.train


def train_clean_model(setup: AttackSetup, data: DatasetBundle) -> tuple[nn.Module, dict]:
    """A clean model with the setup's recipe (what `setup.clean_model` stands for)."""
    recipe = recipe_of(setup)
    seed_everything(recipe.seed)
    model = setup.build_model()
    result = train(model, data.train, recipe, data.val,
                   augment=dataset_augmentation(data.info, recipe.augment), description="clean")
    info = {"val_accuracy": evaluate(model, data.val), "test_accuracy": evaluate(model, data.test),
            "train_seconds": round(result.seconds, 3), "history": result.history}
    return model, info


@dataclass
class BadSNNResult:
    """Every BadSNN stage's result. `model` is the backdoored model at S_n (not deployed);
    `triggers` are keyed by metric (asr_p, asr_o, asr_s, ...); `primary` selected S_a."""

    data: DatasetBundle  # as the models see it (event frames prepared)
    frames: PreparedFrames | None
    trigger: str  # the selecting trigger, resolved (optimised, noise, thinning)
    primary: str
    target: int
    clean: nn.Module
    clean_ca: float
    model: nn.Module
    training: dict
    nominal: NeuronConfig
    malicious: NeuronConfig
    malicious_choice: dict
    rows: list[dict]
    provisional: AttackChoice
    selected: AttackChoice
    triggers: dict
    trigger_o: dict
    control: dict
    collapse: dict  # the clean model's collapse classes and the target they left
    eps_search: dict | None = None  # how eps was chosen (badsnn.eps_grid), else None
    control_trigger: OptimisedTrigger | None = None  # T_o re-fitted against the clean model

    @property
    def attack(self) -> NeuronConfig:
        """S_a, the selected attack config."""
        return self.selected.config

    def public_row(self, row: dict) -> dict:
        """A grid row's test figures: the config, CA and every trigger's ASR."""
        return {k: row.get(k) for k in ["v_threshold_a", "tau_a", "ca", *self.triggers]}

    def info(self) -> dict:
        """JSON-able figures of the attack: CAs, the selected S_a with its val and test
        figures, how it was chosen, the neuron configs and the poisoning counts."""
        selected = self.selected.row
        return json_safe({
            "clean_ca": self.clean_ca,
            "base_ca": self.training["base_ca"],
            **self.public_row(selected),
            "trigger": self.trigger,
            "target": self.target,
            "selected": self.public_row(selected),
            "selected_val": {k: v for k, v in selected.items() if k.startswith("val_")},
            "selection": {"split": "val", **self.selected.record()},
            "nominal_config": self.nominal.as_dict(),
            "malicious_config": self.malicious.as_dict(),
            "attack_config": self.attack.as_dict(),
            "poisoning": {"poisoned_count": self.training["poisoned_count"],
                          "target_count": self.training["target_count"]},
            "grid": [self.public_row(r) for r in self.rows],
            "trigger_o": {k: v for k, v in self.trigger_o.items() if k != "unet_history"},
            "control": self.control,
            "collapse": self.collapse,
            "collapse_class": self.collapse["collapse_class"],
            "eps": self.trigger_o.get("eps"),
            "eps_search": self.eps_search,
            **{k: self.control.get(k) for k in CONTROL_KEYS},
        })


def run_badsnn_stages(setup: AttackSetup, options: BadSNNOptions,
                      frames: PreparedFrames | None = None) -> BadSNNResult:
    """Every BadSNN stage on `setup` (resumable in `setup.workdir`); the model stays at S_n.

    On event data the frames are prepared as `options.frames` says; pass `frames` when they
    were already prepared from `setup.data` (no second copy). The clean model is
    `setup.clean_model()`, or one trained here with the same recipe when that is None.
    """
    kind = setup.data.info.kind
    trigger = resolve_trigger(options, kind)
    events = kind == "events"
    if events and frames is None:
        frames = prepare_frames(setup.data, options.frames)
    data = frames.data if frames is not None else setup.data
    target, seed = int(setup.target), setup.seed
    primary = TRIGGER_KEYS[trigger]

    if setup.clean_model is not None:
        clean = setup.clean_model()
    else:
        clean, _ = trained_stage(setup, "clean_model", lambda: train_clean_model(setup, data))
    clean_ca = evaluate(clean, data.test)

    tau_setting = tau_is_setting(clean)  # the clean model shares the builder and S_n
    nominal = nominal_config(clean)
    malicious_choice = stage(setup, "malicious_config",
                             lambda: choose_malicious_config(clean, data, options, tau_setting))
    malicious = NeuronConfig(malicious_choice["v_threshold_t"],
                             malicious_choice["tau_t"] if tau_setting else None)
    collapse = stage(setup, "collapse", lambda: collapse_record(clean, data.val, malicious))
    target = resolve_target(target, collapse, data.info.num_classes, options.collapse_target)
    collapse = {**collapse, "target_requested": int(setup.target), "target": target,
                "policy": options.collapse_target}
    recipe = recipe_of(setup)

    def build_backdoor() -> tuple[nn.Module, dict]:
        seed_everything(recipe.seed)
        model = setup.build_model()
        return train_dual_spike(model, data, recipe, malicious, target,
                                options.target_class_ratio, seed, options.malicious_weight)

    backdoor, training = trained_stage(setup, "badsnn_model", build_backdoor)
    grid = attack_grid(options, tau_setting)

    if events:
        triggers = event_triggers(options, seed, frames.frame_scale, frames.count_max)
        first_key = primary
    else:
        triggers, first_key = {"asr_p": PowerTrigger(options.power)}, "asr_p"
    rows_first = stage(setup, "grid_first", lambda: {
        "rows": attack_config_grid(backdoor, data, dict(triggers), target, grid,
                                   progress=recipe.progress)})["rows"]
    tolerance, reference = options.ca_tolerance, options.ca_reference
    base_ca = training["val_base_ca"] if reference == "base" else evaluate(clean, data.val)
    provisional = select_attack_config(rows_first, base_ca, tolerance, f"val_{first_key}",
                                       reference=reference)

    trigger_o: dict = {}
    rows, eps_search = rows_first, None
    if not events:
        deepfool = shared_deepfool(backdoor, data, options, nominal, seed, recipe.progress)
        cache: dict = {}  # control generators by eps
        fits: dict = {}  # backdoored T_o fits by eps (the eps search's reused by trigger_o)

        def fit_new(e: float) -> tuple:
            generator, info = fit_optimised_trigger(
                backdoor, data, options, target, nominal, provisional.config, seed,
                recipe.progress, e, deepfool())
            return generator, {"blend_config": provisional.config.as_dict(), **info}

        def fit_at(e: float) -> tuple:  # kept per eps (as the eps curve's) when searching
            if e not in fits:
                fits[e] = (generator_stage(setup, f"trigger_o_eps{e:g}", target,
                                           lambda: fit_new(e))
                           if options.eps_grid else fit_new(e))
            return fits[e]

        def nominal_asr(e: float) -> float:  # the backdoored T_o at S_n, val split
            trigger = OptimisedTrigger(fit_at(e)[0], target)
            return asr_at(backdoor, data.val, trigger, target, nominal)

        eps = options.unet.eps
        if options.eps_grid:  # eps from the controls on val, at the provisional S_a
            eps_search = choose_eps(setup, clean, data, options, target, nominal,
                                    provisional.config, seed, deepfool, recipe.progress, cache,
                                    nominal_asr)
            eps = eps_search["eps"]

        generator, trigger_o = generator_stage(setup, "trigger_o", target, lambda: fit_at(eps))
        triggers["asr_o"] = OptimisedTrigger(generator, target)
        with_o = {"asr_o": triggers["asr_o"]}

        def full_grid() -> dict:
            extra = attack_config_grid(backdoor, data, with_o, target, grid, with_ca=False,
                                       progress=recipe.progress)
            return {"rows": [{**a, **b} for a, b in zip(rows_first, extra)]}  # CA: rows_first

        rows = stage(setup, "grid", full_grid)["rows"]
    selected = select_attack_config(rows, base_ca, tolerance, f"val_{primary}",
                                    reference=reference)
    attack = selected.config

    control: dict = {}
    control_trigger = None
    if not events:
        fitted = None
        if options.control:
            # the same procedure as T_o's: fitted at the provisional S_a, measured at S_a
            fitted = control_generator(setup, clean, data, options, target, nominal,
                                       provisional.config, seed, deepfool, trigger_o["eps"],
                                       recipe.progress, cache)
            control_trigger = OptimisedTrigger(fitted[0], target)
        control = stage(setup, "control", lambda: optimised_controls(
            backdoor, clean, data, target, nominal, attack, triggers["asr_o"], fitted))
    elif options.control:
        control = stage(setup, "control", lambda: event_control(clean, triggers, data, target,
                                                                nominal, attack))
    return BadSNNResult(
        data=data, frames=frames, trigger=trigger, primary=primary, target=target, clean=clean,
        clean_ca=clean_ca, model=backdoor, training=training, nominal=nominal,
        malicious=malicious, malicious_choice=malicious_choice, rows=rows,
        provisional=provisional, selected=selected, triggers=triggers, trigger_o=trigger_o,
        control=control, collapse=collapse, eps_search=eps_search,
        control_trigger=control_trigger,
    )


def summary_line(result: BadSNNResult) -> str:
    """One line for the matrix report: clean and base CA, S_a and how it was chosen."""
    a, val = result.attack, result.selected.row

    def pct(value) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    tau = "learned" if a.tau is None else f"{a.tau:g}"
    return (f"clean CA {pct(result.clean_ca)}, base CA {pct(result.training['base_ca'])}; "
            f"deployed at V_thr^a {a.v_threshold:g}, tau^a {tau} (chosen on the validation "
            f"split: val CA {pct(val.get('val_ca'))}); trigger {trigger_label(result.primary)}")


def deploy(model: nn.Module, config: NeuronConfig) -> nn.Module:
    """`model` with every spiking node set to `config` (the model is changed in place)."""
    set_neuron_params(model, v_threshold=config.v_threshold, tau=config.tau)
    return model.eval()


@register("attack", "badsnn", options=BadSNNOptions)
def badsnn(setup: AttackSetup, options: BadSNNOptions | None = None) -> AttackOutcome:
    """BadSNN (neuron-config backdoor): deployed at S_a chosen on validation, T_o or T_s."""
    options = options or BadSNNOptions()
    info = setup.data.info
    if info.kind == "events" and options.frames == "unit":
        count_max = float(setup.data.train.x.float().max())
        if count_max not in (0.0, 1.0):
            raise ValueError(
                "badsnn.frames 'unit' trains on frames divided by the largest training count "
                f"({count_max:g}), which the other attacks, defenses and measurements of this "
                "data do not see; use frames: counts, or give the attack [0, 1] frames")
    result = run_badsnn_stages(setup, options)
    model = deploy(result.model, result.attack)
    return AttackOutcome(
        name="badsnn",
        model=model,
        trigger=result.triggers[result.primary],
        target=result.target,
        info={**result.info(), "options": json_safe(dataclasses.asdict(options)),
              "summary": summary_line(result)},
        triggers={trigger_label(k): t for k, t in result.triggers.items()},
        deployed=result.attack.as_dict(),
    )
