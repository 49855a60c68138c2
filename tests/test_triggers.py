"""Triggers do exactly what their papers say, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnbackdoor.triggers import (
    POLARITY_BITS,
    BadNetTrigger,
    BlendTrigger,
    CleanLabelStamp,
    FlashTrigger,
    FramedTrigger,
    MovingTrigger,
    NoiseTrigger,
    PowerTrigger,
    SmartTrigger,
    StaticTrigger,
    StrobingTrigger,
    ThinningTrigger,
    WaNetTrigger,
    blend_pattern,
    default_trigger_size,
    flash_events,
    static_trigger_events,
    wanet_grid,
)


def _images(n: int = 4, c: int = 3, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _frames(n: int = 2, t: int = 8, h: int = 20, w: int = 30, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((n, t, 2, h, w), 0.7), generator=gen)


def _structured_image(h: int = 32, w: int = 32) -> torch.Tensor:
    rows = torch.linspace(0, 1, h).view(h, 1)
    cols = torch.linspace(0, 1, w).view(1, w)
    stripes = 0.5 + 0.5 * torch.sin(cols * 12) * torch.cos(rows * 7)
    return torch.stack([stripes, rows.expand(h, w), cols.expand(h, w)]).unsqueeze(0)


def _changed_frames(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    return [t for t in range(before.shape[1]) if not torch.equal(before[:, t], after[:, t])]


def _square_origin_per_frame(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(row, col) of the top-left set pixel of each frame's [H, W] mask."""
    origins = []
    for frame in mask:
        rows, cols = torch.nonzero(frame, as_tuple=True)
        origins.append((int(rows.min()), int(cols.min())))
    return origins


# --------------------------------------------------------------------------- image triggers


@pytest.mark.parametrize("q", [0.5, 2.0, 3.0])
def test_power_trigger_is_exactly_x_to_the_q(q: float) -> None:
    x = _images()
    assert torch.equal(PowerTrigger(q)(x), x**q)


@pytest.mark.parametrize("q", [0.0, -1.0])
def test_power_trigger_rejects_non_positive_q(q: float) -> None:
    with pytest.raises(ValueError, match="q"):
        PowerTrigger(q)


def test_badnet_stamps_only_the_bottom_right_square() -> None:
    x = _images(h=8, w=10) * 0.5
    out = BadNetTrigger()(x)
    expected = x.clone()
    expected[..., 5:8, 7:10] = 1.0
    assert torch.equal(out, expected)
    assert torch.equal((out != x).any(dim=(0, 1)).nonzero().min(0).values, torch.tensor([5, 7]))


def test_badnet_position_and_value() -> None:
    x = torch.zeros(1, 1, 8, 8)
    assert torch.equal(BadNetTrigger(2, "top_left")(x)[0, 0, :2, :2], torch.ones(2, 2))
    out = BadNetTrigger(2, (3, 4), value=0.25)(x)
    assert out.sum() == 4 * 0.25 and torch.all(out[0, 0, 3:5, 4:6] == 0.25)
    with pytest.raises(ValueError, match="does not fit"):
        BadNetTrigger(3, (6, 6))(x)


def test_blend_exact_formula_with_given_pattern() -> None:
    x = _images()
    pattern = _images(n=1, seed=1)[0]
    out = BlendTrigger(alpha=0.3, pattern=pattern)(x)
    assert torch.allclose(out, 0.7 * x + 0.3 * pattern, atol=1e-7)


def test_blend_default_pattern_is_seeded_and_shared_by_the_batch() -> None:
    x = _images()
    out = BlendTrigger(alpha=0.2, seed=5)(x)
    pattern = blend_pattern(x.shape[1:], seed=5)
    assert torch.allclose(out, 0.8 * x + 0.2 * pattern, atol=1e-7)
    assert torch.equal(out, BlendTrigger(alpha=0.2, seed=5)(x))
    assert not torch.equal(out, BlendTrigger(alpha=0.2, seed=6)(x))
    assert 0 <= float(pattern.min()) and float(pattern.max()) <= 1


def test_wanet_with_zero_strength_is_the_identity() -> None:
    x = _structured_image()
    assert torch.allclose(WaNetTrigger(s=0.0)(x), x, atol=1e-5)


