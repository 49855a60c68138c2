"""Attacks: each turns a config into a trained model plus the triggers that activate it."""
