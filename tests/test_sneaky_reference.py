"""The event triggers against the Sneaky Spikes / Flashy Backdoor reference code (both MIT):
the stamp value on count frames, the moving trigger's path and last frame, the smart
trigger's polarity, and the dynamic trigger's validation-side selection of gamma."""

from __future__ import annotations

import pytest
import torch

from snnbackdoor.config import ConfigError
from snnbackdoor.experiments.base import parse_config
from snnbackdoor.experiments.neuromorphic import Selection, choose
from snnbackdoor.triggers import MovingTrigger, SmartTrigger
from snnbackdoor.triggers.base import build_trigger


def _counts(n: int = 2, t: int = 4, size: int = 20) -> torch.Tensor:
    """Count frames (0..7 events per pixel and bin), as SpikingJelly's frames hold them."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 8, (n, t, 2, size, size), generator=gen).float()


def _origins(mask: torch.Tensor) -> list[tuple[int, int] | None]:
    """Top-left corner of the lit square per frame of a [T, H, W] mask (None: no square)."""
    out = []
    for frame in mask:
        hits = torch.nonzero(frame)
        out.append(None if len(hits) == 0 else (int(hits[:, 0].min()), int(hits[:, 1].min())))
    return out


@pytest.mark.parametrize("kind", ["static", "moving", "framed", "strobing", "flash"])
def test_every_square_trigger_stamps_one_event_per_pixel_on_count_frames(kind: str) -> None:
    frames = _counts()
    out = build_trigger(kind, {})(frames)
    changed = out != frames
    assert changed.any()
    assert set(out[changed].unique().tolist()) <= {0.0, 1.0}  # the reference writes 1 (and 0)
    assert (out[:, :, 1][changed[:, :, 1]] == 1.0).all()  # ON bit of polarity 1 / 3 is one event


def test_moving_trigger_goes_right_from_the_left_and_left_from_the_right() -> None:
    frames = torch.zeros(1, 6, 2, 20, 30)
    right = MovingTrigger(size=3, row=0, x0=0)(frames)[0, :, 1] > 0
    assert _origins(right) == [(0, 0), (0, 5), (0, 8), (0, 0), (0, 5), (0, 8)]
    left = MovingTrigger(size=3, row=17, x0=27, direction="left")(frames)[0, :, 1] > 0
    assert _origins(left) == [(17, 27), (17, 22), (17, 19)] * 2  # x0, x0-s-2, x0-2s-2
    with pytest.raises(ValueError, match="outside"):
        MovingTrigger(size=3, x0=5, direction="left")(frames)
    with pytest.raises(ValueError, match="direction"):
        MovingTrigger(direction="up")


def test_moving_trigger_last_frame_is_ours_by_default_and_clean_as_in_the_reference() -> None:
    frames = torch.zeros(1, 5, 2, 20, 30)
    ours = MovingTrigger(size=3)(frames)[0, :, 1] > 0
    assert _origins(ours)[-1] == (0, 5)  # frame 4 carries position 4 mod 3
    reference = MovingTrigger(size=3, last_frame=False)(frames)[0, :, 1] > 0
    assert _origins(reference) == [(0, 0), (0, 5), (0, 8), (0, 0), None]


def test_smart_trigger_takes_the_rarest_polarity_whatever_the_cell_mode() -> None:
    frames = torch.zeros(2, 4, 2, 30, 30)
    frames[:, :, :, 0:10, 20:27] = 2.0  # cell 2 (top right): both polarities (state 3) ...
    frames[:, :, 0, 0:10, 27:29] = 2.0  # ... OFF only (state 2), one empty column, no ON-only
    busiest = SmartTrigger.fit(frames, mode="most")
    assert busiest.cell == 2 and busiest.polarity == 1  # the reference: rarest state, contrast
    assert SmartTrigger.fit(frames, mode="most", polarity_mode="most").polarity == 3


def test_choose_keeps_the_most_effective_candidate_above_the_ssim_floor() -> None:
    rows = [{"val_asr": 0.2, "val_ssim": 0.99}, {"val_asr": 0.95, "val_ssim": 0.93},
            {"val_asr": 1.0, "val_ssim": 0.6}]
    assert choose(rows, 0.9) == 1
    assert choose(rows, 0.95) == 0
    assert choose(rows, 0.999) == 0  # none reaches the floor: the stealthiest
    assert choose([{"val_asr": 0.9, "val_ssim": 0.91}, {"val_asr": 0.9, "val_ssim": 0.95}],
                  0.9) == 1  # ties go to the stealthier
    with pytest.raises(ValueError, match="values"):
        Selection(values=[])
    with pytest.raises(ValueError, match="ssim_floor"):
        Selection(values=[0.1], ssim_floor=0.0)


def test_a_trigger_entry_may_set_its_own_poisoning(tmp_path) -> None:
    base = {"kind": "neuromorphic", "dataset": {"name": "ndigits", "options": {"T": 4}},
            "model": {"name": "nmnist_net"}}
    entry = {"kind": "dynamic", "poison_ratio": 1.0,
             "select": {"values": [0.05, 0.1], "ssim_floor": 0.9}}
    config = parse_config({**base, "triggers": [entry]})
    assert config.triggers[0].poison_ratio == 1.0 and config.attack.poison_ratio == 0.1
    assert config.triggers[0].select.values == [0.05, 0.1]
    with pytest.raises(ConfigError, match="poison_ratio"):
        parse_config({**base, "triggers": [{**entry, "poison_ratio": 0.0}]})
    with pytest.raises(ConfigError, match="gamma"):  # every candidate value is checked early
        parse_config({**base, "triggers": [{**entry, "select": {"values": [0.1, 3.0]}}]})
