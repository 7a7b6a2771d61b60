"""RobustBench leaderboard entries by name: a checkpoint written by RobustBench's own DMWideResNet /
DMPreActResNet (re-implemented below from RobustBench's published model zoo, with its key names, manual "SAME"
padding and Swish) loads with --teacher robustbench:NAME (or the bare NAME) from MODEL_DIR/cifar10/Linf and gives
the same logits as the original class."""
from typing import Tuple, Type, Union  # noqa: UP035 - the layout as RobustBench publishes it

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import randomize_batchnorm

from rnas.errors import UserError
from rnas.teachers import load_teacher
from rnas.teachers.resolve import default_checkpoint
from rnas.teachers.robustbench import ENTRIES

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class _Swish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i):
        result = i * torch.sigmoid(i)
        ctx.save_for_backward(i)
        return result


class Swish(nn.Module):
    def forward(self, input_tensor):
        return _Swish.apply(input_tensor)


class _Block(nn.Module):
    def __init__(self, in_planes, out_planes, stride, activation_fn: Type[nn.Module] = nn.ReLU):  # noqa: UP006
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = activation_fn()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = activation_fn()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        else:
            self.shortcut = None
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
        else:
            out = self.relu_0(self.batchnorm_0(x))
        v = x if self.has_shortcut else out
        if self._stride == 1:
            v = F.pad(v, (1, 1, 1, 1))
        elif self._stride == 2:
            v = F.pad(v, (0, 1, 0, 1))
        out = self.conv_0(v)
        out = self.relu_1(self.batchnorm_1(out))
        out = self.conv_1(out)
        return torch.add(self.shortcut(x) if self.has_shortcut else x, out)


class _BlockGroup(nn.Module):
    def __init__(self, num_blocks, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self.block = nn.Sequential(*[_Block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1,
                                            activation_fn=activation_fn) for i in range(num_blocks)])

    def forward(self, x):
        return self.block(x)


class DMWideResNet(nn.Module):
    def __init__(self, num_classes: int = 10, depth: int = 28, width: int = 10,
                 activation_fn: Type[nn.Module] = nn.ReLU,  # noqa: UP006
                 mean: Union[Tuple[float, ...], float] = CIFAR10_MEAN,  # noqa: UP006, UP007
                 std: Union[Tuple[float, ...], float] = CIFAR10_STD):  # noqa: UP006, UP007
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1))
        num_channels = [16, 16 * width, 32 * width, 64 * width]
        num_blocks = (depth - 4) // 6
        self.init_conv = nn.Conv2d(3, num_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            _BlockGroup(num_blocks, num_channels[0], num_channels[1], 1, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[1], num_channels[2], 2, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[2], num_channels[3], 2, activation_fn=activation_fn))
        self.batchnorm = nn.BatchNorm2d(num_channels[3])
        self.relu = activation_fn()
        self.logits = nn.Linear(num_channels[3], num_classes)
        self.num_channels = num_channels[3]

    def forward(self, x):
        out = (x - self.mean) / self.std
        out = self.init_conv(out)
        out = self.layer(out)
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.num_channels)
        return self.logits(out)


class _PreActBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self._stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = activation_fn()
        self.conv_2d_1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = activation_fn()
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)

    def _pad(self, x):
        return F.pad(x, (1, 1, 1, 1)) if self._stride == 1 else F.pad(x, (0, 1, 0, 1))

    def forward(self, x):
        out = self.relu_0(self.batchnorm_0(x))
        shortcut = self.shortcut(self._pad(x)) if self.has_shortcut else x
        out = self.conv_2d_1(self._pad(out))
        out = self.conv_2d_2(self.relu_1(self.batchnorm_1(out)))
        return out + shortcut


class DMPreActResNet(nn.Module):
    def __init__(self, num_classes=10, activation_fn=nn.ReLU, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1))
        self.conv_2d = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer_0 = self._make_layer(64, 64, 2, 1, activation_fn)
        self.layer_1 = self._make_layer(64, 128, 2, 2, activation_fn)
        self.layer_2 = self._make_layer(128, 256, 2, 2, activation_fn)
        self.layer_3 = self._make_layer(256, 512, 2, 2, activation_fn)
        self.batchnorm = nn.BatchNorm2d(512)
        self.relu = activation_fn()
        self.logits = nn.Linear(512, num_classes)

    def _make_layer(self, in_planes, out_planes, num_blocks, stride, activation_fn):
        return nn.Sequential(*[_PreActBlock(i == 0 and in_planes or out_planes, out_planes, s, activation_fn)
                               for i, s in enumerate([stride] + [1] * (num_blocks - 1))])

    def forward(self, x):
        out = (x - self.mean) / self.std
        out = self.conv_2d(out)
        out = self.layer_3(self.layer_2(self.layer_1(self.layer_0(out))))
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 4)
        return self.logits(out.view(out.size(0), -1))


