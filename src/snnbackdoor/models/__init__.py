"""Model registry, the SpikingClassifier wrapper and the ANN twins."""

from . import bodies  # noqa: F401  (registers the built-in bodies)
from .classifier import ANNClassifier, SpikingClassifier
from .kit import LayerKit
from .registry import ModelSpec, build_model, register_model

__all__ = [
    "ANNClassifier",
    "LayerKit",
    "ModelSpec",
    "SpikingClassifier",
    "build_model",
    "register_model",
]
