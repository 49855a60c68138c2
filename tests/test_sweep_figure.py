"""sweep.png: the swept key against the run metrics, seeds as mean +- 95% interval."""

from __future__ import annotations

import pytest

from snnbackdoor.report.sweeps import (
    _axes_keys,
    interval95,
    plot_sweep_metrics,
    rate_panels,
    varying_l2,
)


def _rows(grid_seed=(0, 1, 2)):
    rows = []
    for ratio in (0.1, 0.5):
        for neuron in ("lif", "plif"):
            for seed in grid_seed:
                rows.append({"badsnn.target_class_ratio": ratio, "model.neuron": neuron,
                             "seed": seed, "clean_ca": 0.9, "ca": 0.8 - ratio / 10,
                             "asr_o": ratio + seed / 100, "asr_o_clean_model": 0.1,
                             "base_ca": 0.85, "seconds.total": 3.0,
                             "perturbation.o.l2": 1.0 + ratio, "perturbation.p.l2": 2.0,
                             "trigger": "optimised"})
    return rows


def test_panels_group_each_rate_with_its_clean_control():
    panels = rate_panels(_rows())
    assert panels == {"CA": ["ca", "base_ca", "clean_ca"],
                      "ASR_o": ["asr_o", "asr_o_clean_model"]}
    assert varying_l2(_rows()) == ["perturbation.o.l2"]


def test_axes_put_the_longest_key_on_x_and_aggregate_seeds():
    grid = {"seed": [0, 1, 2], "model.neuron": ["lif", "plif"],
            "badsnn.target_class_ratio": [0.1, 0.3, 0.5]}
    assert _axes_keys(grid) == ("badsnn.target_class_ratio", "model.neuron", "seed")
    assert _axes_keys({"seed": [0, 1]}) == ("seed", None, None)


def test_interval_is_the_student_t_95_percent_half_width():
    mean, half = interval95([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302653 * 1.0 / 3 ** 0.5, rel=1e-5)
    assert interval95([5.0]) == (5.0, 0.0)


def test_plot_writes_a_png(tmp_path):
    grid = {"badsnn.target_class_ratio": [0.1, 0.5], "model.neuron": ["lif", "plif"],
            "seed": [0, 1, 2]}
    path = plot_sweep_metrics(_rows(), grid, tmp_path / "sweep.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    categorical = plot_sweep_metrics(_rows((0,)), {"model.neuron": ["lif", "plif"]},
                                     tmp_path / "neuron.png")
    assert categorical.is_file()
    assert plot_sweep_metrics([{"a": 1}], {"a": [1]}, tmp_path / "none.png") is None
