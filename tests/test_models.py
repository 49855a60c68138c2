"""Every body builds, runs forward and backward at its native size, and has the published size."""

import pytest
import torch

from snnbackdoor import registry
from snnbackdoor.models import SpikingClassifier, build_model


def resnet19_parameters(classes: int) -> int:
    """ResNet-19 as listed by Zheng et al. (AAAI 2021, tdBN), Table: conv3x3 128; (3x3 128
    x2) x3; (3x3 256 x2) x3; (3x3 512 x2) x2; avg pool; FC 256; FC classes. Bias-free convs,
    BN after each conv, 1x1 conv + BN shortcuts where the shape changes."""
    conv = lambda cin, cout, k=3: cin * cout * k * k  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 128) + bn(128)
    cin = 128
    for cout, blocks, stride in ((128, 3, 1), (256, 3, 2), (512, 2, 2)):
        for index in range(blocks):
            total += conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)
            if index == 0 and (stride != 1 or cin != cout):
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + 512 * 256 + 256 + 256 * classes + classes


# CIFAR VGG of kuangliu/pytorch-cifar (conv3x3 with bias + BN, one Linear(512, classes)):
# its README-era summary gives 14,728,266 (VGG-16) and 9,231,114 (VGG-11) for 10 classes.
PUBLISHED = {
    ("spiking_vgg16", 10): 14_728_266,
    ("spiking_vgg11", 10): 9_231_114,
    ("spiking_resnet19", 10): resnet19_parameters(10),
    ("spiking_resnet19", 100): resnet19_parameters(100),
    # Our own small nets, counted from their layer lists in models/bodies.py.
    ("digits_net", 10): (1 * 32 * 9 + 64) + (32 * 64 * 9 + 128) + (64 * 16 * 128 + 128)
    + (128 * 10 + 10),
    ("nmnist_net", 10): (2 * 32 * 9 + 64) + (32 * 64 * 9 + 128) + (64 * 64 * 256 + 256)
    + (256 * 10 + 10),
}


@pytest.mark.parametrize(("name", "classes"), sorted(PUBLISHED))
def test_parameter_count_matches_reference(name, classes):
    model = build_model(name, num_classes=classes)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[(name, classes)]
    twin = build_model(name, num_classes=classes, ann=True)
    assert sum(p.numel() for p in twin.parameters()) == PUBLISHED[(name, classes)]
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]


@pytest.mark.parametrize("name", registry.names("model"))
@pytest.mark.parametrize("neuron", ["lif", "plif", "if"])
def test_forward_backward_at_native_size(name, neuron):
    big = name.startswith("spiking_")
    if big and neuron != "lif":
        pytest.skip("large bodies checked with LIF only to keep the suite fast")
    channels, size, _ = registry.get("model", name).meta["native_shape"]
    model = build_model(name, neuron=neuron, T=2 if big else 4, num_classes=7)
    assert isinstance(model, SpikingClassifier)
    x = torch.rand(2, channels, size, size)
    if name == "nmnist_net":
        model = build_model(name, neuron=neuron, num_classes=7, encoding="frames")
        x = torch.rand(2, 3, channels, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_ann_twin_runs_and_has_relu():
    twin = build_model("digits_net", ann=True)
    assert any(isinstance(m, torch.nn.ReLU) for m in twin.modules())
    assert twin(torch.rand(3, 1, 16, 16)).shape == (3, 10)


def test_unknown_model_and_bad_input_shape_fail_clearly():
    with pytest.raises(KeyError, match="Did you mean 'digits_net'"):
        build_model("digit_net")
    with pytest.raises(ValueError, match=r"expected images \[N, C, H, W\]"):
        build_model("digits_net")(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="unknown neuron"):
        build_model("digits_net", neuron="izhikevich")


def test_state_is_reset_between_forwards():
    model = build_model("digits_net").eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_vgg_takes_event_frames_larger_than_32():
    """Event frames (here 48x48) go through a global pool instead of failing at the FC."""
    model = build_model("spiking_vgg11", in_channels=2, image_size=48, T=2, num_classes=10)
    assert model(torch.rand(1, 2, 48, 48)).shape == (1, 10)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[("spiking_vgg11", 10)] - (
        3 - 2) * 64 * 9  # the same weights apart from the first conv's input channels
