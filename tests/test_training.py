import sys

import pytest
import torch

from snnbackdoor.analysis import neuron_sweep
from snnbackdoor.experiments.base import ModelConfig, model_spec
from snnbackdoor.models import build_model
from snnbackdoor.neurons import NeuronConfig
from snnbackdoor.training import TrainConfig, evaluate, train


def test_trained_model_is_accurate(clean_digits_model, digits):
    assert evaluate(clean_digits_model, digits.test) >= 0.93


def test_training_is_seeded(digits):
    small = digits.train.subset(torch.arange(128))
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # different init noise would show up if seeding were missing
        model = build_model(model_spec(ModelConfig(), digits.info))
        config = TrainConfig(epochs=1, batch_size=32, progress=False, seed=5)
        runs.append(train(model, small, config).history[0]["loss"])
    assert runs[0] == runs[1]


def test_accuracy_collapses_away_from_training_threshold(clean_digits_model, digits):
    nominal = evaluate(clean_digits_model, digits.val)
    far = evaluate(clean_digits_model, digits.val, neuron_config=NeuronConfig(v_threshold=3.0))
    assert nominal > 0.9 and far < 0.3


def test_sweep_reports_accuracy_and_fewer_spikes_at_higher_threshold(clean_digits_model, digits):
    result = neuron_sweep(clean_digits_model, digits.val, [1.0, 2.5], [2.0], [1.0, 2.0])
    low, high = result["v_threshold"]
    assert high["spikes_per_sample"] < low["spikes_per_sample"]
    assert high["accuracy"] < low["accuracy"]
    assert result["power"][0]["accuracy"] == low["accuracy"]  # q = 1 is the identity
    assert len(result["tau"]) == 1


def _tiny_run(digits, **options):
    torch.manual_seed(7)
    model = build_model(model_spec(ModelConfig(), digits.info))
    config = TrainConfig(epochs=2, batch_size=32, progress=False, seed=3, **options)
    small, val = digits.train.subset(torch.arange(64)), digits.val.subset(torch.arange(32))
    return model, train(model, small, config, val_split=val, description="clean")


def test_tensorboard_logs_every_epoch_and_changes_nothing(digits, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    _, plain = _tiny_run(digits)
    _, logged = _tiny_run(digits, tensorboard=str(tmp_path / "tb"))
    for a, b in zip(plain.history, logged.history):
        assert (a["loss"], a["val_accuracy"]) == (b["loss"], b["val_accuracy"])
    events = accumulator.EventAccumulator(str(tmp_path / "tb" / "clean"))  # per training
    events.Reload()
    assert {"clean/loss", "clean/val_accuracy", "clean/lr"} <= set(events.Tags()["scalars"])
    for key in ("loss", "val_accuracy"):
        scalars = events.Scalars(f"clean/{key}")
        assert [s.step for s in scalars] == [1, 2]
        expected = [row[key] for row in logged.history]
        assert [s.value for s in scalars] == pytest.approx(expected, rel=1e-6)


def test_tensorboard_without_the_package_says_how_to_install(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(RuntimeError, match="pip install tensorboard"):
        _tiny_run(digits, tensorboard=str(tmp_path / "tb"))
    assert not (tmp_path / "tb").exists()
