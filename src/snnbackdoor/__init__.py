"""snnbackdoor: mount, measure and defend against backdoor attacks on spiking neural networks."""

from .api import (
    attack,
    attack_setup,
    badsnn_stages,
    defender_subset,
    detect,
    parse_component_options,
    repair,
)
from .attacks.badsnn import (
    BadSNNOptions,
    BadSNNResult,
    attack_config_grid,
    choose_malicious_config,
    deploy,
    fit_optimised_trigger,
    run_badsnn_stages,
    select_attack_config,
    train_dual_spike,
)
from .attacks.base import AttackOutcome, AttackSetup, measure
from .attacks.poisoning import poison_split
from .checkpoint import load_model, save_model
from .data import DatasetBundle, load_dataset
from .defenses.base import Repaired
from .detectors.model_base import ModelScore
from .detectors.scoring import Scores, detection_report
from .experiments.base import RunResult, run_experiment
from .models import SpikingClassifier, build_model
from .neurons import NeuronConfig, count_spikes, neuron_params, set_neuron_params
from .registry import register
from .scanning import ScanResult, scan_model
from .training import TrainConfig, evaluate, predict, train

__all__ = [
    "AttackOutcome",
    "AttackSetup",
    "BadSNNOptions",
    "BadSNNResult",
    "DatasetBundle",
    "ModelScore",
    "NeuronConfig",
    "Repaired",
    "RunResult",
    "ScanResult",
    "Scores",
    "SpikingClassifier",
    "TrainConfig",
    "attack",
    "attack_config_grid",
    "attack_setup",
    "badsnn_stages",
    "build_model",
    "choose_malicious_config",
    "count_spikes",
    "defender_subset",
    "deploy",
    "detect",
    "detection_report",
    "evaluate",
    "fit_optimised_trigger",
    "load_dataset",
    "load_model",
    "measure",
    "neuron_params",
    "parse_component_options",
    "poison_split",
    "predict",
    "register",
    "repair",
    "run_badsnn_stages",
    "run_experiment",
    "save_model",
    "scan_model",
    "select_attack_config",
    "set_neuron_params",
    "train",
    "train_dual_spike",
]
__version__ = "0.1.0"
