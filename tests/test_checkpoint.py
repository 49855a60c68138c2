import json
import os
import pickle

import pytest
import torch

from snnbackdoor.checkpoint import CheckpointError, load_model, save_model
from snnbackdoor.models import build_model
from snnbackdoor.neurons import get_neuron_params, set_neuron_params


def test_round_trip_keeps_weights_and_deployed_neuron_config(tmp_path):
    model = build_model("digits_net").eval()
    set_neuron_params(model, v_threshold=1.15, tau=3.0)
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path).eval()
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(model(x), loaded(x))
    assert get_neuron_params(loaded) == get_neuron_params(model)
    assert not list(tmp_path.glob("*.tmp"))


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARK', '/tmp/evil')}",))


def test_a_pickle_disguised_as_a_model_never_runs(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    path = tmp_path / "m.safetensors"
    save_model(build_model("digits_net"), path)
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(path)
    assert not mark.exists()


def test_corrupted_and_foreign_files_give_clear_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(build_model("digits_net"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or not ours"):
        load_model(path)
    (tmp_path / "m.json").write_text(json.dumps({"format": "someone-else"}))
    with pytest.raises(CheckpointError, match="not written by snnbackdoor"):
        load_model(path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(CheckpointError, match="sidecar"):
        load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


def test_resuming_with_a_changed_config_is_refused(tmp_path):
    from snnbackdoor.rundir import RunDir

    run = RunDir(tmp_path)
    run.write_config({"seed": 0, "defenses": ["none"], "train": {"epochs": 3}})
    run.stage("model", lambda: {"accuracy": 0.9})
    run.write_config({"seed": 0, "defenses": ["none"], "train": {"epochs": 3}})  # same: fine
    with pytest.raises(ValueError, match=r"changed: seed, train\.epochs"):
        RunDir(tmp_path).write_config({"seed": 1, "defenses": ["none"], "train": {"epochs": 4}})
    RunDir(tmp_path).write_config({"seed": 0, "defenses": ["none", "clp"],
                                   "train": {"epochs": 3}}, extendable=("defenses",))
    with pytest.raises(ValueError, match="changed: defenses"):
        RunDir(tmp_path).write_config({"seed": 0, "defenses": ["clp"], "train": {"epochs": 3}},
                                      extendable=("defenses",))
