"""BadSNN's curves with their controls, measured on one run's models (test split):
ASR_o vs eps (backdoored vs re-optimised control, at S_a and S_n) and ASR_p and CA vs
V_thr^a for the backdoored and the clean model (also at CA-matched configs)."""

from __future__ import annotations

from ...neurons import NeuronConfig
from ...triggers.image import PowerTrigger
from ...triggers.optimised import OptimisedTrigger
from .optimise import fit_optimised_trigger
from .stages import asr_at, attack_config_grid


def eps_curve(result, options, epsilons: list[float], seed: int, setup, deepfool,
              progress: bool = False) -> dict:
    """{eps: {asr_o, asr_o_nominal, asr_o_clean_model, asr_o_clean_model_nominal}}: T_o
    fitted with each budget against the backdoored and against the clean model (at the
    provisional S_a, as the run's T_o), measured at S_a
    (generators kept as stages of `setup.workdir`, so the eps search's fits are reused)."""
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


CA_MATCH = 0.02  # a clean config "matches" a backdoored one within 2 points of test CA
CA_MATCH_STEP = 0.05  # the clean model's grid runs on past the attack grid in these steps


def threshold_curve(result, configs, power: float) -> dict:
    """{V_thr^a: {ca, asr_p, clean_ca, clean_asr_p, ...}} over the attack grid (test split):
    the backdoored model's grid beside the same grid on the clean model, and the clean
    model's ASR_p at its CA-matched config (`clean_asr_p_ca_matched`, with that config's
    `clean_v_ca_matched` and CA; only where one is within CA_MATCH). The clean model loses
    CA more slowly, so its grid runs on to S_t's V_thr to find the matches."""
    tau = configs[-1].tau
    extra, v = [], max(c.v_threshold for c in configs)
    while v + CA_MATCH_STEP <= result.malicious.v_threshold + 1e-9:
        v = round(v + CA_MATCH_STEP, 4)
        extra.append(NeuronConfig(v, tau))
    clean = attack_config_grid(result.clean, result.data, {"asr_p": PowerTrigger(power)},
                               result.target, [*configs, *extra], progress=False,
                               with_val=False)
    rows = {_key(r): {"ca": r["ca"], "asr_p": r.get("asr_p")} for r in result.rows}
    for r in clean[:len(configs)]:
        rows.setdefault(_key(r), {}).update({"clean_ca": r["ca"], "clean_asr_p": r["asr_p"]})
    for row in rows.values():
        if row.get("ca") is None:
            continue
        match = min(clean, key=lambda r: abs(r["ca"] - row["ca"]))
        if abs(match["ca"] - row["ca"]) <= CA_MATCH:
            row.update(clean_asr_p_ca_matched=match["asr_p"],
                       clean_v_ca_matched=match["v_threshold_a"],
                       clean_ca_ca_matched=match["ca"])
    return rows
