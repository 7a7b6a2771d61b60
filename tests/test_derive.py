"""Derived nets reproduce the supernet's argmax behaviour, and their costs are exact."""
import json

import pytest
import torch
from conftest import ALL_SPACES, TINY_BLOCKS, builtin, randomize, tiny_spec
from helpers import check_equivalence, flop_count_macs

from supernets import ArchError, Network, build_model, derive


@pytest.mark.parametrize("name", ALL_SPACES)
def test_builtin_spaces_argmax_equals_derived(name):
    supernet, model, arch = check_equivalence(builtin(name))
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in supernet.weight_parameters())
    assert len(arch["widths"]) == supernet.spec.num_blocks


@pytest.mark.parametrize("block", sorted(TINY_BLOCKS))
@pytest.mark.parametrize("stem", ["conv", "convstem"])
def test_every_block_type_argmax_equals_derived(block, stem):
    for _ in range(3):  # several random architectures
        check_equivalence(tiny_spec(TINY_BLOCKS[block], stem))


def test_train_mode_batchnorm_also_matches():
    spec = tiny_spec(TINY_BLOCKS["robust_res"])
    supernet = randomize(Network(spec))
    supernet.mode = "argmax"
    model = build_model(derive(supernet), supernet)
    x = torch.rand(6, 3, 16, 16)
    assert (supernet(x) - model(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ALL_SPACES)
def test_min_and_max_width_costs_match_flop_counter(name):
    spec = builtin(name)
    supernet = Network(spec)
    for pick in ("max", "min"):
        choices = [0 if pick == "max" else len(b.width_choices) - 1 for b in supernet.searched_blocks]
        params, macs = supernet.cost(choices)
        widths = [b.width_choices[0 if pick == "max" else -1] for b in supernet.blocks]
        model = Network(spec, widths=widths)
        assert sum(p.numel() for p in model.parameters()) == params
        assert flop_count_macs(model, spec) == macs


def test_arch_is_json_and_builds_from_file(tmp_path):
    spec = tiny_spec(TINY_BLOCKS["mbconv"])
    supernet = randomize(Network(spec)).eval()
    arch = derive(supernet)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    model = build_model(path)
    assert [b.cout.size for b in model.blocks] == arch["widths"]
    assert arch["space"] == "tiny-mbconv" and arch["num_classes"] == 5
    for probs, choices in zip(arch["probabilities"], arch["width_choices"], strict=True):
        assert len(probs) == len(choices) and abs(sum(probs) - 1) < 1e-5


def test_bad_arch_is_one_line_error(tmp_path):
    arch = derive(Network(tiny_spec(TINY_BLOCKS["basic"])))
    arch["widths"][2] = 7
    with pytest.raises(ArchError, match=r"widths\[2\]: 7 is not one of the block's choices \[12, 8, 4\]"):
        build_model(arch)
    bad = tmp_path / "arch.json"
    bad.write_text("{not json")
    with pytest.raises(ArchError, match="arch.json: not valid JSON"):
        build_model(bad)


def test_a_near_tie_of_two_width_logits_derives_the_choice_the_argmax_forward_makes():
    """Two logits one float32 step apart have equal softmax probabilities; derive, cost and the argmax
    forward must still agree on the larger logit (a softmax argmax would pick the first of the tie)."""
    supernet = randomize(Network(tiny_spec(TINY_BLOCKS["mbconv"]))).eval()
    block = supernet.searched_blocks[0]
    k = len(block.width_choices)
    assert k >= 2
    a = torch.tensor(0.3)
    tied = torch.full((block.width_logits.numel(),), -5.0)
    tied[0], tied[1] = a, torch.nextafter(a, torch.tensor(1.0))
    with torch.no_grad():
        block.width_logits.copy_(tied)
    probs = supernet.width_probs()[0]
    assert probs[0] == probs[1]  # the softmax cannot tell them apart
    assert supernet.argmax_choices()[0] == 1
    arch = derive(supernet)
    assert arch["widths"][list(supernet.blocks).index(block)] == block.width_choices[1]
    assert supernet.cost()[1] == arch["macs"]
    supernet.mode = "argmax"
    model = build_model(arch, supernet).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert (supernet(x) - model(x)).abs().max().item() <= 1e-5
