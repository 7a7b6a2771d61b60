"""The teacher zoo: the registry (names -> architectures, in registry.py, filled by each architecture
file), checkpoint loading, and the frozen wrapper that takes images in [0, 1] with normalisation inside."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from supernets.layers import Normalize

from ..datasets import dataset_info
from ..errors import UserError
from . import imagenet, resnet, wideresnet  # noqa: F401  (each registers its architectures)
from .checkpoint import load_into, read_checkpoint, resolve_checkpoint
from .registry import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TEACHERS,
    TeacherArch,
    TeacherInfo,
    format_teacher_table,
    register_teacher,
    teacher_arch,
    teacher_names,
    teacher_table,
    unregister_teacher,
)

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "TEACHERS", "Teacher", "TeacherArch",
           "TeacherInfo", "format_teacher_table",
           "load_teacher", "register_teacher", "teacher_arch", "teacher_names", "teacher_table",
           "unregister_teacher"]


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
    classes = dataset_info(dataset).num_classes  # an unknown dataset is a one-line error
    arch = teacher_arch(name, dataset)
    net = arch.build(num_classes or classes)
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