def _written_by_robustbench(model_dir, name: str, net: nn.Module, dataset: str = "cifar10") -> nn.Module:
    randomize_batchnorm(net).eval()
    path = model_dir / dataset / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net


CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # RobustBench's dm_wide_resnet


@pytest.mark.parametrize(("name", "build", "dataset"), [
    ("Rebuffi2021Fixing_28_10_cutmix_ddpm", lambda: DMWideResNet(10, 28, 10, activation_fn=Swish), "cifar10"),
    ("Rebuffi2021Fixing_R18_ddpm", lambda: DMPreActResNet(10, activation_fn=Swish), "cifar10"),
    ("Rade2021Helper_R18_ddpm", lambda: DMPreActResNet(100, Swish, CIFAR100_MEAN, CIFAR100_STD), "cifar100"),
])
def test_a_robustbench_checkpoint_loads_by_name_with_the_same_logits(tmp_path, name, build, dataset):
    torch.manual_seed(0)
    original = _written_by_robustbench(tmp_path, name, build(), dataset)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = original(x)
    for spelled in (f"robustbench:{name}", name):
        teacher = load_teacher(spelled, None, tmp_path, dataset, "Linf")  # the checkpoint: the entry's own name
        with torch.no_grad():
            got = teacher(x)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()


def test_unknown_entries_and_the_default_checkpoint():
    assert default_checkpoint("robustbench:Carmon2019Unlabeled", "cifar10", "Linf") == "Carmon2019Unlabeled"
    assert default_checkpoint("wrn-28-10", "cifar10", "Linf") is None
    with pytest.raises(UserError, match=r"^--teacher robustbench:Nobody2099: not a supported RobustBench cifar10 Linf"):
        load_teacher("robustbench:Nobody2099", None, None, "cifar10", "Linf")
    with pytest.raises(UserError, match="no RobustBench entries for cifar100 L2"):
        load_teacher("robustbench:Carmon2019Unlabeled", None, None, "cifar100", "L2")
    assert len(ENTRIES[("cifar10", "Linf")]) >= 40 and len(ENTRIES[("cifar10", "L2")]) >= 10
    assert default_checkpoint("Rebuffi2021Fixing_28_10_cutmix_ddpm", "cifar100", "Linf") is not None
    assert len(ENTRIES[("cifar100", "Linf")]) == 15


@pytest.mark.parametrize(("name", "mean", "std"), [
    ("Hendrycks2019Using", [0.5] * 3, [0.5] * 3),  # RobustBench's forward: 2x - 1
    ("Wu2020Adversarial", [0.5070751592371323, 0.48654887331495095, 0.4409178433670343],
     [0.2673342858792401, 0.2564384629170883, 0.27615047132568404]),
    ("Sitawarin2020Improving", None, None),  # reads [0, 1] images as they are
])
def test_cifar100_entries_apply_their_robustbench_normalisation(name, mean, std):
    teacher = load_teacher(f"robustbench:{name}", None, None, "cifar100", "Linf")  # no weights: the layout only
    if mean is None:
        assert isinstance(teacher.normalize, nn.Identity)
    else:
        assert torch.allclose(teacher.normalize.mean.flatten(), torch.tensor(mean))
        assert torch.allclose(teacher.normalize.std.flatten(), torch.tensor(std))
    assert teacher(torch.rand(1, 3, 32, 32)).shape == (1, 100)


def test_a_timm_model_is_a_teacher_with_its_pretrained_normalisation(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = randomize_batchnorm(timm.create_model("resnet18", pretrained=False, num_classes=10)).eval()
    torch.save(original.state_dict(), tmp_path / "resnet18.pt")
    teacher = load_teacher("timm:resnet18", tmp_path / "resnet18.pt", None, "cifar10", "Linf")
    cfg = timm.models.get_pretrained_cfg("resnet18")
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(teacher(x), original((x - mean) / std), atol=1e-5)
    with pytest.raises(UserError, match="not a timm model name"):
        load_teacher("timm:no-such-net", None, None, "cifar10", "Linf")
