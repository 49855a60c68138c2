"""Detectors: input-level (scores per input) and model-level (scores per model)."""
