"""Network bodies written once against a LayerKit (SNN or ANN twin).

Spiking bodies take `[T, N, C, H, W]` and return `[T, N, classes]`; ANN twins take
`[N, C, H, W]` and return `[N, classes]`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..registry import register
from .kit import LayerKit


def conv_bn_act(kit: LayerKit, cin: int, cout: int, bias: bool = False) -> list[nn.Module]:
    return [kit.conv(cin, cout, 3, bias=bias), kit.bn(cout), kit.act()]


@register("model", "digits_net", native_shape=(1, 16, 16))
def digits_net(kit: LayerKit, in_channels: int, num_classes: int, image_size: int = 16):
    """Small conv SNN for the embedded 16x16 digits: 2 x (conv-BN-spike-avgpool), FC-spike-FC."""
    side = image_size // 4
    return nn.Sequential(
        *conv_bn_act(kit, in_channels, 32),
        kit.pool("avg"),
        *conv_bn_act(kit, 32, 64),
        kit.pool("avg"),
        kit.flatten(),
        kit.linear(64 * side * side, 128),
        kit.act(),
        kit.linear(128, num_classes),
    )


@register("model", "nmnist_net", native_shape=(2, 34, 34))
def nmnist_net(kit: LayerKit, in_channels: int, num_classes: int, image_size: int = 34):
    """N-MNIST net: 2 x (conv-BN-spike-avgpool) on 2x34x34 frames, FC-spike-FC head."""
    side = image_size // 4
    return nn.Sequential(
        *conv_bn_act(kit, in_channels, 32),
        kit.pool("avg"),
        *conv_bn_act(kit, 32, 64),
        kit.pool("avg"),
        kit.flatten(),
        kit.linear(64 * side * side, 256),
        kit.act(),
        kit.linear(256, num_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block; the spiking node follows the residual sum (tdBN ResNet-19 style)."""

    def __init__(self, kit: LayerKit, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = kit.conv(cin, cout, 3, stride)
        self.bn1 = kit.bn(cout)
        self.act1 = kit.act()
        self.conv2 = kit.conv(cout, cout, 3)
        self.bn2 = kit.bn(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(kit.conv(cin, cout, 1, stride), kit.bn(cout))
        self.act2 = kit.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


@register("model", "spiking_resnet19", native_shape=(3, 32, 32))
def spiking_resnet19(kit: LayerKit, in_channels: int, num_classes: int, image_size: int = 32):
    """ResNet-19 of Zheng et al. (AAAI 2021, tdBN): conv128, 3x128, 3x256, 2x512 blocks,
    global average pool, FC 256, FC classes."""
    layers: list[nn.Module] = conv_bn_act(kit, in_channels, 128)
    cin = 128
    for cout, blocks, stride in ((128, 3, 1), (256, 3, 2), (512, 2, 2)):
        for index in range(blocks):
            layers.append(BasicBlock(kit, cin, cout, stride if index == 0 else 1))
            cin = cout
    layers += [
        kit.global_pool(),
        kit.flatten(),
        kit.linear(512, 256),
        kit.act(),
        kit.linear(256, num_classes),
    ]
    return nn.Sequential(*layers)


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}


def _vgg(kit: LayerKit, cfg: list, in_channels: int, num_classes: int,
         image_size: int = 32) -> nn.Sequential:
    """CIFAR VGG (conv3x3 with bias, BN, spike; max pools; one FC). At 32x32 the five pools
    leave 1x1; larger inputs (event frames at 48 or 128) get a global average pool first."""
    layers: list[nn.Module] = []
    cin = in_channels
    for item in cfg:
        if item == "M":
            layers.append(kit.pool("max"))
        else:
            layers += conv_bn_act(kit, cin, item, bias=True)
            cin = item
    if image_size != 32:
        layers.append(kit.global_pool())
    layers += [kit.flatten(), kit.linear(512, num_classes)]
    return nn.Sequential(*layers)


@register("model", "spiking_vgg16", native_shape=(3, 32, 32))
def spiking_vgg16(kit: LayerKit, in_channels: int, num_classes: int, image_size: int = 32):
    """VGG-16 (13 conv layers, one classifier layer), native 32x32."""
    return _vgg(kit, VGG_CONFIGS["vgg16"], in_channels, num_classes, image_size)


@register("model", "spiking_vgg11", native_shape=(3, 32, 32))
def spiking_vgg11(kit: LayerKit, in_channels: int, num_classes: int, image_size: int = 32):
    """VGG-11 (8 conv layers, one classifier layer), native 32x32."""
    return _vgg(kit, VGG_CONFIGS["vgg11"], in_channels, num_classes, image_size)
