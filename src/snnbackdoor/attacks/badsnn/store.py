"""Resumable BadSNN stages: a stage's JSON result, or a T_o generator with its fit info,
kept in `setup.workdir` when one is given (else computed in memory)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...io import json_safe
from ...triggers.optimised import ConditionalUNet, load_generator, save_generator
from ..base import AttackSetup


def stage(setup: AttackSetup, name: str, compute: Callable[[], dict]) -> dict:
    """`compute()`, or with `setup.workdir` its stored result (stage `name` of that folder)."""
    if setup.workdir is None:
        return json_safe(compute())
    from ...rundir import RunDir

    return RunDir(setup.workdir).stage(name, compute)


def generator_stage(setup: AttackSetup, name: str, target: int,
                    fit: Callable[[], tuple[ConditionalUNet, dict]]) -> tuple:
    """A T_o generator and its fit info; with `setup.workdir` kept as `<name>.safetensors`
    (and its stage info) so a resumed run never refits it."""
    if setup.workdir is None:
        generator, info = fit()
        return generator, json_safe(info)
    from ...rundir import RunDir

    run, path = RunDir(setup.workdir), Path(setup.workdir) / f"{name}.safetensors"
    if run.done(name) and not path.exists():
        run.stages.pop(name)  # the file is gone: fit again

    def compute() -> dict:
        generator, info = fit()
        save_generator(generator, path, {"target": target})
        return info

    info = run.stage(name, compute)
    generator, _ = load_generator(path, setup.device)
    return generator, info
