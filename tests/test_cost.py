"""The MAC cost in the search: n_f of the sampled networks (gradient against finite differences) and
budgets (search --mac-target, derive --mac-target: exact MACs inside the window)."""
import json

import pytest
import torch
from conftest import builtin, randomize
from helpers import flop_count_macs, main_in_process, search_args, write_tiny_setup

from rnas.method.distill import flop_factor
from supernets import ArchError, Network, budget_choices, build_model, derive


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _n_f(net, kind, **kw):
    """n_f of 16 sampled networks, with the same Gumbel noise on every call."""
    torch.manual_seed(7)
    weights = net.width_weights(16)
    return flop_factor(net.expected_macs(weights), 8e6, kind, **kw)


@pytest.mark.parametrize("kind,kw", [("power", {"exponent": 0.3}), ("linear", {}),
                                     ("power", {"target_macs": 6e6, "target_exponent": 1.0})])
def test_n_f_of_the_sampled_networks_has_the_finite_difference_gradient(float64, kind, kw):
    """n_f is a function of the forward's Gumbel weights (per sample, at the current tau): autograd's
    gradient w.r.t. every width logit equals central finite differences with the noise held fixed."""
    net = Network(builtin("s3")).train()
    net.tau = 1.5
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.5)
    _n_f(net, kind, **kw).backward()
    h = 1e-6
    for p in net.arch_parameters():
        for k in range(p.numel()):
            with torch.no_grad():
                p[k] += h
                up = _n_f(net, kind, **kw).item()
                p[k] -= 2 * h
                down = _n_f(net, kind, **kw).item()
                p[k] += h
            assert p.grad[k].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-10)
    assert all(torch.all(p.grad != 0) for p in net.arch_parameters())


def test_sampled_macs_are_the_costs_of_the_sampled_one_hot_nets():
    """At a tiny temperature every sample's Gumbel weights are one-hot and its MACs are exactly the cost of
    the network it sampled."""
    net = randomize(Network(builtin("s5"))).train()
    net.tau = 1e-4
    weights = net.width_weights(8)
    macs = net.expected_macs(weights)
    assert macs.shape == (8,)
    for w, m in zip(weights, macs, strict=True):
        assert m.item() == pytest.approx(net.cost(w.argmax(-1).tolist())[1], rel=1e-5)


@pytest.mark.parametrize("space", ["s3", "s5", "is"])
def test_budget_lands_inside_the_window_and_is_exact(space):
    net = randomize(Network(builtin(space)), logit_scale=2.0)
    low = net.cost([len(b.width_choices) - 1 for b in net.searched_blocks])[1]
    high = net.cost([0] * len(net.searched_blocks))[1]
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        target = low + fraction * (high - low)
        arch = derive(net, budget_choices(net, target))
        assert 0.95 * target <= arch["macs"] <= target
        if space != "is":  # FlopCounter at 224x224 would take long; the cost model is tested elsewhere
            assert flop_count_macs(build_model(arch), net.spec) == arch["macs"]
    assert derive(net, budget_choices(net, 2 * high))["macs"] == high  # more than the widest: the widest
    assert derive(net, budget_choices(net, low))["macs"] == low
    with pytest.raises(ArchError, match="below the smallest net"):
        budget_choices(net, low - 1)


def test_budget_keeps_the_argmax_net_when_it_is_the_only_fit():
    """Greedy by probabilities: blocks the search was sure of keep their choice while others give way."""
    net = Network(builtin("s3"))
    with torch.no_grad():
        for i, p in enumerate(net.arch_parameters()):
            p.zero_()
            p[0] = 10.0 if i < 3 else 0.1  # stage 1 sure of its widest choice, the rest barely prefer theirs
    argmax_macs = net.cost()[1]
    choices = budget_choices(net, argmax_macs - 200_000)
    assert choices[:3] == [0, 0, 0] and any(c > 0 for c in choices[3:])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("budget"))


def test_search_once_derive_many(tiny, tmp_path):
    run = tmp_path / "run"
    assert main_in_process(*search_args(tiny, run, "--epochs", 1))[0] == 0
    # tiny.yaml's nets cost 183,888 to 300,192 MACs
    code, err = main_in_process("derive", run, "--mac-target", "200k,0.25M,290000")
    assert code == 0, err
    for name, target in (("arch-0.2M.json", 2e5), ("arch-0.25M.json", 2.5e5), ("arch-0.29M.json", 2.9e5)):
        arch = json.loads((run / name).read_text())
        assert arch["mac_target"] == target and 0.95 * target <= arch["macs"] <= target
        assert arch["tutors"] == json.loads((run / "arch-0.2M.json").read_text())["tutors"]
        assert sum(p.numel() for p in build_model(arch).parameters()) == arch["params"]
    assert not (run / "arch.json").exists()
    code, err = main_in_process("derive", run, "--mac-target", "5Q")
    assert code == 2 and "bad MAC count '5Q'" in err and len(err.strip().splitlines()) == 1


def test_search_with_a_budget_derives_under_it(tiny, tmp_path):
    run = tmp_path / "run"
    assert main_in_process(*search_args(tiny, run, "--epochs", 1, "--mac-target", "0.25M"))[0] == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["weight/n_f"] >= 1.0  # max(MACs/T, T/MACs) >= 1
    assert main_in_process("derive", run)[0] == 0
    arch = json.loads((run / "arch.json").read_text())
    assert arch["mac_target"] == 2.5e5 and 0.95 * 2.5e5 <= arch["macs"] <= 2.5e5
