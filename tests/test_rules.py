"""Learning rules (LR_B / LR_C / LR_H), SpikingJelly conversion, migration and detection."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based.ann2snn.modules import VoltageScaler

from snnbackdoor.checkpoint import CheckpointError
from snnbackdoor.config import ConfigError
from snnbackdoor.data.bundle import DatasetBundle, DatasetInfo, Split
from snnbackdoor.experiments.base import ModelConfig, model_spec, parse_config, run_experiment
from snnbackdoor.models import build_model
from snnbackdoor.report.rules import render_rules
from snnbackdoor.rules import (
    ConvertedSNN,
    convert_ann,
    hybrid_finetune,
    load_converted,
    logits_over_time,
    make_trainable,
    measure_over_time,
    migration_rate,
    save_converted,
    surrogate_settings,
    train_ann,
)
from snnbackdoor.rules.attack import make_trigger, poison_training
from snnbackdoor.rules.converted import resample_weights
from snnbackdoor.rules.detection import (
    SpikeStatsDetector,
    auroc,
    detection_report,
    spike_statistics,
    spike_stats_detect,
)
from snnbackdoor.training import TrainConfig, evaluate


@pytest.fixture(scope="module")
def backdoored_ann(digits):
    """ANN twin trained on BadNet-poisoned digits (10%, target 0), and its trigger."""
    trigger = make_trigger("badnet", {}, digits)
    poisoned = poison_training(digits, trigger, 0, 0.1, seed=0)
    spec = model_spec(ModelConfig(), digits.info)
    ann, _ = train_ann(spec, poisoned.split, TrainConfig(epochs=4, lr=3e-3, progress=False))
    ann.eval()
    return ann, trigger, poisoned


@pytest.fixture(scope="module")
def converted(backdoored_ann, digits):
    ann, _, _ = backdoored_ann
    return convert_ann(ann, digits.train.floats(), T=32, mode="max")


def test_conversion_is_spikingjellys_and_leaves_the_ann_alone(backdoored_ann, converted):
    ann, _, _ = backdoored_ann
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    again = convert_ann(ann, torch.rand(8, 1, 16, 16), T=8)
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())
    for model in (converted, again):
        modules = list(model.body.modules())
        nodes = [m for m in modules if isinstance(m, sj_neuron.IFNode)]
        assert len(nodes) == 3  # one IF node per ReLU of digits_net
        assert all(n.v_reset is None for n in nodes)  # soft reset, as ann2snn makes it
        assert sum(isinstance(m, VoltageScaler) for m in modules) == 6
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)  # fused
    assert isinstance(converted, ConvertedSNN) and converted.normalise.enabled


def test_converted_outputs_approach_the_ann_as_T_grows(backdoored_ann, converted, digits):
    ann, _, _ = backdoored_ann
    x = digits.test.floats()[:160]
    with torch.no_grad():
        reference = ann.eval()(x)
    outputs = logits_over_time(converted, x, [8, 16, 64])
    error = {T: float((out - reference).norm() / reference.norm()) for T, out in outputs.items()}
    agree = {
        T: float((out.argmax(1) == reference.argmax(1)).float().mean())
        for T, out in outputs.items()
    }
    assert error[64] < error[16] < error[8]
    assert error[64] < 0.15
    assert agree[64] >= 0.97 and agree[64] >= agree[8]


def test_chunked_presentation_is_one_run(converted, digits):
    x = digits.test.floats()[:24]
    with torch.no_grad():
        reference = converted.forward_steps(x, [5, 12])
        converted.chunk = 3
        try:
            chunked = converted.forward_steps(x, [5, 12])
            converted.T = 12
            direct = converted(x)
        finally:
            converted.chunk, converted.T = 16, 32
    for T in (5, 12):
        torch.testing.assert_close(chunked[T], reference[T], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(direct, reference[12], rtol=1e-5, atol=1e-5)


def test_backdoor_migrates_through_conversion(backdoored_ann, converted, digits):
    ann, trigger, _ = backdoored_ann
    from snnbackdoor.attacks.base import measure

    test = digits.test.subset(torch.arange(200))
    ann_metrics = measure(ann, test, trigger, 0)
    assert ann_metrics["asr"] > 0.8
    by_T = measure_over_time(converted, test, trigger, 0, [32])
    rate = migration_rate(by_T[32]["asr"], ann_metrics["asr"])
    assert rate >= 0.9
    assert abs(by_T[32]["ca"] - ann_metrics["ca"]) <= 0.05


def test_migration_rate_definition():
    assert migration_rate(0.45, 0.9) == pytest.approx(0.5)
    assert migration_rate(0.5, 0.0) is None


def test_save_and_load_converted_and_hybrid(converted, digits, tmp_path):
    x = digits.test.floats()[:16]
    path = save_converted(converted, tmp_path / "c.safetensors")
    loaded = load_converted(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), converted(x))
    tuned, _ = hybrid_finetune(
        converted, digits.train.subset(torch.arange(64)), 4,
        TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress=False),
    )
    save_converted(tuned, tmp_path / "h.safetensors")
    back = load_converted(tmp_path / "h.safetensors")
    assert back.T == 4 and surrogate_settings(back) == {"surrogate": "atan", "detach_reset": True}
    assert not hasattr(back, "trainable")  # the settings are read off the nodes, not attached
    with torch.no_grad():
        torch.testing.assert_close(back(x), tuned(x))
        assert not torch.allclose(tuned(x), converted.forward_steps(x, [4])[4])
    side = tmp_path / "c.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "format": "other"}))
    with pytest.raises(CheckpointError):
        load_converted(path)


def test_make_trainable_lets_gradients_reach_every_weight(converted, digits):
    import copy

    from spikingjelly.activation_based import surrogate

    model = make_trainable(copy.deepcopy(converted))
    model.T = 8
    nodes = [n for n in model.modules() if isinstance(n, sj_neuron.IFNode)]
    assert all(isinstance(n.surrogate_function, surrogate.ATan) and n.detach_reset
               for n in nodes)
    x, y = digits.train.floats()[:32], digits.train.y[:32]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    assert all(p.grad is not None for p in params.values())
    # the first conv is reached only through the surrogate of every IF node
    assert params["body.0.weight"].grad.abs().sum() > 0
    assert "body.spiking_0.scaler0.scale" in dict(model.named_buffers())  # fixed, not trained


def _events_bundle(frames: int = 4, count: int = 40) -> DatasetBundle:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(count, frames, 2, 16, 16, generator=gen) * (torch.rand(count, frames, 2, 16, 16,
                                                                          generator=gen) > 0.7)
    y = torch.arange(count) % 4
    x[torch.arange(count), :, :, (y * 4)[:, None].expand(count, frames)[:, 0]] += 1.0
    info = DatasetInfo("toy_events", "events", (frames, 2, 16, 16), 4, sensor_size=(16, 16, 2))
    split = Split(x, y)
    return DatasetBundle(split, split, split, info)


def test_resample_weights_keep_the_mean_frame():
    for total, frames in ((8, 16), (16, 16), (24, 16), (7, 3)):
        w = resample_weights(total, frames)
        torch.testing.assert_close(w.sum(1), torch.ones(total))
        torch.testing.assert_close(w.sum(0), torch.full((frames,), total / frames))


def test_event_frames_convert_and_feed_step_by_step():
    data = _events_bundle()
    spec = model_spec(ModelConfig(), data.info)
    ann, _ = train_ann(spec, data.train, TrainConfig(epochs=2, progress=False))
    snn = convert_ann(ann, data.train.floats(), T=8)
    x = data.test.floats()[:10]
    assert snn(x).shape == (10, 4)
    still = x[:, :1].expand_as(x).contiguous()  # identical frames: every schedule is the same
    outs = []
    for mode in ("cycle", "resample", "mean"):
        snn.event_input = mode
        with torch.no_grad():
            outs.append(snn(still))
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])
    trigger = make_trigger("static", {"size": 3, "position": [0, 0]}, data)
    assert trigger(x).shape == x.shape


def test_trigger_factory_checks_the_data_kind(digits):
    with pytest.raises(ValueError, match="event"):
        make_trigger("static", {}, digits)
    with pytest.raises(ValueError, match="options"):
        make_trigger("badnet", {"colour": 1}, digits)


def test_detector_fits_clean_only_and_flags_outliers():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(400, 6, generator=gen)
    shifted = torch.randn(200, 6, generator=gen) + torch.tensor([0, 0, 0, 0, 0, 5.0])
    for method in ("global", "class"):
        labels = torch.zeros(400, dtype=torch.long) if method == "class" else None
        detector = SpikeStatsDetector(method).fit(clean[:300], labels[:300] if labels is not None
                                                  else None)
        lab = (lambda n: torch.zeros(n, dtype=torch.long)) if method == "class" else \
            (lambda n: None)
        held = detector.score(clean[300:], lab(100))
        assert auroc(held, detector.score(shifted, lab(200))) > 0.9


def test_spike_statistics_of_snns(converted, digits):
    x = digits.test.floats()[:20]
    logits, features = spike_statistics(converted, x)
    # 3 layers x (rate, v mean, v std) + 128 rates of the last spiking layer
    assert features.shape == (20, 3 * 3 + 128)
    assert logits.shape == (20, 10)
    rates = features[:, [0, 3, 6]]
    assert (rates >= 0).all() and (rates <= 1).all()
    snn = build_model(model_spec(ModelConfig(neuron="if"), digits.info))
    assert spike_statistics(snn, x)[1].shape == (20, 9 + 128)
    assert all(not n.store_v_seq for n in converted.modules() if isinstance(n, sj_neuron.IFNode))


def test_spike_stats_detector_entry_point(backdoored_ann, converted, digits):
    _, trigger, _ = backdoored_ann
    clean = digits.test.floats()[:40]
    report = detection_report(spike_stats_detect(
        converted, digits.val.subset(torch.arange(60)), clean,
        trigger(clean[clean.sum((1, 2, 3)) > 0]), {"method": "global"}))
    assert {"detection_rate", "auroc", "false_rejection_rate"} <= set(report)
    assert report["auroc"] > 0.6  # BadNet's white corner shows in the first layer's statistics
    with pytest.raises(ValueError, match="unknown option"):
        spike_stats_detect(converted, digits.val, clean, clean, {"methd": "global"})


def test_rules_config_fails_early():
    with pytest.raises(ConfigError, match="mode"):
        parse_config({"kind": "rules", "conversion": {"mode": "median"}})
    with pytest.raises(ConfigError, match="neurons"):
        parse_config({"kind": "rules", "lr_b": {"neurons": ["relu"]}})
    assert parse_config({"kind": "rules", "conversion": {"T": [32, 8]}}).conversion.T == [8, 32]


def test_rules_experiment_writes_table_report_and_figure(tmp_path):
    config = {
        "kind": "rules", "name": "tiny", "seed": 0,
        "train": {"epochs": 1, "batch_size": 128, "progress": False},
        "lr_b": {"neurons": ["if"]},
        "model": {"T": 2},
        "conversion": {"T": [2, 4], "probe_T": 2, "calibration_samples": 256},
        "hybrid": {"T": 2, "epochs": 0},
        "detection": {"fit_samples": 64, "methods": ["global"]},
        "elimination": {"fraction": 0.02, "epochs": 1},
    }
    result = run_experiment(parse_config(config), tmp_path / "run")
    with open(result.path / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["rule", "neuron", "T", "ca", "asr", "migration_rate", "seconds"]
    assert [r["rule"] for r in rows] == ["ANN", "LR_B", "LR_C", "LR_C", "LR_H"]
    assert rows[0]["migration_rate"] == "nan" and rows[0]["T"] == "nan"  # io.write_csv's blank
    assert (result.path / "figures" / "migration.png").stat().st_size > 0
    assert "LR_H" in (result.path / "report.md").read_text()
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert set(metrics["lr_c"]["by_T"]) == {"2", "4"}
    table = (result.path / "table.csv").read_bytes()
    for name in ("table.csv", "report.md", "figures/migration.png"):
        (result.path / name).unlink()
    written = render_rules(result.path)  # from the run directory alone
    assert {p.name for p in written} == {"table.csv", "report.md", "migration.png"}
    assert (result.path / "table.csv").read_bytes() == table
    again = run_experiment(parse_config(config), tmp_path / "run")
    assert again.metrics["table"] == result.metrics["table"]
    log = (result.path / "log.jsonl").read_text()
    assert '"stage": "lr_h", "status": "reused"' in log


def test_lr_b_trains_if_and_lif(digits):
    from snnbackdoor.rules import train_bptt

    spec = model_spec(ModelConfig(T=2), digits.info)
    small = digits.train.subset(torch.arange(128))
    models = {}
    for neuron in ("if", "lif"):
        models[neuron], result = train_bptt(spec, small, TrainConfig(epochs=1, progress=False),
                                            neuron=neuron)
        assert result.history
    assert any(isinstance(m, sj_neuron.IFNode) and not isinstance(m, sj_neuron.LIFNode)
               for m in models["if"].modules())
    assert any(isinstance(m, sj_neuron.LIFNode) for m in models["lif"].modules())
    assert 0.0 <= evaluate(models["lif"], digits.test) <= 1.0


@pytest.mark.parametrize("name", ["mnist", "cifar10", "nmnist", "cifar10dvs", "dvsgesture"])
def test_paper_scale_configs_parse(name, tmp_path):
    from pathlib import Path

    from snnbackdoor.experiments.base import load_config

    path = Path(__file__).resolve().parent.parent / "configs" / f"rules_{name}.yaml"
    with pytest.raises(ConfigError, match="dataset.root"):
        load_config(path)
    config = load_config(path, [f"dataset.root={tmp_path}"])
    assert config.kind == "rules" and config.dataset.name == name
    assert config.conversion.T == [8, 16, 32, 64, 128]
