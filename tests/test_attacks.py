"""Attacks: analytic worst case on a linear model, budgets and box, eval mode, monotone strength."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rnas.robust.attacks import CW_STEPS, attack_steps, cw_linf, fgsm, margin_loss, mifgsm, parse_eps, pgd, run_attack

EPS = 8 / 255


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).double()


def test_linear_classifier_worst_case_is_reached_analytically():
    """For f(x) = Wx + b with two classes, the worst l_inf perturbation of the margin z_y - z_o is
    x - eps·sign(w_y - w_o), giving margin (w_y - w_o)·x + b_y - b_o - eps·||w_y - w_o||_1."""
    model = linear_model()
    x = (torch.rand(16, 3, 8, 8, dtype=torch.float64) * (1 - 2 * EPS) + EPS)  # interior: the box never binds
    y = torch.randint(0, 2, (16,))
    w, b = model[1].weight.detach(), model[1].bias.detach()
    direction = w[y] - w[1 - y]                           # (16, 192)
    clean_margin = (direction * x.flatten(1)).sum(1) + b[y] - b[1 - y]
    worst = clean_margin - EPS * direction.abs().sum(1)
    attacks = {"fgsm": fgsm(model, x, y, EPS), "pgd": pgd(model, x, y, EPS, EPS / 4, 20),
               "mifgsm": mifgsm(model, x, y, EPS), "cw": cw_linf(model, x, y, EPS)}
    for name, x_adv in attacks.items():
        with torch.no_grad():
            margin = -margin_loss(model(x_adv), y)
        assert torch.allclose(margin, worst, atol=1e-5), name
        assert torch.allclose(x_adv, x - EPS * direction.sign().view_as(x), atol=1e-9), name


class Probe(nn.Module):
    """A small CNN that records whether it ran in training mode."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))
        self.modes = set()

    def forward(self, x):
        self.modes.add(self.training)
        return self.net(x)


@pytest.mark.parametrize("name", ["fgsm", "pgd20", "mifgsm", "cw", pytest.param("autoattack", marks=pytest.mark.slow)])
def test_budget_box_eval_mode_and_no_parameter_grads(name):
    torch.manual_seed(0)
    model = Probe().train()
    x = torch.rand(8, 3, 8, 8)
    x[0] = 0.0  # corners of the box
    x[1] = 1.0
    y = torch.randint(0, 10, (8,))
    x_adv = run_attack(name, model, x, y, EPS)
    assert (x_adv - x).abs().max() <= EPS + 1e-7
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.modes == {False}  # attacked in eval mode ...
    assert model.training  # ... and restored
    assert all(p.grad is None for p in model.parameters())


def test_autoattack_l2_and_l1_respect_their_budgets():
    torch.manual_seed(0)
    model = Probe().eval()
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    for name, norm, eps in (("autoattack-l2", 2, 0.5), ("autoattack-l1", 1, 12.0)):
        delta = (run_attack(name, model, x, y, EPS) - x).flatten(1)
        assert delta.norm(p=norm, dim=1).max() <= eps + 1e-4


def test_cw_runs_its_step_count_default_40():
    """One forward pass per CW step (no forward for the random start): 40 by default, --cw-steps otherwise."""
    model, calls = Probe().eval(), []
    model.register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    run_attack("cw", model, x, y, EPS)
    assert len(calls) == CW_STEPS == 40
    calls.clear()
    run_attack("cw", model, x, y, EPS, cw_steps=5)
    assert len(calls) == 5
    assert attack_steps("cw", 5) == 5 and attack_steps("pgd20") == 20 and attack_steps("fgsm") is None


def test_random_starts_follow_the_seed():
    model = Probe().eval()
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    for name in ("pgd5", "cw"):
        a = run_attack(name, model, x, y, EPS, cw_steps=2, seed=3)
        torch.manual_seed(99)  # the global RNG plays no part
        b = run_attack(name, model, x, y, EPS, cw_steps=2, seed=3)
        c = run_attack(name, model, x, y, EPS, cw_steps=2, generator=torch.Generator().manual_seed(3))
        d = run_attack(name, model, x, y, EPS, cw_steps=2, seed=4)
        assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, d), name


def test_seed_reaches_autoattack(monkeypatch):
    import pyautoattack

    seen = []

    class Recorder:
        def __init__(self, model, **kwargs):
            seen.append(kwargs)
            self.apgd_targeted, self.fab = SimpleNamespace(n_target_classes=9), SimpleNamespace(n_target_classes=9)

        def run_standard_evaluation(self, x, y, batch_size):
            return x.clone(), None

    monkeypatch.setattr(pyautoattack, "AutoAttack", Recorder)
    model = Probe().eval()
    x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 10, (2,))
    for name in ("autoattack", "autoattack-l2"):
        run_attack(name, model, x, y, EPS, seed=1234)
    assert [(k["seed"], k["norm"]) for k in seen] == [(1234, "Linf"), (1234, "L2")]


def test_parse_eps():
    assert parse_eps("8/255") == 8 / 255 and parse_eps("0.5") == 0.5 and parse_eps(0.1) == 0.1


@pytest.mark.slow
@pytest.mark.timeout(600)  # AutoAttack standard on a CPU: ~15 s alone, much more on a loaded machine
def test_attack_strength_is_monotone_on_a_trained_model():
    """Train a small CNN on digits, then clean >= FGSM >= PGD-20 >= AutoAttack in accuracy (at 32/255,
    where the digits net is neither fully robust nor fully broken, so the chain is not vacuous)."""
    from rnas.data import make_loaders

    torch.manual_seed(0)
    data = make_loaders("digits", None, 64, "cpu", 0)
    data.train.augment = False
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32 * 64, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(5):
        for x, y in data.train.epoch(epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    x, y = next(data.val.epoch(0))
    x, y = x[:32], y[:32]
    acc = {}
    for name in ("clean", "fgsm", "pgd20", "autoattack"):
        with torch.no_grad():
            acc[name] = (model(run_attack(name, model, x, y, 32 / 255)).argmax(1) == y).float().mean().item()
    assert acc["clean"] > 0.9
    assert acc["clean"] >= acc["fgsm"] >= acc["pgd20"] >= acc["autoattack"]
    assert acc["clean"] > acc["fgsm"] and acc["fgsm"] > acc["autoattack"]  # the ordering is not vacuous


def test_autoattack_runs_every_attack_on_a_four_class_model():
    """At a budget nothing can cross, every image survives APGD-CE, so the targeted APGD and FAB run too: they
    must aim at the 3 classes that exist (pyautoattack's default of 9 targets indexes past a 4-class output)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified, with margins far above what 1e-4 can move
    x_adv = run_attack("autoattack", model, x, y, 1e-4)
    assert (x_adv - x).abs().max() <= 1e-4 + 1e-7
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), y)
