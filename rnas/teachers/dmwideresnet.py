"""DeepMind's WideResNet and pre-activation ResNet-18 (Gowal et al. 2020, Rebuffi et al. 2021), with the class
and key names of RobustBench's ``DMWideResNet`` / ``DMPreActResNet`` (init_conv, layer.0.block.0.batchnorm_0,
..., batchnorm, logits): the architecture of most top CIFAR entries of the RobustBench leaderboard. Their
"SAME" padding of a strided conv is (0, 1, 0, 1), done by hand as in the original; the activation is ReLU or
Swish (x·sigmoid(x), ``nn.SiLU``). The normalisation their checkpoints carry (``mean`` / ``std``) is applied
by the teacher wrapper (rnas.teachers.checkpoint reads it from the file)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rnas.teachers.registry import register_teacher

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU}


def _same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class DMBlock(nn.Module):
    """Pre-activation WRN block; a 1×1 ``shortcut`` (reading the pre-activated input) when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.batchnorm_0, self.relu_0 = nn.BatchNorm2d(in_planes), act()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1, self.relu_1 = nn.BatchNorm2d(out_planes), act()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if self.has_shortcut else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu_0(self.batchnorm_0(x))
        if self.has_shortcut:
            x = out
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(_same_pad(out, self.stride)))))
        return (self.shortcut(x) if self.has_shortcut else x) + out


class DMBlockGroup(nn.Module):
    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.block = nn.Sequential(*[DMBlock(in_planes if i == 0 else out_planes, out_planes,
                                             stride if i == 0 else 1, act) for i in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """WRN-depth-width, ``depth = 6n + 4``, for 32×32 inputs in [0, 1] after normalisation."""

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, activation: str = "relu"):
        super().__init__()
        act = ACTIVATIONS[activation]
        channels, blocks = [16, 16 * width, 32 * width, 64 * width], (depth - 4) // 6
        self.init_conv = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(*[DMBlockGroup(blocks, channels[i], channels[i + 1], 1 if i == 0 else 2, act)
                                     for i in range(3)])
        self.batchnorm, self.relu = nn.BatchNorm2d(channels[3]), act()
        self.logits = nn.Linear(channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.batchnorm(self.layer(self.init_conv(x))))
        return self.logits(F.adaptive_avg_pool2d(out, 1).flatten(1))


class DMPreActBlock(nn.Module):
    """Pre-activation ResNet block; a 3×3 ``shortcut`` on the raw input when the shape changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.stride = stride
        self.batchnorm_0, self.relu_0 = nn.BatchNorm2d(in_planes), act()
        self.conv_2d_1 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1, self.relu_1 = nn.BatchNorm2d(out_planes), act()
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.has_shortcut = stride != 1 or in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu_0(self.batchnorm_0(x))
        shortcut = self.shortcut(_same_pad(x, self.stride)) if self.has_shortcut else x
        out = self.conv_2d_1(_same_pad(out, self.stride))
        return self.conv_2d_2(self.relu_1(self.batchnorm_1(out))) + shortcut


class DMPreActResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, activation: str = "relu"):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.conv_2d = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        widths = (64, 64, 128, 256, 512)
        for i in range(4):
            blocks = [DMPreActBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1],
                                    (1 if i == 0 else 2) if j == 0 else 1, act) for j in range(2)]
            setattr(self, f"layer_{i}", nn.Sequential(*blocks))
        self.batchnorm, self.relu = nn.BatchNorm2d(512), act()
        self.logits = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_2d(x)
        for i in range(4):
            out = getattr(self, f"layer_{i}")(out)
        out = self.relu(self.batchnorm(out))
        return self.logits(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _depth_problem(depth: int, width: int) -> str | None:
    return f"DM WideResNet depth must be 6n+4 (e.g. 28, 34, 70, 106), got {depth}" if (depth - 4) % 6 else None


for _act in ACTIVATIONS:
    _tag = "" if _act == "relu" else f"-{_act}"
    register_teacher(f"dm-wrn{_tag}-<depth>-<width>", description=f"DeepMind WideResNet-<depth>-<width>, {_act} "
                     "(RobustBench's DMWideResNet)", input_size=32, any_size=True, example=f"dm-wrn{_tag}-28-10",
                     check=_depth_problem)(
        lambda num_classes, depth, width, _a=_act: DMWideResNet(depth, width, num_classes, _a))
    register_teacher(f"dm-preact-r18{_tag}", description=f"DeepMind pre-activation ResNet-18, {_act} (RobustBench's "
                     "DMPreActResNet)", input_size=32, any_size=True)(
        lambda num_classes, _a=_act: DMPreActResNet18(num_classes, _a))
