"""The teacher zoo: the registry (names -> architectures, in registry.py, filled by each architecture
file), checkpoint loading, and the frozen wrapper that takes images in [0, 1] with normalisation inside."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from rnas.data import class_positions, dataset_info
from rnas.errors import UserError
from rnas.teachers import (  # noqa: F401  (each registers its architectures)
    dmwideresnet,
    imagenet,
    resnet,
    robustresnet,
    wideresnet,
)
from rnas.teachers.checkpoint import load_into, read_checkpoint, resolve_checkpoint
from rnas.teachers.registry import (
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
from rnas.teachers.resolve import default_checkpoint, require_weights, resolve_teacher
from supernets.layers import Normalize

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "TEACHERS", "Teacher", "TeacherArch",
           "TeacherInfo", "TrainableTeacher", "default_checkpoint", "format_teacher_table", "load_teacher",
           "register_teacher", "require_weights", "resolve_teacher", "teacher_arch", "teacher_names",
           "teacher_table", "unregister_teacher"]


class Teacher(nn.Module):
    """A frozen teacher: images in [0, 1] -> logits. Normalisation is inside, it stays in eval mode
    (``train()`` is a no-op) and its parameters never require grad. With ``class_index`` it returns only
    the net's logits at those positions, in that order: the data's classes among the classes of the dataset
    ``class_subset`` that the net was trained on (e.g. ImageNet-100's among ImageNet-1k's)."""

    def __init__(self, net: nn.Module, mean=None, std=None, name: str = "teacher", class_index=None,
                 class_subset: str | None = None):
        super().__init__()
        self.name, self.class_subset = name, class_subset
        self.normalize = Normalize(mean, std) if mean is not None else nn.Identity()
        self.net = net
        index = None if class_index is None else torch.as_tensor(class_index, dtype=torch.long)
        self.register_buffer("class_index", index, persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.normalize(x))
        return logits if self.class_index is None else logits.index_select(1, self.class_index)

    def extra_repr(self) -> str:
        if self.class_index is None:
            return ""
        return f"class_subset={self.class_subset!r}, {len(self.class_index)} of its outputs"


class TrainableTeacher(nn.Module):
    """A teacher architecture as ``rnas teacher train`` trains it: images in [0, 1], the architecture's own
    normalisation (its checkpoints expect it, e.g. WRN-A's CIFAR-10 statistics) in front of ``net``, whose
    state dict is what the RobustBench-layout checkpoint holds (loaded later with that same normalisation)."""

    def __init__(self, arch: TeacherArch, num_classes: int):
        super().__init__()
        self.normalize = Normalize(arch.mean, arch.std) if arch.mean is not None else nn.Identity()
        self.net = arch.build(num_classes)
        self.register_load_state_dict_pre_hook(_bare_net_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _bare_net_keys(module, state_dict, prefix, *_) -> None:
    """A checkpoint of ``rnas teacher train`` from before ``TrainableTeacher`` holds the bare net's keys (its
    nets had no normalisation in front): read them as ``net.*``."""
    if any(k.startswith(prefix + "net.") for k in state_dict):
        return
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "normalize.")]:
        state_dict[prefix + "net." + key[len(prefix):]] = state_dict.pop(key)


def _checkpoint_outputs(net: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """Outputs of the checkpoint's classifier: the rows of its tensor under the key of ``net``'s classifier
    (the net's last 2-D ``*.weight``); None when there is no such pair."""
    key = next((k for k, v in reversed(net.state_dict().items()) if k.endswith(".weight") and v.dim() == 2), None)
    weight = state.get(key)
    return weight.shape[0] if weight is not None and weight.dim() == 2 else None


def load_teacher(name: str, checkpoint: str | Path | None = None, model_dir: str | Path | None = None,
                 dataset: str = "cifar10", threat: str = "Linf", num_classes: int | None = None,
                 mean=None, std=None) -> Teacher:
    """The wrapped teacher (an nn.Module on [0, 1] images). ``name``: a zoo architecture or a RobustBench entry
    (``robustbench:NAME``). ``checkpoint``: a file, or a RobustBench model name looked up as
    ``<model_dir>/<dataset>/<threat>/<name>.pt`` (a RobustBench entry's own name by default); None (and no entry)
    gives random weights.
    Normalisation: ``mean``/``std`` if given, else the checkpoint's own buffers, else the architecture's.
    A checkpoint with more outputs than ``dataset`` has classes (an ImageNet-1k one for ImageNet-100) gives
    only the logits of ``dataset``'s classes, in its label order, found by name in the registered dataset of
    that many classes (``teacher.class_subset``); an explicit ``num_classes`` other than the dataset's keeps
    every output."""
    classes = dataset_info(dataset).num_classes  # an unknown dataset is a one-line error
    arch = resolve_teacher(name, dataset, threat)
    if checkpoint is None and (default := default_checkpoint(name, dataset, threat)) is not None and \
            model_dir is not None:
        checkpoint = default  # a RobustBench entry: <model_dir>/<dataset>/<threat>/<name>.pt
    net = arch.build(num_classes or classes)
    found: dict = {}
    subset, index = None, None
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint, model_dir, dataset, threat)
        state, found = read_checkpoint(path)
        outputs = _checkpoint_outputs(net, state)
        if num_classes in (None, classes) and outputs is not None and outputs > classes:
            subset, index = class_positions(dataset, outputs, f"{path}: the classifier of {name}")
            net = arch.build(outputs)
        load_into(net, state, path, f"{name} = {arch.description}")
    if (mean is None) != (std is None):
        raise UserError("teacher normalisation: give both mean and std, or neither")
    where = f"teacher {name}"
    if mean is None:
        mean, std = found.get("mean", arch.mean), found.get("std", arch.std)
        where = f"{path}: its normalisation" if "mean" in found else where
    if mean is not None:
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        _check_normalisation(mean, std, where)
    return Teacher(net, mean, std, name, index, subset)


def _check_normalisation(mean: list[float], std: list[float], where: str) -> None:
    """A mean and std rnas can apply to its RGB images: 3 (or 1) finite values each, every std above 0."""
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise UserError(f"{where}: mean has {len(mean)} and std {len(std)} values; RGB images need 3 each (or 1)")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise UserError(f"{where}: mean {mean} / std {std}: every value must be finite and every std above 0")
