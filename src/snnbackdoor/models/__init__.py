"""Model registry, the SpikingClassifier wrapper and the ANN twins."""

from .classifier import ANNClassifier, SpikingClassifier
from .kit import LayerKit
from .registry import MODELS, ModelSpec, build_model, register_model

__all__ = [
    "ANNClassifier",
    "LayerKit",
    "MODELS",
    "ModelSpec",
    "SpikingClassifier",
    "build_model",
    "register_model",
]
