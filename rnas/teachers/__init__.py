"""The teacher zoo: names -> architectures (a registry), checkpoint loading, and the frozen wrapper
that takes images in [0, 1] with normalisation inside."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from supernets import Normalize

from ..errors import UserError
from .checkpoint import load_into, read_checkpoint, resolve_checkpoint
from .resnet import CifarResNet50, PreActResNet18
from .wideresnet import WideResNet

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet100": 100, "imagenet": 1000, "digits": 10}
SMALL_IMAGE_DATASETS = ("cifar10", "cifar100", "digits")


@dataclass(frozen=True)
class TeacherArch:
    """An architecture for one input regime, and the normalisation its checkpoints expect by default."""

    description: str
    build: Callable[[int], nn.Module]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    return build


def teacher_arch(name: str, dataset: str) -> TeacherArch:
    """Resolve a teacher name for a dataset: wrt34, wrn-D-K, r18, r50, wrt50."""
    small = dataset in SMALL_IMAGE_DATASETS
    wrn = re.fullmatch(r"wrn-(\d+)-(\d+)", name)
    if name == "wrt34":  # Rice et al. train with CIFAR-10 normalisation outside the model: put it inside
        return TeacherArch("WideResNet-34-10 (Rice et al.)", lambda n: WideResNet(34, 10, n), CIFAR10_MEAN, CIFAR10_STD)
    if wrn:
        depth, widen = int(wrn[1]), int(wrn[2])
        if (depth - 4) % 6:
            raise UserError(f"teacher {name!r}: WideResNet depth must be 6n+4 (e.g. 16, 28, 34), got {depth}")
        return TeacherArch(f"WideResNet-{depth}-{widen} (RobustBench layout)", lambda n: WideResNet(depth, widen, n))
    if name == "r18":
        if small:
            return TeacherArch("PreActResNet-18 (32x32)", PreActResNet18)
        return TeacherArch("ResNet-18 (torchvision)", _torchvision("resnet18"), IMAGENET_MEAN, IMAGENET_STD)
    if name == "r50":
        if small:
            return TeacherArch("ResNet-50 (robustness library, 32x32)", CifarResNet50,
                               CIFAR10_MEAN, (0.2023, 0.1994, 0.2010))
        return TeacherArch("ResNet-50 (torchvision)", _torchvision("resnet50"), IMAGENET_MEAN, IMAGENET_STD)
    if name == "wrt50":
        if small:
            raise UserError("teacher 'wrt50' (WideResNet-50-2) is an ImageNet architecture; use --dataset imagenet100")
        return TeacherArch("WideResNet-50-2 (torchvision)", _torchvision("wide_resnet50_2"),
                           IMAGENET_MEAN, IMAGENET_STD)
    raise UserError(f"unknown teacher {name!r} (known: wrt34, wrn-D-K e.g. wrn-16-2, r18, r50, wrt50)")


class Teacher(nn.Module):
    """A frozen teacher: images in [0, 1] -> logits. Normalisation is inside, it stays in eval mode
    (``train()`` is a no-op) and its parameters never require grad."""

    def __init__(self, net: nn.Module, mean=None, std=None, name: str = "teacher"):
        super().__init__()
        self.name = name
        self.normalize = Normalize(mean, std) if mean is not None else nn.Identity()
        self.net = net
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def load_teacher(name: str, checkpoint: str | Path | None = None, model_dir: str | Path | None = None,
                 dataset: str = "cifar10", threat: str = "Linf", num_classes: int | None = None,
                 mean=None, std=None) -> Teacher:
    """The wrapped teacher (an nn.Module on [0, 1] images). ``checkpoint``: a file, or a RobustBench
    model name looked up as ``<model_dir>/<dataset>/<threat>/<name>.pt``; None gives random weights.
    Normalisation: ``mean``/``std`` if given, else the checkpoint's own buffers, else the architecture's."""
    if dataset not in DATASET_CLASSES:
        raise UserError(f"unknown dataset {dataset!r} (known: {', '.join(DATASET_CLASSES)})")
    arch = teacher_arch(name, dataset)
    net = arch.build(num_classes or DATASET_CLASSES[dataset])
    found: dict = {}
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint, model_dir, dataset, threat)
        state, found = read_checkpoint(path)
        load_into(net, state, path, f"{name} = {arch.description}")
    if (mean is None) != (std is None):
        raise UserError("teacher normalisation: give both mean and std, or neither")
    if mean is None:
        mean, std = found.get("mean", arch.mean), found.get("std", arch.std)
    if mean is not None:
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    return Teacher(net, mean, std, name)
