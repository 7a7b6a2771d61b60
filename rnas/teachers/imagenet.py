"""torchvision's ImageNet architectures (robustness-library checkpoints) as 224x224 teachers."""
from __future__ import annotations

from torch import nn

from rnas.teachers.registry import IMAGENET_MEAN, IMAGENET_STD, register_teacher


def _torchvision(name: str, num_classes: int) -> nn.Module:
    """torchvision.models.<name> with random weights and ``num_classes`` outputs."""
    import torchvision

    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)


_IMAGENET = {"input_size": 224, "num_classes": 1000, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


@register_teacher("r18", description="ResNet-18 (torchvision)", **_IMAGENET)
def resnet18(num_classes: int) -> nn.Module:
    return _torchvision("resnet18", num_classes)


@register_teacher("r50", description="ResNet-50 (torchvision)", **_IMAGENET)
def resnet50(num_classes: int) -> nn.Module:
    return _torchvision("resnet50", num_classes)


@register_teacher("wrt50", description="WideResNet-50-2 (torchvision)", **_IMAGENET)
def wide_resnet50_2(num_classes: int) -> nn.Module:
    return _torchvision("wide_resnet50_2", num_classes)
