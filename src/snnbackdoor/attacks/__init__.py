"""Attacks: each turns an `AttackSetup` and its options into an `AttackOutcome` (a trained
model plus the triggers that activate it). Importing this package registers every attack."""

from . import badnet, badsnn, blend, clean_label, neuromorphic, wanet  # noqa: F401  (register)
from .base import AttackOutcome, AttackSetup, measure, trained_stage

__all__ = ["AttackOutcome", "AttackSetup", "measure", "trained_stage"]
