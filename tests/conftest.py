"""Shared fixtures: the embedded digits and one small clean model trained once per session."""

from __future__ import annotations

import os

import pytest
import torch

from snnbackdoor.data import load_dataset
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.training import TrainConfig, seed_everything, train

# One thread unless the caller says otherwise: tiny models gain nothing from more, and
# parallel test runs (pytest -n, several sessions) then do not oversubscribe the cores.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def clean_digits_model(digits):
    """digits_net trained for a few epochs at the nominal config (V_thr 1.0, tau 2.0)."""
    seed_everything(0)
    model = build_model(model_spec(ModelConfig(), digits.info))
    train(model, digits.train, TrainConfig(epochs=6, batch_size=64, lr=3e-3, progress=False))
    model.eval()
    return model


@pytest.fixture(scope="module")
def ray_cluster():
    """A real two-CPU Ray cluster on this machine, shared by the tests of one module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024**2)
    yield
    ray.shutdown()
