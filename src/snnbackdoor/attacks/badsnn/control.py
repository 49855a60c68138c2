"""`badsnn_control`: BadSNN's control as an attack, so every defense and detector repairs it.

The clean model trained with the same recipe, deployed at the attack config S_a that BadSNN
selects, with T_o re-optimised against it under the same budget (on event frames: BadSNN's
own event triggers). What a defense removes from it is adversarial vulnerability, not a
backdoor."""

from __future__ import annotations

import copy
import dataclasses

from ...io import json_safe
from ...registry import register
from ..base import AttackOutcome, AttackSetup
from .attack import deploy, run_badsnn_stages, summary_line, trigger_label
from .options import BadSNNOptions


@register("attack", "badsnn_control", options=BadSNNOptions)
def badsnn_control(setup: AttackSetup, options: BadSNNOptions | None = None) -> AttackOutcome:
    """The clean model at BadSNN's S_a with T_o fitted against it (BadSNN's options)."""
    options = dataclasses.replace(options or BadSNNOptions(), control=True)
    result = run_badsnn_stages(setup, options)
    triggers = dict(result.triggers)
    if result.control_trigger is not None:
        triggers["asr_o"] = result.control_trigger
    model = deploy(copy.deepcopy(result.clean), result.attack)  # the shared clean model stays
    return AttackOutcome(
        name="badsnn_control",
        model=model,
        trigger=triggers[result.primary],
        target=result.target,
        info={**result.info(), "control_of": "badsnn",
              "options": json_safe(dataclasses.asdict(options)),
              "summary": "control (clean model): " + summary_line(result)},
        triggers={trigger_label(k): t for k, t in triggers.items()},
        deployed=result.attack.as_dict(),
    )
