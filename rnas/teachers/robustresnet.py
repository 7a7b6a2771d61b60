"""WRN-A1 ... WRN-A4 (Huang et al., "Revisiting Residual Networks for Adversarial Robustness"): the
pre-activation basic-block WideResNets that RobustScaling lays out for 5, 10, 20 and 40 GFLOPs, with
RobustBench's class and key names (``Huang2022Revisiting_WRN-A4``: stem_conv, blocks.<stage>.layer.<block>
.{bn1, conv1, bn2, conv2, shortcut.0}, norm1, fc) and SiLU. RobustBench's checkpoints carry the CIFAR-10
normalisation as ``mu`` / ``sigma``; the teacher wrapper puts it in front of the net (read from the file,
the CIFAR-10 statistics otherwise). ``wrn-a-<d1>-<d2>-<d3>-<w1>-<w2>-<w3>`` is any other stage layout
(``rnas scale --flops`` prints one for a budget)."""
from __future__ import annotations

import torch
from torch import nn

from ..scaling import PRESETS
from .registry import CIFAR10_MEAN, CIFAR10_STD, register_teacher


class PreActBasicBlock(nn.Module):
    """act(bn1(x)) -> conv1 -> act(bn2) -> conv2, plus x or shortcut(act(bn1(x))) when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation=nn.SiLU):
        super().__init__()
        self.act = activation(inplace=True)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False))
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        return self.conv2(self.act(self.bn2(self.conv1(out)))) + shortcut


class NetworkBlock(nn.Module):
    def __init__(self, depth: int, in_planes: int, planes: int, stride: int, activation=nn.SiLU):
        super().__init__()
        self.layer = nn.Sequential(*[PreActBasicBlock(in_planes if i == 0 else planes, planes,
                                                      stride if i == 0 else 1, activation) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class PreActResNet(nn.Module):
    """Stem 3x3 conv (16 channels), three stages of ``depths`` blocks at 16·w1, 32·w2, 64·w3 channels
    (strides 1, 2, 2), BN-act, global average pool, linear; inputs already normalised."""

    def __init__(self, depths: tuple[int, int, int], widths: tuple[int, int, int], num_classes: int = 10,
                 activation=nn.SiLU):
        super().__init__()
        channels = [16, 16 * widths[0], 32 * widths[1], 64 * widths[2]]
        self.stem_conv = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.blocks = nn.ModuleList(NetworkBlock(d, channels[i], channels[i + 1], 1 if i == 0 else 2, activation)
                                    for i, d in enumerate(depths))
        self.norm1 = nn.BatchNorm2d(channels[3])
        self.act1 = activation(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_conv(x)
        for block in self.blocks:
            out = block(out)
        out = self.act1(self.norm1(out))
        return self.fc(out.mean((2, 3)))


def _register_preset(name: str, depths: tuple, widths: tuple) -> None:
    @register_teacher(f"wrn-{name.lower()}", description=f"WRN-{name}: depths {depths}, widening {widths} "
                      "(RobustScaling; RobustBench Huang2022Revisiting layout)", input_size=32, num_classes=None,
                      mean=CIFAR10_MEAN, std=CIFAR10_STD, any_size=True)
    def build(num_classes: int) -> PreActResNet:
        return PreActResNet(depths, widths, num_classes)


for _name, _preset in PRESETS.items():
    _register_preset(_name, _preset.depths, _preset.widths)


def _layout_problem(d1, d2, d3, w1, w2, w3) -> str | None:
    return "every stage needs depth and widening factor >= 1" if min(d1, d2, d3, w1, w2, w3) < 1 else None


@register_teacher("wrn-a-<d1>-<d2>-<d3>-<w1>-<w2>-<w3>", description="pre-activation WRN, depths <d1>-<d2>-<d3>, "
                  "widening <w1>-<w2>-<w3> (WRN-A layout)", input_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                  any_size=True, example="wrn-a-14-14-7-5-7-3", check=_layout_problem)
def wrn_a_layout(num_classes: int, d1: int, d2: int, d3: int, w1: int, w2: int, w3: int) -> PreActResNet:
    return PreActResNet((d1, d2, d3), (w1, w2, w3), num_classes)
