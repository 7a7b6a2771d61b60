"""WideResNet with RobustBench's class and key names (conv1, block1.layer.0.bn1, ..., convShortcut,
bn1, fc): the architecture of most robust CIFAR checkpoints (TRADES, Rice et al., RobustBench)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rnas.teachers.registry import CIFAR10_MEAN, CIFAR10_STD, register_teacher


class BasicBlock(nn.Module):
    """Pre-activation WRN block; a 1×1 ``convShortcut`` when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        if not self.equalInOut:  # the shortcut reads the pre-activated input, and runs last (as RobustBench)
            x = out
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return (x if self.equalInOut else self.convShortcut(x)) + out


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[BasicBlock(in_planes if i == 0 else out_planes, out_planes,
                                                stride if i == 0 else 1) for i in range(nb_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen for 32×32 inputs; ``depth = 6n + 4``."""

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, bias_last: bool = True):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes, bias=bias_last)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _depth_problem(depth: int, widen: int) -> str | None:
    return f"WideResNet depth must be 6n+4 (e.g. 16, 28, 34), got {depth}" if (depth - 4) % 6 else None


# Rice et al. train with CIFAR-10 normalisation outside the model: the zoo puts it inside
@register_teacher("wrt34", description="WideResNet-34-10 (Rice et al.)", input_size=32, num_classes=10,
                  mean=CIFAR10_MEAN, std=CIFAR10_STD, any_size=True)
def wrt34(num_classes: int) -> WideResNet:
    """The paper's teacher: WideResNet-34-10."""
    return WideResNet(34, 10, num_classes)


@register_teacher("wrn-<depth>-<widen>", description="WideResNet-<depth>-<widen> (RobustBench layout)", input_size=32,
                  any_size=True, example="wrn-16-2", check=_depth_problem)
def wrn(num_classes: int, depth: int, widen: int) -> WideResNet:
    """Any WideResNet-depth-widen; RobustBench checkpoints take raw [0, 1] inputs (no normalisation)."""
    return WideResNet(depth, widen, num_classes)
