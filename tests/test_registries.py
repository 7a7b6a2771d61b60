"""The attack and teacher registries: one entry added here (and nowhere else) is checked, run, loaded and
listed like a built-in one; `rnas eval --list-attacks` and `rnas teachers --json` print the registries."""
import json

import pytest
import torch
from helpers import main_in_process
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rnas.errors import UserError
from rnas.evaluation.evaluate import batch_generator, evaluate
from rnas.robust.attacks import (
    ATTACKS,
    attack_eps,
    attack_steps,
    check_attack,
    register_attack,
    run_attack,
    takes_channel_budget,
    unregister_attack,
)
from rnas.teachers import TEACHERS, Teacher, load_teacher, register_teacher, teacher_arch, unregister_teacher

EPS = 8 / 255


def uniform_noise(model, x, y, eps, generator=None):
    """Uniform noise in the eps-box, clipped to [0, 1]: the weakest l_inf attack."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + (2 * noise - 1) * eps).clamp(0, 1)


@pytest.fixture
def noise_attack():
    before = list(ATTACKS)
    register_attack("noise", threat="linf", description="uniform noise in the eps-box (test)")(uniform_noise)
    yield ATTACKS["noise"]
    unregister_attack("noise")
    assert list(ATTACKS) == before


class TinyNet(nn.Module):
    """Mean colour per 4x4 cell -> linear: ``width`` hidden units, any input size."""

    def __init__(self, num_classes, width):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, width), nn.ReLU(),
                                 nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


TINY_MEAN, TINY_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def tiny_teacher():
    before = list(TEACHERS)
    register_teacher("tiny-<width>", description="TinyNet-<width> (test)", input_size=32, num_classes=10,
                     mean=TINY_MEAN, std=TINY_STD, example="tiny-8",
                     check=lambda width: None if width > 0 else "width must be >= 1")(TinyNet)
    yield TEACHERS[-1]
    unregister_teacher("tiny-<width>")
    assert TEACHERS == before


def linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def test_registered_attack_is_checked_run_and_evaluated(noise_attack):
    assert check_attack("noise") == "noise"
    assert attack_steps("noise") is None and attack_eps("noise", EPS) == EPS and takes_channel_budget("noise")
    model = linear_model().train()
    torch.manual_seed(1)
    x, y = torch.rand(24, 3, 8, 8), torch.randint(0, 10, (24,))
    x_adv = run_attack("noise", model, x, y, EPS, seed=5)
    assert torch.equal(x_adv, uniform_noise(model, x, y, EPS, torch.Generator().manual_seed(5)))
    assert 0 < (x_adv - x).abs().max() <= EPS + 1e-7

    def batches():
        yield x[:16], y[:16]
        yield x[16:], y[16:]

    rows = evaluate(model, batches, ["clean", "noise"], [EPS, 2 * EPS], seed=3)
    assert [(r["attack"], r["eps"], r["n"]) for r in rows] == [("clean", 0.0, 24), ("noise", EPS, 24),
                                                               ("noise", 2 * EPS, 24)]
    assert all("steps" not in r for r in rows)
    with torch.no_grad():
        for row in rows[1:]:
            correct = sum((model(uniform_noise(model, xb, yb, row["eps"], batch_generator("cpu", 3, i))).argmax(1)
                           == yb).sum().item() for i, (xb, yb) in enumerate(batches()))
            assert row["accuracy"] == round(100 * correct / 24, 2)
    scale = torch.tensor([0.5, 1.0, 0.25]).view(1, 3, 1, 1)  # per-channel budget: accepted, recorded
    (row,) = evaluate(model, batches, ["noise"], [EPS], eps_scale=scale)
    assert row["pixel_eps"] == pytest.approx([EPS / 2, EPS, EPS / 4])


def test_unknown_attack_lists_the_registry(noise_attack):
    with pytest.raises(UserError, match=r"unknown attack 'nois' \(clean, fgsm, pgd<steps> e\.g\. pgd20, .*, noise\)"):
        check_attack("nois")


def list_attacks(capsys) -> dict[str, dict]:
    code, err = main_in_process("eval", "--list-attacks")
    assert code == 0 and err == ""
    header, *lines = capsys.readouterr().out.splitlines()
    keys = [k.replace(" ", "_") for k in header.split("  ") if k.strip()]
    keys = [k.strip("_") for k in keys]
    assert keys == ["name", "threat", "default_eps", "steps", "step", "description"]
    rows = [dict(zip(keys, [c.strip() for c in line.split("  ") if c.strip()], strict=True)) for line in lines]
    return {r["name"]: r for r in rows}


def test_list_attacks_matches_the_registry(capsys):
    listed = list_attacks(capsys)
    assert list(listed) == list(ATTACKS)
    for name, info in ATTACKS.items():
        row = listed[name]
        assert row["threat"] == info.threat and row["description"] == info.description
        eps = {"--eps": None, "-": 0.0}.get(row["default_eps"]) if row["default_eps"] in ("--eps", "-") \
            else float(row["default_eps"])
        assert eps == info.default_eps, name
    assert (listed["autoattack-l2"]["default_eps"], listed["autoattack-l1"]["default_eps"]) == ("0.5", "12")
    assert (listed["cw"]["steps"], listed["mifgsm"]["steps"], listed["pgd<steps>"]["steps"]) == ("40", "10", "<steps>")


def test_list_attacks_shows_a_registered_attack(noise_attack, capsys):
    row = list_attacks(capsys)["noise"]
    assert row == {"name": "noise", "threat": "linf", "default_eps": "--eps", "steps": "-", "step": "-",
                   "description": "uniform noise in the eps-box (test)"}


def test_eval_without_checkpoint_is_one_line():
    code, err = main_in_process("eval")
    assert code == 2 and err.count("\n") == 1 and "give CKPT" in err


def test_registered_teacher_resolves_loads_and_round_trips(tiny_teacher, tmp_path):
    arch = teacher_arch("tiny-8", "cifar10")
    assert arch.description == "TinyNet-8 (test)" and (arch.mean, arch.std) == (TINY_MEAN, TINY_STD)
    assert arch.build(7).net[-1].out_features == 7 and arch.build(7).net[2].out_features == 8
    teacher = load_teacher("tiny-8", dataset="cifar100")
    assert isinstance(teacher, Teacher) and teacher.net.net[-1].out_features == 100
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(TINY_MEAN).view(1, 3, 1, 1), torch.tensor(TINY_STD).view(1, 3, 1, 1)
    assert torch.allclose(teacher(x), teacher.net((x - mean) / std))
    torch.save({"state_dict": teacher.net.state_dict()}, tmp_path / "tiny.pt")
    loaded = load_teacher("tiny-8", tmp_path / "tiny.pt", dataset="cifar100")
    assert torch.equal(loaded(x), teacher(x))
    with pytest.raises(UserError, match=r"^teacher 'tiny-0': width must be >= 1$"):
        teacher_arch("tiny-0", "cifar10")
    with pytest.raises(UserError, match=r"unknown teacher 'tiny' \(known: .*tiny-<width> e\.g\. tiny-8"):
        load_teacher("tiny")


def teachers_json(capsys) -> list[dict]:
    code, err = main_in_process("teachers", "--json")
    assert code == 0 and err == ""
    return json.loads(capsys.readouterr().out)


def test_teachers_json_matches_the_registry(capsys):
    listed = teachers_json(capsys)
    assert sorted((t["name"], t["input_size"]) for t in listed) == sorted((t.name, t.input_size) for t in TEACHERS)
    assert {k for t in listed for k in t} == {"name", "description", "input_size", "num_classes", "mean", "std",
                                              "any_size", "example", "params", "macs"}
    by_key = {(t["name"], t["input_size"]): t for t in listed}
    assert by_key["wrt34", 32]["mean"] == [0.4914, 0.4822, 0.4465] and by_key["wrt34", 32]["num_classes"] == 10
    assert by_key["wrn-<depth>-<widen>", 32]["mean"] is None and by_key["r18", 224]["num_classes"] == 1000
    code, err = main_in_process("teachers")
    table = capsys.readouterr().out.splitlines()
    assert code == 0 and len(table) == len(TEACHERS) + 1 and table[0].split()[:3] == ["name", "input", "classes"]


def test_teachers_json_shows_a_registered_teacher(tiny_teacher, capsys):
    (row,) = [t for t in teachers_json(capsys) if t["name"] == "tiny-<width>"]
    net = teacher_arch("tiny-8", "cifar10").build(10)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32))
    assert row == {"name": "tiny-<width>", "description": "TinyNet-<width> (test)", "input_size": 32,
                   "num_classes": 10, "mean": list(TINY_MEAN), "std": list(TINY_STD), "any_size": False,
                   "example": "tiny-8", "params": sum(p.numel() for p in net.parameters()),
                   "macs": counter.get_total_flops() // 2}


def test_teacher_of_another_image_size_is_refused(tiny_teacher):
    with pytest.raises(UserError, match=r"teacher 'tiny-8' \(TinyNet-8 \(test\)\) is an architecture for 32x32 "
                                        r"images, not imagenet100"):
        teacher_arch("tiny-8", "imagenet100")
    assert teacher_arch("wrn-16-2", "imagenet100").description == "WideResNet-16-2 (RobustBench layout)"


def test_registering_a_name_twice_is_refused(noise_attack, tiny_teacher):
    with pytest.raises(ValueError, match="already registered"):
        register_attack("noise", threat="linf", description="again")(uniform_noise)
    with pytest.raises(ValueError, match="already registered"):
        register_teacher("tiny-<width>", description="again", input_size=32)(TinyNet)
