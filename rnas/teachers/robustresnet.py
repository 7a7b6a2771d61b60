"""WRN-A1 ... WRN-A4 (Huang et al., "Revisiting Residual Networks for Adversarial Robustness"): the
pre-activation basic-block WideResNets that RobustScaling lays out for 5, 10, 20 and 40 GFLOPs, with
RobustBench's class and key names (``Huang2022Revisiting_WRN-A4``: stem_conv, blocks.<stage>.layer.<block>
.{bn1, conv1, bn2, conv2, shortcut.0}, norm1, fc) and SiLU. RobustBench's checkpoints carry the CIFAR-10
normalisation as ``mu`` / ``sigma``; the teacher wrapper puts it in front of the net (read from the file,
the CIFAR-10 statistics otherwise). ``wrn-a-<d1>-<d2>-<d3>-<w1>-<w2>-<w3>`` is any other stage layout
(``rnas scale --flops`` prints one for a budget).

RobustResNet-A1 ... A4 and ``robustresnet-a-<d1>-...-<w3>`` are the same layouts built from the paper's
RobustResBlock, with the key names of the authors' released code (``blocks.<stage>.layer.<block>.{bn1,
conv1, bn2, conv2.<i>, bn3.<i>, conv3, se_bn, se.fc.0, se.fc.2, shortcut.0}``) and its forward: the 1x1
reduce reads the block's input as it comes (the pre-activation BN-ReLU feeds only the shortcut conv), the
3x3 stage is hierarchical over 4 scales (plain grouped at stride 2, the last scale average-pooled), and the
residual SE adds se(se_bn(y)) beside y and the shortcut. Its widths are ``rnas.nets.scaling``'s ``rr_width``."""
from __future__ import annotations

import torch
from torch import nn

from rnas.nets.scaling import BASES, PRESETS, RR_EXPANSION, RR_SCALES, RR_SE_REDUCTION, Layout, rr_width
from rnas.teachers.registry import CIFAR10_MEAN, CIFAR10_STD, register_teacher


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


class SqueezeExcitation(nn.Module):
    """x · sigmoid(fc(avgpool(x))), fc = Linear-ReLU-Linear without biases."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class RobustResBottleneck(nn.Module):
    """The RobustResBlock of RobustResNet-A: 1x1 reduce to 4 scales of ``rr_width(planes)``, a hierarchical
    3x3 stage, 1x1 expand to 4·planes, residual SE; see the module's docstring for its forward."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation=nn.ReLU):
        super().__init__()
        width, out = rr_width(planes), RR_EXPANSION * planes
        self.stride = stride
        self.act = activation(inplace=True)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, width * RR_SCALES, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width * RR_SCALES)
        self.conv2 = nn.ModuleList(nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(RR_SCALES - 1))
        self.bn3 = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(RR_SCALES - 1))
        self.pool = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(width * RR_SCALES, out, 1, bias=False)
        self.se_bn = nn.BatchNorm2d(out)
        self.se = SqueezeExcitation(out, RR_SE_REDUCTION)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_planes, out, 1, stride, bias=False))
                         if stride > 1 or in_planes != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(self.act(self.bn1(x)))
        parts = self.act(self.bn2(self.conv1(x))).chunk(RR_SCALES, 1)
        outs = []
        for i, (conv, bn) in enumerate(zip(self.conv2, self.bn3, strict=True)):
            outs.append(self.act(bn(conv(parts[i] if i == 0 or self.stride > 1 else parts[i] + outs[-1]))))
        outs.append(self.pool(parts[-1]))
        y = self.conv3(torch.cat(outs, 1))
        return y + shortcut + self.se(self.se_bn(y))


BLOCKS = {"wrn": (PreActBasicBlock, 1, nn.SiLU), "robust_res": (RobustResBottleneck, RR_EXPANSION, nn.ReLU)}