def test_wanet_is_a_small_smooth_deterministic_warp() -> None:
    x = _structured_image()
    out = WaNetTrigger()(x)
    change = float((out - x).abs().mean())
    assert 1e-4 < change < 0.05
    assert torch.equal(out, WaNetTrigger()(x))
    assert not torch.equal(out, WaNetTrigger(seed=1)(x))
    assert float(WaNetTrigger(s=2.0)(x).sub(x).abs().mean()) > change


def test_wanet_grid_displacement_has_the_papers_scale() -> None:
    h, s = 32, 0.5
    ratios = []
    for seed in range(4):
        grid = wanet_grid(h, h, k=4, s=s, seed=seed)
        identity = wanet_grid(h, h, k=4, s=0.0, seed=seed)
        displacement = (grid - identity)[:, 2:-2, 2:-2]  # interior: no clamping at the border
        ratios.append(float(displacement.abs().mean()) / (s / h))
        assert grid.shape == (1, h, h, 2) and float(grid.abs().max()) <= 1
    # control points normalised to mean |.| = 1; bicubic upsampling keeps about 3/4 of that
    # (without the normalisation the ratio would be about half as large)
    assert 0.6 < sum(ratios) / len(ratios) < 0.9


def test_wanet_cross_adds_random_offsets() -> None:
    x = _structured_image()
    trigger = WaNetTrigger()
    cross = trigger.cross(x, torch.Generator().manual_seed(0))
    assert torch.equal(cross, trigger.cross(x, torch.Generator().manual_seed(0)))
    assert not torch.allclose(cross, trigger(x))
    assert float((cross - trigger(x)).abs().mean()) < 0.1


def test_noise_trigger_is_bounded_and_reproducible() -> None:
    x = torch.full((3, 2, 16, 16), 0.5)
    out = NoiseTrigger(beta=0.03, seed=7)(x)
    noise = out - x
    assert float(noise.abs().max()) <= 0.03 + 1e-6
    assert abs(float(noise.abs().mean()) - 0.015) < 0.002  # U(-b, b) has mean |.| = b / 2
    assert not torch.equal(noise[0], noise[1])  # i.i.d. per element, not one pattern
    assert torch.equal(out, NoiseTrigger(beta=0.03, seed=7)(x))
    assert not torch.equal(out, NoiseTrigger(beta=0.03, seed=8)(x))


def test_noise_trigger_clips_and_works_on_frames() -> None:
    frames = torch.zeros(2, 4, 2, 6, 6)
    frames[:, :, 1] = 1.0
    out = NoiseTrigger(beta=0.1)(frames)
    assert out.shape == frames.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_noise_trigger_on_count_frames_caps_counts_at_one() -> None:
    frames = torch.zeros(2, 4, 2, 6, 6)
    frames[:, :, 1, :3] = 3.0  # three events per pixel and bin
    out = NoiseTrigger(beta=0.03, seed=1, counts=True)(frames)
    assert float(out[:, :, 1, :3].min()) >= 0.97 and float(out.max()) <= 1.0
    assert float(out.sum()) < 0.4 * float(frames.sum())  # Eq. 7's clip removes the excess
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NoiseTrigger(beta=0.03)(frames)  # unit-range T_s refuses counts
    with pytest.raises(ValueError, match="non-negative"):
        NoiseTrigger(counts=True)(-frames)
    with pytest.raises(ValueError, match="frames"):
        NoiseTrigger(counts=True)(_images())


def test_clean_label_stamp_puts_a_checkerboard_in_each_corner() -> None:
    x = torch.full((1, 1, 9, 9), 0.5)
    out = CleanLabelStamp()(x)
    board = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    for rows, cols in (
        (slice(0, 3), slice(0, 3)),
        (slice(0, 3), slice(6, 9)),
        (slice(6, 9), slice(0, 3)),
        (slice(6, 9), slice(6, 9)),
    ):
        assert torch.equal(out[0, 0, rows, cols], board)
    assert torch.all(out[0, 0, 3:6, :] == 0.5) and torch.all(out[0, 0, :, 3:6] == 0.5)


