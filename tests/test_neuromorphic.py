"""Neuromorphic attacks: poisoning with frame triggers, the dynamic trigger, the experiment."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snnbackdoor.attacks.base import AttackSetup, measure
from snnbackdoor.attacks.neuromorphic import (
    PoisonConfig,
    build_frame_trigger,
    poisoning_attack,
    stealth_metrics,
)
from snnbackdoor.attacks.poisoning import choose_poison_index, poison_split
from snnbackdoor.config import ConfigError
from snnbackdoor.data.ndigits import load_ndigits
from snnbackdoor.experiments.base import (
    ModelConfig,
    load_config,
    model_spec,
    parse_config,
    run_experiment,
)
from snnbackdoor.experiments.neuromorphic import choose
from snnbackdoor.models import build_model
from snnbackdoor.registry import lookup, names
from snnbackdoor.report.frames import animate_frames
from snnbackdoor.report.neuromorphic import render_neuromorphic
from snnbackdoor.training import TrainConfig
from snnbackdoor.triggers import SmartTrigger
from snnbackdoor.triggers.dynamic import (
    DynamicConfig,
    DynamicTrigger,
    apply_pattern,
    build_generator,
    lookahead_generator_step,
)


@pytest.fixture(scope="module")
def ndigits_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ndigits")


@pytest.fixture(scope="module")
def small_ndigits(ndigits_cache):
    """A class-balanced 200-sample ndigits subset at T=4 (generated once, ~2 s)."""
    return load_ndigits(T=4, limit=200, cache_dir=ndigits_cache)


def nmnist_model(info):
    return build_model(model_spec(ModelConfig(name="nmnist_net"), info))


def test_poisoned_training_samples_never_target(small_ndigits) -> None:
    y = small_ndigits.train.y
    for seed in range(5):
        index = choose_poison_index(y, target=3, ratio=0.1, seed=seed)
        assert len(index) == round(0.1 * len(y))
        assert bool((y[index] != 3).all())
    trigger = build_frame_trigger("static", {"position": "bottom_right"})
    poisoned = poison_split(small_ndigits.train, trigger, 0, 0.1, seed=0)
    assert bool((y[poisoned.poisoned_index] != 0).all())
    assert bool((poisoned.split.y[poisoned.poisoned_index] == 0).all())
    clean_label = choose_poison_index(y, 0, 0.05, 0, from_target=True)
    assert bool((y[clean_label] == 0).all())


@pytest.fixture(scope="module")
def static_attack(small_ndigits):
    """nmnist_net poisoned at 10% with the static top-left trigger (T=4, ~136 samples), the
    square as bright as each sample's largest count: the reference's one event per pixel is
    too faint to learn in 6 epochs of 136 samples at T=4 (ASR 3%)."""
    torch.manual_seed(0)
    model = nmnist_model(small_ndigits.info)
    trigger = build_frame_trigger("static", {"position": "top_left", "polarity": 1,
                                             "value": None})
    config = TrainConfig(epochs=6, batch_size=16, lr=2e-3, progress=False)
    return poisoning_attack(model, small_ndigits, trigger, config, PoisonConfig(0.1, 0))


def test_static_corner_attack_reaches_high_asr(small_ndigits, static_attack) -> None:
    assert 0 not in static_attack.info["poisoned_classes"]
    scores = measure(static_attack.model, small_ndigits.test, static_attack.trigger, 0)
    assert scores["ca"] >= 0.6  # 136 training samples at T=4: a working classifier,
    assert scores["asr"] >= 0.9  # not one that answers the target to everything
    stealth = stealth_metrics(small_ndigits.test, static_attack.trigger, target=0)
    assert 0 < stealth["ssim"] < 1 and stealth["mse"] > 0
    assert stealth["event_count_change"] > 0


def test_lookahead_generator_step_lowers_target_loss(small_ndigits, static_attack) -> None:
    torch.manual_seed(0)
    model = static_attack.model.train()  # a trained classifier responds to its input
    config = DynamicConfig(gamma=0.5, lr=5e-2, generator_samples=None)
    generator = build_generator(small_ndigits.info.shape, config)
    optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr)
    x, y = small_ndigits.train.floats()[:16], small_ndigits.train.y[:16]
    poisoned = (torch.arange(16) % 4 == 0) & (y != 0)
    keep = y != 0

    def target_loss() -> float:
        model.eval(), generator.eval()
        with torch.no_grad():
            logits = model(apply_pattern(x[keep], generator, config.gamma))
        model.train(), generator.train()
        return float(torch.nn.functional.cross_entropy(logits, torch.zeros_like(y[keep])))

    before = target_loss()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    losses = [lookahead_generator_step(model, generator, optimizer, x, y, poisoned, 0, config,
                                       1e-2) for _ in range(6)]
    for k, v in model.state_dict().items():  # the look-ahead leaves the classifier as it was
        assert torch.equal(v, weights[k]), k
    assert losses[-1] < losses[0]  # L(f_theta'(x'), y_t) at each step
    assert target_loss() < before  # and the target loss of the classifier itself
    trigger = DynamicTrigger(generator, config.gamma)
    out = trigger(x[:3])
    assert out.shape == x[:3].shape and not out.requires_grad
    assert 0 < float((out - x[:3]).abs().max()) <= config.gamma + 1e-6
    model.eval()


def _setup(data, workdir=None, ratio: float = 0.1) -> AttackSetup:
    def build():
        torch.manual_seed(0)
        return nmnist_model(data.info)

    return AttackSetup(data, build, TrainConfig(epochs=1, batch_size=32, progress=False),
                       target=0, poison_ratio=ratio, seed=0, workdir=workdir)


def test_event_poison_is_a_registered_attack_that_resumes(small_ndigits, tmp_path) -> None:
    assert {"event_poison", "dynamic"} <= set(names("attack"))
    options = {"trigger": "smart", "trigger_options": {"mode": "least"}}
    outcome = lookup("attack", "event_poison")(_setup(small_ndigits, tmp_path), options)
    assert isinstance(outcome.trigger, SmartTrigger) and outcome.target == 0
    y = small_ndigits.train.y
    assert outcome.poisoned_index == choose_poison_index(y, 0, 0.1, 0).tolist()
    direct = poisoning_attack(_setup(small_ndigits).build_model(), small_ndigits,
                              SmartTrigger.fit(small_ndigits.train.x, mode="least"),
                              _setup(small_ndigits).train, PoisonConfig(0.1, 0))
    for key, value in direct.model.state_dict().items():  # the same path as the function
        assert torch.equal(outcome.model.state_dict()[key], value), key
    again = lookup("attack", "event_poison")(_setup(small_ndigits, tmp_path), options)
    assert again.info == json.loads(json.dumps(outcome.info))  # read back, not retrained
    assert again.trigger == outcome.trigger
    with pytest.raises(ValueError, match="trigger kind"):
        lookup("attack", "event_poison")(_setup(small_ndigits), {"trigger": "badnet"})


def test_dynamic_is_a_registered_attack_that_keeps_its_generator(small_ndigits,
                                                                 tmp_path) -> None:
    options = {"gamma": 0.1, "channels": 4, "generator_samples": 4}
    outcome = lookup("attack", "dynamic")(_setup(small_ndigits, tmp_path, 0.2), options)
    assert isinstance(outcome.trigger, DynamicTrigger)
    assert (tmp_path / "dynamic_trigger.safetensors").exists()
    again = lookup("attack", "dynamic")(_setup(small_ndigits, tmp_path, 0.2), options)
    x = small_ndigits.test.floats()[:4]
    assert torch.equal(again.trigger(x), outcome.trigger(x))  # generator loaded, not retrained
    assert again.poisoned_index == outcome.poisoned_index


def test_animate_frames_writes_one_gif_frame_per_time_bin(small_ndigits, tmp_path) -> None:
    clean = small_ndigits.test.floats()[:1]
    triggered = {"static": build_frame_trigger("static", {})(clean)[0],
                 "flash": build_frame_trigger("flash", {"frames": [1]})(clean)[0]}
    path = animate_frames(clean[0], triggered, tmp_path / "stream.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == clean.shape[1] > 1
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])  # the stream moves
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left


def tiny_config(cache, triggers) -> dict:
    return {
        "kind": "neuromorphic",
        "name": "tiny",
        "device": "cpu",
        "dataset": {"name": "ndigits", "options": {"T": 4, "limit": 200, "cache_dir": cache}},
        "model": {"name": "nmnist_net"},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
        "stealth_samples": 20,
        "triggers": triggers,
    }


def test_experiment_writes_table_and_resumes(small_ndigits, ndigits_cache, tmp_path) -> None:
    cache = str(ndigits_cache)  # the frames small_ndigits cached
    triggers = [
        {"kind": "static", "label": "corner", "options": {"position": "top_left"}},
        {"kind": "dynamic", "options": {"generator_samples": 8},
         "select": {"option": "gamma", "values": [0.02, 0.05], "ssim_floor": 0.9}},
    ]
    out = tmp_path / "run"
    result = run_experiment(parse_config(tiny_config(cache, triggers)), out)
    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["attack", "trigger", "ca", "asr", "ssim", "mse"]
    assert [r["trigger"] for r in rows] == ["none", "corner", "dynamic"]
    assert rows[0]["attack"] == "clean" and rows[2]["attack"] == "sneaky_spikes"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clean_ca"] == result.metrics["clean_ca"]
    assert 0 < metrics["attacks"]["dynamic"]["ssim"] <= 1
    assert (out / "figures" / "frames.png").stat().st_size > 0
    selection = metrics["attacks"]["dynamic"]["selection"]
    candidates = selection["candidates"]
    assert [row["gamma"] for row in candidates] == [0.02, 0.05]
    assert candidates[choose(candidates, 0.9)]["gamma"] == selection["kept"]  # chosen on val
    assert metrics["attacks"]["dynamic"]["options"]["gamma"] == selection["kept"]
    assert all({"val_asr", "val_ssim"} <= set(row) for row in candidates)
    assert (out / "trigger_dynamic.gamma0.02.safetensors").exists()
    assert "| corner |" in (out / "report.md").read_text()
    assert "figures/tradeoff_dynamic.png" in (out / "report.md").read_text()
    for label in ("corner", "dynamic"):  # clean vs triggered over time, one GIF per trigger
        with Image.open(out / "figures" / f"frames_{label}.gif") as gif:
            assert gif.format == "GIF" and gif.n_frames == 4  # one frame per time bin (T=4)
        assert f"figures/frames_{label}.gif" in (out / "report.md").read_text()
    table = (out / "table.csv").read_bytes()
    for path in [out / "table.csv", out / "report.md", *(out / "figures").iterdir()]:
        path.unlink()
    written = render_neuromorphic(out)  # from the run directory alone
    assert {p.name for p in written} == {"table.csv", "report.md", "frames.png",
                                         "frames_corner.gif", "frames_dynamic.gif",
                                         "tradeoff_dynamic.png"}
    assert (out / "table.csv").read_bytes() == table

    again = run_experiment(parse_config(tiny_config(cache, triggers)), out)
    assert again.metrics["attacks"] == result.metrics["attacks"]
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    reused = {e["stage"] for e in events if e.get("status") == "reused"}
    assert {"clean", "attack_corner", "attack_dynamic.gamma0.02",
            "attack_dynamic.gamma0.05"} <= reused


def test_config_errors_are_early(tmp_path) -> None:
    base = tiny_config(str(tmp_path), [{"kind": "static"}])
    with pytest.raises(ConfigError, match="no option"):
        parse_config({**base, "triggers": [{"kind": "static", "options": {"colour": 1}}]})
    with pytest.raises(ConfigError, match="unknown trigger kind"):
        parse_config({**base, "triggers": [{"kind": "blinking"}]})
    with pytest.raises(ConfigError, match="unique"):
        parse_config({**base, "triggers": [{"kind": "static"}, {"kind": "static"}]})
    with pytest.raises(ConfigError, match="gamma"):
        parse_config({**base, "triggers": [{"kind": "dynamic", "options": {"gamma": 2.0}}]})
    with pytest.raises(ConfigError, match="clean_label"):
        parse_config({**base, "attack": {"clean_label": True}, "triggers": [{"kind": "dynamic"}]})
    with pytest.raises(ConfigError, match="polarity"):  # option values checked at parse time
        parse_config({**base, "triggers": [{"kind": "static", "options": {"polarity": 7}}]})


CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PAPER_SCALE = ("sneaky_nmnist", "sneaky_cifar10dvs", "sneaky_dvsgesture", "flashy_nmnist",
               "flashy_dvsgesture")


@pytest.mark.parametrize("name", ("sneaky_ndigits", "sneaky_ndigits_dynamic", "flashy_ndigits",
                                  *PAPER_SCALE))
def test_presets_parse(name, tmp_path) -> None:
    if name in PAPER_SCALE:
        with pytest.raises(ConfigError, match="dataset.root"):
            load_config(CONFIGS / f"{name}.yaml")
        config = load_config(CONFIGS / f"{name}.yaml", [f"dataset.root={tmp_path}"])
    else:
        config = load_config(CONFIGS / f"{name}.yaml")
    assert config.kind == "neuromorphic" and config.triggers


def _run_tiny_badsnn(ndigits_cache, out, lr: float, figures: bool = False, **badsnn) -> dict:
    """BadSNN on the 200-sample ndigits subset: 3 epochs, S_t = 1.6, P = 0.5."""
    config = {
        "kind": "badsnn", "name": "tiny_events", "device": "cpu",
        "dataset": {"name": "ndigits",
                    "options": {"T": 4, "limit": 200, "cache_dir": str(ndigits_cache)}},
        "model": {"name": "nmnist_net"},
        "train": {"epochs": 3, "batch_size": 32, "lr": lr, "progress": False},
        "badsnn": {"v_threshold_t": 1.6, "target_class_ratio": 0.5, **badsnn},
        "analyze": {"v_thresholds": [1.0, 1.5], "taus": [2.0]},
        "figures": figures,
    }
    return run_experiment(parse_config(config), out).metrics


def test_badsnn_on_event_frames_writes_both_triggers_and_the_beta_sweep(
        small_ndigits, ndigits_cache, tmp_path) -> None:
    metrics = _run_tiny_badsnn(ndigits_cache, tmp_path, 0.005,  # lr 0.005: not silent
                               v_thresholds_a=[1.0], trigger="thinning",
                               noise_beta_sweep=[0.0, 0.3])
    assert set(metrics["selected"]) == {"v_threshold_a", "tau_a", "ca", "asr_s", "asr_thin"}
    assert metrics["selection"]["key"] == "val_asr_thin"
    assert metrics["asr_o_clean_model"] is None and 0.0 < metrics["frame_scale"]
    sweep = metrics["asr_s_by_beta"]
    assert [r["beta"] for r in sweep] == [0.0, 0.3]
    # beta 0 leaves the frames as they are: ASR is the untriggered target share, spikes equal
    assert sweep[0]["spikes_attack"] == pytest.approx(
        metrics["spikes_per_sample"]["clean_attack"], rel=1e-6)
    # the noise adds events where frames are empty: more input, more spikes
    assert sweep[1]["spikes_attack"] != sweep[0]["spikes_attack"]
    assert "T_s noise scale" in (tmp_path / "report.md").read_text()


def test_badsnn_on_count_frames_measures_t_s_on_counts_and_on_unit_frames(
        small_ndigits, ndigits_cache, tmp_path) -> None:
    metrics = _run_tiny_badsnn(ndigits_cache, tmp_path, 0.002, figures=True,
                               v_thresholds_a=[1.0, 1.2], trigger="noise", frames="counts",
                               noise_beta_sweep=[0.0])
    assert metrics["frames"] == "counts" and metrics["frame_scale"] == 1.0
    assert metrics["count_max"] > 1  # the model sees raw counts
    assert set(metrics["selected"]) == {"v_threshold_a", "tau_a", "ca", "asr_s", "asr_s_unit",
                                        "asr_thin"}
    assert metrics["selection"]["key"] == "val_asr_s"
    assert {"asr_s_clean_model", "asr_s_unit_clean_model"} <= set(metrics["control"])
    spikes = metrics["spikes_per_sample"]
    # Eq. 7's clip on counts removes most events; on unit frames T_s barely changes anything
    assert spikes["s_attack"] < 0.25 * spikes["clean_attack"]
    assert spikes["s_unit_attack"] == pytest.approx(spikes["clean_attack"], rel=0.15)
    stealth = metrics["perturbation"]
    assert stealth["s_unit"]["linf"] == pytest.approx(0.03, abs=1e-3)  # measured on [0, 1]
    assert stealth["s"]["l2"] > stealth["s_unit"]["l2"]
    assert "Control: the same triggers on the clean model" in (tmp_path / "report.md").read_text()
    assert stealth["s"]["event_count_change"] < -0.5  # counts capped at 1: most events gone
    assert metrics["ca"] == metrics["selected"]["ca"]
    assert metrics["asr_s"] == metrics["selected"]["asr_s"]
    table = (tmp_path / "table.csv").read_text().splitlines()
    assert table[0] == "attack,trigger,ca,asr,ssim,mse"
    assert [line.split(",")[1] for line in table[1:]] == ["none", "T_s", "T_s_unit", "T_thin"]
    assert (tmp_path / "figures" / "frames.png").stat().st_size > 0