class NetworkBlock(nn.Module):
    def __init__(self, depth: int, in_planes: int, planes: int, stride: int, block: str = "wrn"):
        super().__init__()
        cls, expansion, activation = BLOCKS[block]
        self.layer = nn.Sequential(*[cls(in_planes if i == 0 else expansion * planes, planes,
                                         stride if i == 0 else 1, activation) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class PreActResNet(nn.Module):
    """Stem 3x3 conv (16 channels), three stages of ``depths`` blocks at 16·w1, 32·w2, 64·w3 channels
    (strides 1, 2, 2; a ``robust_res`` stage outputs 4x as many), BN-act, global average pool, linear;
    inputs already normalised. ``block``: ``wrn`` (basic, SiLU) or ``robust_res`` (RobustResBlock, ReLU)."""

    def __init__(self, depths: tuple[int, int, int], widths: tuple[int, int, int], num_classes: int = 10,
                 block: str = "wrn"):
        super().__init__()
        _, expansion, activation = BLOCKS[block]
        planes = [16 * widths[0], 32 * widths[1], 64 * widths[2]]
        inputs = [16] + [expansion * p for p in planes]
        self.stem_conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.blocks = nn.ModuleList(NetworkBlock(d, inputs[i], planes[i], 1 if i == 0 else 2, block)
                                    for i, d in enumerate(depths))
        self.norm1 = nn.BatchNorm2d(inputs[3])
        self.act1 = activation(inplace=True)
        self.fc = nn.Linear(inputs[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_conv(x)
        for block in self.blocks:
            out = block(out)
        out = self.act1(self.norm1(out))
        return self.fc(out.mean((2, 3)))


def _register_preset(name: str, depths: tuple, widths: tuple, block: str) -> None:
    described = ("WRN-{}: depths {}, widening {} (RobustScaling; RobustBench Huang2022Revisiting layout)"
                 if block == "wrn" else "RobustResNet-{}: depths {}, widening {} (RobustScaling, RobustResBlocks)")

    @register_teacher(f"{'wrn' if block == 'wrn' else 'robustresnet'}-{name.lower()}",
                      description=described.format(name, depths, widths), input_size=32, num_classes=None,
                      mean=CIFAR10_MEAN, std=CIFAR10_STD, any_size=True,
                      size=lambda num_classes: BASES[block].cost(Layout(depths, widths), num_classes))
    def build(num_classes: int) -> PreActResNet:
        return PreActResNet(depths, widths, num_classes, block)


for _block in BLOCKS:
    for _name, _preset in PRESETS.items():
        _register_preset(_name, _preset.depths, _preset.widths, _block)


def _layout_cost(base: str, num_classes: int, d1, d2, d3, w1, w2, w3) -> tuple[int, int]:
    return BASES[base].cost(Layout((d1, d2, d3), (w1, w2, w3)), num_classes)


def _layout_problem(d1, d2, d3, w1, w2, w3) -> str | None:
    return "every stage needs depth and widening factor >= 1" if min(d1, d2, d3, w1, w2, w3) < 1 else None


@register_teacher("wrn-a-<d1>-<d2>-<d3>-<w1>-<w2>-<w3>", description="pre-activation WRN, depths <d1>-<d2>-<d3>, "
                  "widening <w1>-<w2>-<w3> (WRN-A layout)", input_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                  any_size=True, example="wrn-a-14-14-7-5-7-3", check=_layout_problem,
                  size=lambda num_classes, **v: _layout_cost("wrn", num_classes, **v))
def wrn_a_layout(num_classes: int, d1: int, d2: int, d3: int, w1: int, w2: int, w3: int) -> PreActResNet:
    return PreActResNet((d1, d2, d3), (w1, w2, w3), num_classes)


@register_teacher("robustresnet-a-<d1>-<d2>-<d3>-<w1>-<w2>-<w3>", description="RobustResNet, depths <d1>-<d2>-<d3>, "
                  "widening <w1>-<w2>-<w3> (RobustResBlocks)", input_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                  any_size=True, example="robustresnet-a-14-14-7-5-7-3", check=_layout_problem,
                  size=lambda num_classes, **v: _layout_cost("robust_res", num_classes, **v))
def robustresnet_a_layout(num_classes: int, d1: int, d2: int, d3: int, w1: int, w2: int, w3: int) -> PreActResNet:
    return PreActResNet((d1, d2, d3), (w1, w2, w3), num_classes, "robust_res")
