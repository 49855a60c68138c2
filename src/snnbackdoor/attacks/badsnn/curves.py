"""BadSNN's curves with their controls, measured on one run's models (test split):
ASR_o vs eps (backdoored vs re-optimised control, at S_a and S_n) and ASR_p and CA vs
V_thr^a for the backdoored and the clean model."""

from __future__ import annotations

from ...triggers.image import PowerTrigger
from ...triggers.optimised import OptimisedTrigger
from .optimise import fit_optimised_trigger
from .stages import asr_at, attack_config_grid


def eps_curve(result, options, epsilons: list[float], seed: int, setup, deepfool,
              progress: bool = False) -> dict:
    """{eps: {asr_o, asr_o_nominal, asr_o_clean_model, asr_o_clean_model_nominal}}: T_o
    fitted with each budget against the backdoored and against the clean model (at the
    provisional S_a, as the run's T_o), measured at S_a
    (generators kept as stages of `setup.workdir`, so the eps search's controls are reused)."""
    from .optimise import control_generator
    from .store import generator_stage

    data, target, nominal, attack = result.data, result.target, result.nominal, result.attack
    fit_at = result.provisional.config  # where T_o and its control are fitted
    out = {}
    for eps in epsilons:
        backdoored, _ = generator_stage(setup, f"trigger_o_eps{eps:g}", target, lambda e=eps: (
            fit_optimised_trigger(result.model, data, options, target, nominal, fit_at, seed,
                                  progress, e, deepfool())))
        control, _ = control_generator(setup, result.clean, data, options, target, nominal,
                                       fit_at, seed, deepfool, eps, progress)
        row = {}
        for name, model, generator in (("asr_o", result.model, backdoored),
                                       ("asr_o_clean_model", result.clean, control)):
            trigger = OptimisedTrigger(generator, target)
            row[name] = asr_at(model, data.test, trigger, target, attack)
            row[f"{name}_nominal"] = asr_at(model, data.test, trigger, target, nominal)
        out[f"{eps:g}"] = row
    return out


def _key(row: dict) -> str:
    tau = "" if row["tau_a"] is None else f"/{row['tau_a']:g}"
    return f"{row['v_threshold_a']:g}{tau}"


def threshold_curve(result, configs, power: float) -> dict:
    """{V_thr^a: {ca, asr_p, clean_ca, clean_asr_p}} over the attack grid (test split): the
    backdoored model's grid beside the same grid on the clean model."""
    clean = attack_config_grid(result.clean, result.data, {"asr_p": PowerTrigger(power)},
                               result.target, configs, progress=False, with_val=False)
    rows = {_key(r): {"ca": r["ca"], "asr_p": r.get("asr_p")} for r in result.rows}
    for r in clean:
        rows.setdefault(_key(r), {}).update({"clean_ca": r["ca"], "clean_asr_p": r["asr_p"]})
    return rows
