"""The fast path: device-side augmentation, the fused CPU neurons, channels-last training.

Every fast piece must compute what the plain path computes, up to float rounding.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import neuron, surrogate

from snnbackdoor.backend import (
    neuron_implementations,
    set_neuron_backend,
    use_fused_cpu_neurons,
    uses_fused_cpu_neurons,
)
from snnbackdoor.data.augment import (
    RandomCropFlip,
    crop_padding_for,
    dataset_augmentation,
    random_crop_flip,
)
from snnbackdoor.data.bundle import DatasetInfo, Split
from snnbackdoor.models import build_model
from snnbackdoor.training import TrainConfig, train

# ---------------------------------------------------------------- augmentation


def _unique_images(n: int, c: int = 2, side: int = 6) -> torch.Tensor:
    """Images whose every pixel value is distinct and non-zero, so shifts can be recovered."""
    return torch.arange(1, n * c * side * side + 1, dtype=torch.float32).view(n, c, side, side)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`image` moved down by dy and right by dx, zeros filling in."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _find_transform(source: torch.Tensor, result: torch.Tensor, padding: int):
    """The (dy, dx, flipped) that maps source to result; every match, to check uniqueness."""
    matches = []
    for dy, dx in itertools.product(range(-padding, padding + 1), repeat=2):
        for flipped in (False, True):
            candidate = _shifted(source.flip(-1) if flipped else source, dy, dx)
            if torch.equal(candidate, result):
                matches.append((dy, dx, flipped))
    return matches


def test_crop_moves_content_by_an_offset_within_the_padding_and_fills_zeros():
    x = _unique_images(40)
    out = random_crop_flip(x, padding=2, hflip=False, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = set()
    for source, result in zip(x, out):
        matches = _find_transform(source, result, padding=2)
        assert len(matches) == 1 and matches[0][2] is False  # one shift, never a flip
        shifts.add(matches[0][:2])
    assert len(shifts) > 10  # offsets are drawn per sample, not per batch


def test_flip_only_when_allowed_and_both_outcomes_occur():
    x = _unique_images(64)
    same = random_crop_flip(x, padding=0, hflip=False)
    assert torch.equal(same, x)
    out = random_crop_flip(x, padding=0, hflip=True, generator=torch.Generator().manual_seed(0))
    mirrored = [torch.equal(r, s.flip(-1)) for r, s in zip(out, x)]
    kept = [torch.equal(r, s) for r, s in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 10 < sum(mirrored) < 54


def test_crop_and_flip_together_is_a_shift_of_the_mirror():
    x = _unique_images(16)
    out = random_crop_flip(x, padding=1, hflip=True, generator=torch.Generator().manual_seed(3))
    for source, result in zip(x, out):
        assert len(_find_transform(source, result, padding=1)) == 1


def test_augmentation_is_deterministic_with_a_generator_and_dtype_agnostic():
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    augment = RandomCropFlip(padding=2, hflip=True)
    first = augment(x, torch.Generator().manual_seed(7))
    again = augment(x, torch.Generator().manual_seed(7))
    other = augment(x, torch.Generator().manual_seed(8))
    assert first.dtype == torch.uint8 and torch.equal(first, again)
    assert not torch.equal(first, other)
    as_float = augment(x.float(), torch.Generator().manual_seed(7))
    assert torch.equal(as_float, first.float())
    channels_last = x.contiguous(memory_format=torch.channels_last)
    out = augment(channels_last, torch.Generator().manual_seed(7))
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, first)


def test_augmentation_rejects_bad_input():
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(padding=-1)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        random_crop_flip(torch.zeros(3, 8, 8))


def test_dataset_augmentation_follows_the_dataset():
    cifar = DatasetInfo("cifar10", "image", (3, 32, 32), 10, hflip=True)
    digits = DatasetInfo("digits", "image", (1, 16, 16), 10, hflip=False)
    events = DatasetInfo("nmnist", "events", (8, 2, 34, 34), 10)
    assert dataset_augmentation(cifar) == RandomCropFlip(padding=4, hflip=True)
    assert dataset_augmentation(digits) == RandomCropFlip(padding=2, hflip=False)
    assert dataset_augmentation(events) is None
    assert crop_padding_for(28) == 4 and crop_padding_for(128) == 16


# ---------------------------------------------------------------- fused CPU neurons

_SURROGATES = (surrogate.ATan, surrogate.Sigmoid, surrogate.PiecewiseQuadratic)


def _node(kind: str, v_reset, detach_reset: bool, decay_input: bool, surrogate_cls):
    common = dict(v_reset=v_reset, detach_reset=detach_reset,
                  surrogate_function=surrogate_cls(), step_mode="m")
    if kind == "if":
        return neuron.IFNode(**common)
    return neuron.LIFNode(tau=1.7, decay_input=decay_input, **common)


@pytest.mark.parametrize("kind", ["lif", "if"])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.5])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_fused_neuron_matches_spikingjelly(kind, v_reset, detach_reset):
    for decay_input, surrogate_cls in itertools.product((True, False), _SURROGATES):
        torch.manual_seed(0)
        x = (torch.randn(5, 3, 7) * 1.2).requires_grad_()
        weights = torch.randn(3, 7)
        results = []
        for fused in (False, True):
            node = _node(kind, v_reset, detach_reset, decay_input, surrogate_cls)
            use_fused_cpu_neurons(node, fused)
            x.grad = None
            first = node(x)
            second = node(x * 0.7)  # stateful second call: gradient flows through V
            loss = (first * weights).sum() + (second ** 2).sum() + node.v.sum()
            loss.backward()
            results.append((first.detach(), second.detach(), node.v.detach(), x.grad.clone()))
        (f1, s1, v1, g1), (f2, s2, v2, g2) = results
        assert torch.equal(f1, f2) and torch.equal(s1, s2)  # the forward is bit-identical
        torch.testing.assert_close(v1, v2)
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_fused_path_falls_back_where_it_does_not_apply():
    plif = neuron.ParametricLIFNode(surrogate_function=surrogate.ATan(), step_mode="m")
    assert use_fused_cpu_neurons(plif) == 0  # learned tau: SpikingJelly keeps it
    node = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m",
                          store_v_seq=True)
    use_fused_cpu_neurons(node)
    x = torch.randn(4, 2, 3)
    out = node(x)
    assert node.v_seq is not None and node.v_seq.shape == (4, 2, 3)  # SpikingJelly ran
    reference = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")
    assert torch.equal(out, reference(x))
    as_double = node(x.double())  # other dtypes: SpikingJelly
    assert as_double.dtype == torch.float64


def test_models_use_the_fused_path_by_default_and_it_survives_deepcopy():
    model = build_model("digits_net", T=2)
    assert uses_fused_cpu_neurons(model)
    twin = copy.deepcopy(model)
    nodes = [m for m in twin.modules() if isinstance(m, neuron.LIFNode)]
    assert all(m.multi_step_forward.__self__ is m for m in nodes)
    assert set_neuron_backend(twin, "spikingjelly") == len(nodes)
    assert not uses_fused_cpu_neurons(twin)
    with pytest.raises(ValueError, match="neuron backend"):
        set_neuron_backend(twin, "cupy")
    assert neuron_implementations("cpu")["lif"].startswith("fused-cpu")


# ---------------------------------------------------------------- whole models and training


def _digits_pair(seed: int = 0, T: int = 4):
    """The same digits_net twice: one on the fast path, one on SpikingJelly's own path with
    every layer run at every time step (no time-invariant prefix computed once)."""
    models = []
    for backend in ("auto", "spikingjelly"):
        torch.manual_seed(seed)
        model = build_model("digits_net", T=T, mean=[0.3], std=[0.4])
        set_neuron_backend(model, backend)
        models.append(model)
    assert models[0].static_prefix == 2  # conv, BN
    models[1].static_prefix = 0
    return models


def test_static_prefix_is_the_leading_conv_bn_and_keeps_batch_statistics():
    assert build_model("spiking_resnet19", T=1).static_prefix == 2
    assert build_model("spiking_vgg11", T=1).static_prefix == 2
    assert build_model("nmnist_net", T=2, encoding="frames").static_prefix == 0  # frames vary
    once, every_step = _digits_pair(seed=5, T=3)
    set_neuron_backend(every_step, "auto")
    x = torch.rand(16, 1, 16, 16)
    for model in (once, every_step):
        model.train()
        model(x)  # one training-mode forward updates the BN running statistics
    bn_once, bn_every = once.body[1], every_step.body[1]
    torch.testing.assert_close(bn_once.running_mean, bn_every.running_mean)
    # Bessel's correction counts N*H*W values instead of T*N*H*W: 1e-4 relative here
    torch.testing.assert_close(bn_once.running_var, bn_every.running_var, rtol=2e-4, atol=1e-6)
    once.eval(), every_step.eval()
    with torch.no_grad():
        torch.testing.assert_close(once(x), every_step(x), rtol=1e-4, atol=1e-5)


def test_a_one_channel_image_runs_channels_last_after_the_prefix_when_stored_so():
    from snnbackdoor.training import set_channels_last

    model = build_model("digits_net", T=2)
    seen = []
    model.body[3].register_forward_hook(  # the first pool reads the first LIF's spikes
        lambda m, i, o: seen.append(i[0].flatten(0, 1).is_contiguous(
            memory_format=torch.channels_last)))
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        plain = model(x)
        set_channels_last(model)
        fast = model(x.contiguous(memory_format=torch.channels_last))
    assert seen == [False, True]
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_fast_model_forward_and_gradients_match_plain():
    fast, plain = _digits_pair()
    x = torch.rand(8, 1, 16, 16)
    y = torch.arange(8) % 10
    losses = []
    for model, memory_format in ((fast, torch.channels_last), (plain, torch.contiguous_format)):
        model.to(memory_format=memory_format)
        loss = F.cross_entropy(model(x.contiguous(memory_format=memory_format)), y)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_channels_last_gives_the_same_outputs():
    model = build_model("spiking_vgg11", T=1, num_classes=5).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        model.to(memory_format=torch.channels_last)
        fast = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_training_fast_path_equals_plain_path_up_to_float_noise(digits):
    small = digits.train.subset(torch.arange(64))
    fast, plain = _digits_pair(seed=3, T=3)
    results = []
    for model, channels_last in ((fast, True), (plain, False)):
        # SGD: Adam's first steps turn float noise in ~zero gradients into +-lr updates
        config = TrainConfig(epochs=1, batch_size=32, progress=False, seed=2,
                             optimizer="sgd", lr=0.1, channels_last=channels_last)
        results.append(train(model, small, config).history[0]["loss"])
        assert all(p.is_contiguous() for p in model.parameters())  # layout restored
    assert results[0] == pytest.approx(results[1], rel=1e-4)
    for (name, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_training_with_augmentation_on_uint8_data_is_seeded():
    torch.manual_seed(0)
    split = Split(torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8),
                  torch.arange(24) % 10)
    augment = RandomCropFlip(padding=2)
    losses = []
    for _ in range(2):
        torch.manual_seed(11)
        model = build_model("digits_net", T=2)
        config = TrainConfig(epochs=1, batch_size=12, progress=False, seed=4, augment=True)
        losses.append(train(model, split, config, augment=augment).history[0]["loss"])
    assert losses[0] == losses[1]


@pytest.mark.slow
def test_compiled_training_runs_and_restores_the_model(digits):  # minutes on a CPU
    small = digits.train.subset(torch.arange(64))
    model = build_model("digits_net", T=2)
    config = TrainConfig(epochs=1, batch_size=32, progress=False, compile=True)
    history = train(model, small, config, val_split=digits.val).history
    assert history[0]["loss"] > 0 and getattr(model, "_compiled_call_impl", None) is None


def test_channels_last_layout_restores_the_layout_it_found():
    from snnbackdoor.models.classifier import stored_channels_last
    from snnbackdoor.training import channels_last_layout, evaluate, set_channels_last

    model = build_model("digits_net", T=2)
    split = Split(torch.rand(6, 1, 16, 16), torch.arange(6))
    with channels_last_layout(model):
        assert stored_channels_last(model)
    assert not stored_channels_last(model)
    set_channels_last(model)  # as inside the trainer: evaluating must not undo it
    evaluate(model, split)
    assert stored_channels_last(model)
