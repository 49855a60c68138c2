"""snnbackdoor: mount, measure and defend against backdoor attacks on spiking neural networks."""

from .checkpoint import load_model, save_model
from .data import DatasetBundle, load_dataset
from .experiments.base import RunResult, run_experiment
from .models import SpikingClassifier, build_model
from .neurons import NeuronConfig, count_spikes, neuron_params, set_neuron_params
from .registry import register
from .training import TrainConfig, evaluate, predict, train

__all__ = [
    "DatasetBundle",
    "NeuronConfig",
    "RunResult",
    "SpikingClassifier",
    "TrainConfig",
    "build_model",
    "count_spikes",
    "evaluate",
    "load_dataset",
    "load_model",
    "neuron_params",
    "predict",
    "register",
    "run_experiment",
    "save_model",
    "set_neuron_params",
    "train",
]
__version__ = "0.1.0"