@pytest.mark.parametrize(
    "trigger",
    [
        PowerTrigger(2.0),
        NoiseTrigger(),
        BadNetTrigger(),
        BlendTrigger(),
        WaNetTrigger(),
        CleanLabelStamp(),
    ],
)
def test_image_triggers_validate_and_do_not_modify_input(trigger) -> None:
    x = _images()
    before = x.clone()
    trigger(x)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        trigger(x[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        trigger(x * 255)


# --------------------------------------------------------------------------- event triggers


def test_default_trigger_size_is_ten_percent_of_width() -> None:
    assert [default_trigger_size(w) for w in (34, 128, 8)] == [3, 12, 1]
    out = StaticTrigger(value=9.0)(torch.zeros(1, 2, 2, 34, 34))
    assert int((out[0, 0, 1] > 0).sum()) == 9


@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_polarity_codes_write_the_right_channels(code: int) -> None:
    frames = _frames(w=30)
    out = StaticTrigger(size=3, position="top_left", polarity=code, value=5.0)(frames)
    off_bit, on_bit = POLARITY_BITS[code]
    assert torch.all(out[:, :, 0, :3, :3] == 5.0 * off_bit)
    assert torch.all(out[:, :, 1, :3, :3] == 5.0 * on_bit)
    outside = torch.ones(frames.shape[-2:], dtype=torch.bool)
    outside[:3, :3] = False
    assert torch.equal(out[..., outside], frames[..., outside])


def test_trigger_value_none_is_each_samples_max_count() -> None:
    frames = torch.zeros(3, 2, 2, 10, 10)
    frames[0, 0, 0, 5, 5] = 7.0
    frames[1, 1, 1, 6, 6] = 3.0
    out = StaticTrigger(size=2, position="top_left", polarity=1, value=None)(frames)
    assert out[:, :, 1, :2, :2].amax(dim=(1, 2, 3)).tolist() == [7.0, 3.0, 1.0]


def test_static_positions_and_fixed_random_position() -> None:
    frames = torch.zeros(1, 3, 2, 20, 30)
    corners = {
        "top_left": (0, 0),
        "top_right": (0, 27),
        "bottom_left": (17, 0),
        "bottom_right": (17, 27),
        "middle": (8, 13),
    }
    for position, origin in corners.items():
        mask = StaticTrigger(position=position, value=1.0)(frames)[0, :, 1] > 0
        assert _square_origin_per_frame(mask) == [origin] * 3
    random_a = StaticTrigger(position="random", seed=3)(frames)
    assert torch.equal(random_a, StaticTrigger(position="random", seed=3)(frames))
    origins = _square_origin_per_frame(random_a[0, :, 1] > 0)
    assert len(set(origins)) == 1  # one fixed position on every frame


def test_moving_trigger_cycles_through_three_positions() -> None:
    frames = torch.zeros(1, 7, 2, 20, 30)
    out = MovingTrigger(size=3, row=4, x0=1, value=1.0)(frames)
    origins = _square_origin_per_frame(out[0, :, 1] > 0)
    cycle = [(4, 1), (4, 6), (4, 9)]  # x0, x0 + s + 2, x0 + 2s + 2
    assert origins == [cycle[t % 3] for t in range(7)]
    assert int((out[0, :, 1] > 0).sum()) == 7 * 9


def _activity_everywhere_but(cell: int, h: int = 36, w: int = 36) -> torch.Tensor:
    frames = torch.ones(4, 6, 2, h, w)
    row, col = divmod(cell, 3)
    frames[..., row * h // 3 : (row + 1) * h // 3, col * w // 3 : (col + 1) * w // 3] = 0
    return frames


def test_smart_trigger_picks_the_empty_cell_and_walks_inside_it() -> None:
    frames = _activity_everywhere_but(5)
    trigger = SmartTrigger.fit(frames, size=3, mode="least", seed=1)
    assert trigger.cell == 5 and trigger.bounds == (12, 24, 24, 36)
    assert trigger.polarity == 1  # rarest pixel states there are events; ties -> lowest code
    out = trigger(torch.zeros(1, 40, 2, 36, 36))  # long enough for the walk to meet the edges
    mask = out[0].sum(dim=1) > 0
    origins = _square_origin_per_frame(mask)
    assert origins[0] == trigger.start
    for row, col in origins:
        assert 12 <= row <= 21 and 24 <= col <= 33
    for (r0, c0), (r1, c1) in zip(origins, origins[1:]):
        assert abs(r1 - r0) == 2 and abs(c1 - c0) == 2
    assert origins == trigger.path(40, 36, 36)
    long_walk = trigger.path(300, 36, 36)
    rows, cols = {r for r, _ in long_walk}, {c for _, c in long_walk}
    assert min(rows) >= 12 and max(rows) == 21 and min(cols) >= 24 and max(cols) == 33
    assert SmartTrigger.fit(frames, size=3, mode="least", seed=1) == trigger


def test_smart_trigger_most_mode_picks_the_busiest_cell_and_its_polarity() -> None:
    frames = torch.zeros(2, 4, 2, 30, 30)
    frames[:, :, 0, 0:10, 20:30] = 3.0  # cell 2 (top right), OFF events only
    frames[:, :, 1, 20:30, 0:10] = 1.0  # cell 6, fewer events
    trigger = SmartTrigger.fit(frames, mode="most", polarity_mode="most")
    assert trigger.cell == 2 and trigger.polarity == 2
    assert SmartTrigger.fit(frames, mode="least").cell not in (2, 6)


def test_framed_trigger_touches_only_its_frames() -> None:
    frames = _frames(t=8)
    out = FramedTrigger(start=2, length=3, value=50.0)(frames)
    assert _changed_frames(frames, out) == [2, 3, 4]
    with pytest.raises(ValueError, match="frames"):
        FramedTrigger(start=6, length=3)(frames)


def test_strobing_trigger_bursts_and_gaps() -> None:
    frames = _frames(t=12)
    out = StrobingTrigger(on=2, gap=3, value=50.0)(frames)
    assert _changed_frames(frames, out) == [0, 1, 5, 6, 10, 11]


def test_flash_sets_whole_selected_frames() -> None:
    frames = _frames(t=6)
    out = FlashTrigger(frames=(1, -1))(frames)
    assert _changed_frames(frames, out) == [1, 5]
    assert torch.equal(out[:, 1], torch.ones_like(out[:, 1]))  # one event per pixel (reference)
    bright = FlashTrigger(frames=(1,), value=None)(frames)  # None: the sample's largest count
    peak = frames.flatten(1).amax(1).view(-1, 1, 1, 1)
    assert torch.equal(bright[:, 1], peak.expand_as(bright[:, 1]))
    on_only = FlashTrigger(frames=(0,), polarity=1, value=2.0)(frames)
    assert torch.all(on_only[:, 0, 0] == 0) and torch.all(on_only[:, 0, 1] == 2.0)


def test_event_triggers_validate_input() -> None:
    with pytest.raises(ValueError, match=r"\[N, T, P=2, H, W\]"):
        StaticTrigger()(torch.zeros(1, 4, 3, 8, 8))
    with pytest.raises(ValueError, match="polarity"):
        StaticTrigger(polarity=4)
    with pytest.raises(ValueError, match="out of range"):
        FlashTrigger(frames=(9,))(torch.zeros(1, 4, 2, 8, 8))


# --------------------------------------------------------------------------- raw events


EVENT_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])


def _events(n: int = 400, w: int = 30, h: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["x"], events["y"] = rng.integers(0, w, n), rng.integers(0, h, n)
    events["t"], events["p"] = np.sort(rng.integers(0, 10_000, n)), rng.integers(0, 2, n)
    return events


def test_static_trigger_events_replace_the_square_and_stay_sorted() -> None:
    events = _events()
    out = static_trigger_events(
        events, (30, 20, 2), size=3, position="top_left", polarity=1, events_per_pixel=4
    )
    square = (out["x"] < 3) & (out["y"] < 3)
    assert np.all(np.diff(out["t"]) >= 0)
    assert np.all(out["p"][square] == 1) and int(square.sum()) == 9 * 4
    outside = ~((events["x"] < 3) & (events["y"] < 3))
    assert len(out) - int(square.sum()) == int(outside.sum())
    binned, _ = np.histogram(out["t"][square], bins=4, range=(events["t"].min(), events["t"].max()))
    assert binned.tolist() == [9, 9, 9, 9]  # one ON event per pixel per time bin
    erased = static_trigger_events(events, (30, 20, 2), size=3, polarity=0)
    assert not np.any((erased["x"] < 3) & (erased["y"] < 3))


def test_flash_events_fire_every_pixel_inside_the_window_only() -> None:
    events = _events()
    out = flash_events(events, (30, 20, 2), windows=[(2000, 3000)], polarity=3)
    inside = (out["t"] >= 2000) & (out["t"] <= 3000)
    assert int(inside.sum()) == 30 * 20 * 2
    assert sorted(set(out["p"][inside].tolist())) == [0, 1]
    assert np.array_equal(out[~inside], events[(events["t"] < 2000) | (events["t"] > 3000)])
    assert np.all(np.diff(out["t"]) >= 0)


def test_thinning_keeps_the_set_share_of_events_and_never_adds_any():
    frames = _frames(n=4) * 3  # counts 0..~9
    scale = 4.0
    scaled = frames / scale
    thinned = ThinningTrigger(keep=0.7, seed=1, scale=scale)(scaled)
    counts = thinned * scale
    assert torch.equal(counts, counts.round())  # whole events
    assert torch.all(counts <= frames) and torch.all(counts[frames == 0] == 0)
    assert abs(float(counts.sum() / frames.sum()) - 0.7) < 0.02
    assert torch.equal(thinned, ThinningTrigger(keep=0.7, seed=1, scale=scale)(scaled))
    assert torch.equal(ThinningTrigger(keep=1.0, scale=scale)(scaled), scaled)
    with pytest.raises(ValueError, match="keep"):
        ThinningTrigger(keep=1.5)


# --------------------------------------------------------------------------- registry


IMAGE_NAMES = {"badnet", "blend", "wanet", "clean_label", "power", "noise"}
EVENT_NAMES = {"static", "moving", "smart", "framed", "strobing", "flash", "thinning", "dynamic",
               "noise"}


def test_registry_lists_the_image_and_event_triggers() -> None:
    from snnbackdoor import registry
    from snnbackdoor.triggers import option_names

    names = set(registry.names("trigger"))
    assert IMAGE_NAMES | EVENT_NAMES <= names
    for name in IMAGE_NAMES | EVENT_NAMES:
        component = registry.get("trigger", name)
        kinds = {k for k in ("image", "events") if k in component.meta["data"]}
        assert kinds == ({"image"} if name in IMAGE_NAMES else set()) | (
            {"events"} if name in EVENT_NAMES else set()), name
        options = registry.describe("trigger")["trigger"][name]["options"]
        assert set(options) == set(option_names(name)) and options  # `snnbackdoor list`
    assert registry.get("trigger", "static").obj is StaticTrigger
    assert registry.get("trigger", "smart").meta["fit"] and \
        registry.get("trigger", "dynamic").meta["trained"]
    with pytest.raises(KeyError, match="Did you mean 'static'"):
        registry.get("trigger", "statc")


def test_build_trigger_makes_each_trigger_from_its_config_options() -> None:
    from snnbackdoor.triggers import build_trigger

    frames = _frames(n=2, t=6)
    built = build_trigger("strobing", {"position": [2, 3], "on": 2, "gap": 1, "size": 2})
    assert built == StrobingTrigger(size=2, position=(2, 3), on=2, gap=1)  # YAML list -> tuple
    assert torch.equal(built(frames), StrobingTrigger(2, (2, 3), 2, 1)(frames))
    smart = build_trigger("smart", {"mode": "most"}, frames)
    assert smart == SmartTrigger.fit(frames, mode="most")
    assert build_trigger("power", {"q": 3.0}) == PowerTrigger(3.0)
    with pytest.raises(ValueError, match="no option"):
        build_trigger("static", {"colour": 1})
    with pytest.raises(ValueError, match="trained with its attack"):
        build_trigger("dynamic")
    with pytest.raises(ValueError, match="training inputs"):
        build_trigger("smart")
    with pytest.raises(ValueError, match="least"):
        build_trigger("smart", {"mode": "middle"}, frames)


def test_trigger_modules_import_no_sibling_trigger_module() -> None:
    """No cycle: trigger modules share only `base` (checks, geometry) and `frames` (stamping)."""
    import ast
    from pathlib import Path

    import snnbackdoor.triggers as package

    for path in Path(package.__file__).parent.glob("*.py"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        siblings = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
        allowed = {"base", "frames"} | ({"deepfool"} if path.stem == "optimised" else set())
        assert siblings <= allowed, (path.name, siblings - allowed)
