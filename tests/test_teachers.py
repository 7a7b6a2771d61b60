"""Teacher zoo and checkpoint formats: round trips, refusal of code-carrying pickles, key mismatches."""
import collections

import pytest
import torch
from conftest import TINY_BLOCKS, randomize_batchnorm, tiny_spec

from rnas.errors import UserError
from rnas.method.taps import Taps, conv_taps
from rnas.teachers import Teacher, load_teacher
from rnas.teachers.wideresnet import WideResNet
from supernets import Network


def randomized(net):
    return randomize_batchnorm(net).eval()


def test_robustbench_layout_round_trip_with_and_without_module_prefix(tmp_path):
    net = randomized(WideResNet(16, 2, 10))
    x = torch.rand(4, 3, 32, 32)
    expected = net(x)
    layout = tmp_path / "cifar10" / "Linf"
    layout.mkdir(parents=True)
    torch.save({"state_dict": net.state_dict()}, layout / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, layout / "dp.pt")
    torch.save(net.state_dict(), tmp_path / "raw.pt")
    for teacher in (load_teacher("wrn-16-2", "plain", model_dir=tmp_path),
                    load_teacher("wrn-16-2", "dp", model_dir=tmp_path),
                    load_teacher("wrn-16-2", tmp_path / "raw.pt")):
        assert isinstance(teacher, Teacher) and not teacher.training
        assert isinstance(teacher.normalize, torch.nn.Identity)  # RobustBench WRNs take raw [0, 1] inputs
        assert torch.equal(teacher(x), expected)


def test_mu_sigma_buffers_become_the_normalisation(tmp_path):
    net = randomized(WideResNet(16, 2, 10))
    state = dict(net.state_dict(), mu=torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
                 sigma=torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1))
    torch.save({"state_dict": state}, tmp_path / "mu.pt")
    teacher = load_teacher("wrn-16-2", tmp_path / "mu.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(teacher(x), net((x - state["mu"]) / state["sigma"]))


def test_robustness_library_imagenet_format(tmp_path):
    import torchvision

    net = randomized(torchvision.models.resnet18(num_classes=100))
    mean, std = torch.tensor([0.48, 0.45, 0.4]), torch.tensor([0.23, 0.22, 0.225])
    state = collections.OrderedDict()
    state["module.normalizer.new_mean"] = mean.view(3, 1, 1)
    state["module.normalizer.new_std"] = std.view(3, 1, 1)
    for k, v in net.state_dict().items():
        state[f"module.model.{k}"] = v
        state[f"module.attacker.model.{k}"] = v
    state["module.attacker.normalize.new_mean"] = mean.view(3, 1, 1)
    torch.save({"model": state, "epoch": 90}, tmp_path / "robust_r18.ckpt")
    teacher = load_teacher("r18", tmp_path / "robust_r18.ckpt", dataset="imagenet100")
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(teacher(x), net((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)))


def test_prefix_is_stripped_only_as_prefix(tmp_path):
    net = randomized(WideResNet(16, 2, 10))
    # a key that merely contains "module." must not be rewritten: the file then does not fit
    state = {k.replace("block1.", "block1.module.") if k.startswith("block1.") else k: v
             for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(UserError, match=r"unexpected keys block1\.module\.layer"):
        load_teacher("wrn-16-2", tmp_path / "odd.pt")


def test_code_carrying_pickle_is_refused(tmp_path):
    torch.save(WideResNet(16, 1, 10), tmp_path / "whole_model.pt")  # pickles the class: needs code to load
    with pytest.raises(UserError, match=r"whole_model.pt: refused: the file needs arbitrary code to unpickle"):
        load_teacher("wrn-16-1", tmp_path / "whole_model.pt")


def test_key_mismatch_and_wrong_num_classes_are_one_line(tmp_path):
    net = WideResNet(16, 2, 10)
    state = net.state_dict()
    del state["block2.layer.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(UserError) as info:
        load_teacher("wrn-16-2", tmp_path / "bad.pt")
    message = str(info.value)
    assert "\n" not in message and "WideResNet-16-2" in message
    assert "missing keys block2.layer.0.conv1.weight" in message and "unexpected keys extra.weight" in message
    torch.save(WideResNet(16, 2, 10).state_dict(), tmp_path / "c10.pt")
    with pytest.raises(UserError, match=r"fc.weight has shape \(10, 128\), the architecture expects \(100, 128\)"):
        load_teacher("wrn-16-2", tmp_path / "c10.pt", dataset="cifar100")
    with pytest.raises(UserError, match="no file .*cifar10/Linf/absent.pt"):
        load_teacher("wrn-16-2", "absent", model_dir=tmp_path)
    with pytest.raises(UserError, match="unknown teacher 'vgg'"):
        load_teacher("vgg")


def test_teacher_is_frozen_in_eval_mode():
    teacher = load_teacher("wrn-16-1")
    teacher.train()
    assert not teacher.training and not teacher.net.training
    assert not any(p.requires_grad for p in teacher.parameters())


def test_wrt34_is_wideresnet_34_10_with_cifar_normalisation_inside():
    teacher = load_teacher("wrt34")
    assert sum(p.numel() for p in teacher.parameters()) == 46_160_474
    assert torch.allclose(teacher.normalize.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    example = torch.zeros(1, 3, 32, 32)
    # conv1 + 3 groups x 5 blocks x 2 convs + 3 shortcut convs
    assert len(conv_taps(teacher, example)) == 34
    names = [n for n, _ in conv_taps(teacher, example, include_shortcuts=False)]
    assert len(names) == 31 and not any("convShortcut" in n for n in names)
    assert names[:3] == ["net.conv1", "net.block1.layer.0.conv1", "net.block1.layer.0.conv2"]


def test_taps_capture_in_execution_order_without_touching_forward():
    teacher = load_teacher("wrn-16-1")
    layers = conv_taps(teacher, torch.zeros(1, 3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    with Taps(layers, transform=lambda a: a.shape[1:]) as taps:
        out = teacher(x)
        shapes = taps.collect()
    assert torch.equal(out, teacher(x))  # the hooks change nothing
    assert shapes[0] == (16, 32, 32) and shapes[-1] == (64, 8, 8)
    assert len(shapes) == len(layers) == 15  # conv1 + 3 groups x 2 blocks x 2 convs + 2 shortcuts
    assert not teacher.net.conv1._forward_hooks  # removed on exit


def test_student_taps_skip_one_by_one_gate_convs():
    net = Network(tiny_spec(TINY_BLOCKS["robust_res"]))
    names = [n for n, _ in conv_taps(net, torch.zeros(1, 3, 16, 16))]
    assert names and not any("se_" in n for n in names)
    assert len(names) == len(net.conv_layers()) - 2 * len(net.blocks)
