"""ResNet-18/34/50/101/152 in plain torch.nn (the v1.5 layout: stride on the 3x3 conv), no torchvision."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.errors import UserError

# depth -> (block kind, blocks per stage)
LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(c_in, width, 3, stride), nn.ReLU(inplace=True), *_conv_bn(width, c_out, 3)
        )
        self.shortcut = _shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as in ResNet v1.5), 1x1 expand by four."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(c_in, width, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(width, width, 3, stride),
            nn.ReLU(inplace=True),
            *_conv_bn(width, c_out, 1),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))


class Stage(nn.Sequential):
    """A run of residual blocks; with ``mirror`` each block's activations are recomputed in backward.

    This is what MXNET_BACKWARD_DO_MIRROR buys in MXNet: less activation memory for ~30% more compute.
    """

    mirror = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            if self.mirror and self.training and x.requires_grad:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class ResNet(nn.Module):
    """The ImageNet ResNet: 7x7 stem, max-pool, four stages, global average pool, one linear layer."""

    def __init__(self, depth: int, num_classes: int, width: int = 64):
        super().__init__()
        kind, counts = LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(
            *_conv_bn(3, width, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        stages, c_in = [], width
        for i, count in enumerate(counts):
            stage_width = width * 2**i
            blocks = []
            for j in range(count):
                blocks.append(block(c_in, stage_width, 2 if (j == 0 and i > 0) else 1))
                c_in = stage_width * block.expansion
            stages.append(Stage(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Zero the last BN of each residual body so every block starts as identity: trains faster.
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            last_bn = m.body[-1]
            assert isinstance(last_bn, nn.BatchNorm2d)  # every body ends with _conv_bn's BN
            nn.init.zeros_(last_bn.weight)


def set_mirror(model: nn.Module, on: bool) -> None:
    """Turn activation checkpointing (MXNet's mirroring) on or off for every stage."""
    for m in model.modules():
        if isinstance(m, Stage):
            m.mirror = on


def build(network: str, num_layers: int, num_classes: int, width: int = 64) -> nn.Module:
    """The network train_imagenet names with --network/--num-layers, or a UserError naming the flag."""
    if network not in ("resnet", "resnet-v1", "resnet-v1b", "resnet50_v1", "resnet-v15"):
        raise UserError(
            f"--network {network}: the torch engine builds resnet only; use --network resnet "
            "or --engine mxnet"
        )
    if num_layers not in LAYOUTS:
        raise UserError(f"--num-layers {num_layers}: choose one of {sorted(LAYOUTS)}")
    if num_classes < 2:
        raise UserError(f"--num-classes {num_classes}: need at least 2 classes")
    return ResNet(num_layers, num_classes, width)
