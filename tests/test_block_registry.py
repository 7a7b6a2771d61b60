"""A block type is one registered class: a spec can name it, a search runs on it and derive reproduces it,
with no edit anywhere else; its declared parameters are what the spec schema checks."""
import json

import pytest
import torch
import yaml
from helpers import TINY_SPACE, check_equivalence, main_in_process, write_tiny_setup
from torch import nn

from search_spaces import BLOCK_TYPES, SpecError, parse_space
from supernets import BLOCKS, register_block, unregister_block
from supernets.builder import TapPoint, apply_mask, conv_out


class PlainBlock(nn.Module):
    """conv-BN-act, masked, with a 'dilation-free' kernel parameter and a width rule of its own."""

    def __init__(self, b, cin, cout, stride, spec, res):
        super().__init__()
        self.cin, self.cout = cin, b.register(cout)
        self.res_out = conv_out(res, spec.kernel, stride)
        self.conv = b.conv(cin, cout, spec.kernel, stride, self.res_out)
        self.bn, self.act = b.bn(cout), b.act(spec.act)
        self.tap_hidden, self.tap_out = TapPoint(), TapPoint()

    def forward(self, x, masks=None):
        y = self.tap_hidden(apply_mask(self.act(self.bn(self.conv(x))), self.cout, masks))
        return self.tap_out(y * 1.0)


def _even_widths(block, widths):
    odd = [w for w in widths if w % 2]
    return f"plain_test needs even widths, got {odd[0]}" if odd else None


@pytest.fixture
def plain_block():
    register_block("plain_test", {"kernel": (3, "odd_kernel"), "act": ("relu", "act")}, _even_widths)(PlainBlock)
    yield "plain_test"
    unregister_block("plain_test")
    assert "plain_test" not in BLOCK_TYPES and "plain_test" not in BLOCKS


def plain_space(**block) -> dict:
    return {**TINY_SPACE, "block": {"type": "plain_test", **block}}


def test_a_registered_block_is_searched_and_derived_with_no_other_edit(plain_block, tmp_path):
    root = write_tiny_setup(tmp_path)
    (root / "plain.yaml").write_text(yaml.safe_dump(plain_space(kernel=5)))
    spec = parse_space(plain_space(kernel=5), "plain")
    assert spec.stages[0].block.kernel == 5 and spec.stages[0].block.as_dict() == {
        "type": "plain_test", "kernel": 5, "act": "relu"}
    for _ in range(3):
        supernet, model, arch = check_equivalence(spec)
        assert all(isinstance(b, PlainBlock) for b in supernet.blocks)
    code, err = main_in_process("search", "--space", root / "plain.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt",
                                "tiny", "--model-dir", root / "models", "--data-dir", root / "data", "--val-size", 50,
                                "--batch-size", 25, "--epochs", 1, "--limit", 100, "--out", root / "run")
    assert code == 0, err
    assert main_in_process("derive", root / "run")[0] == 0
    arch = json.loads((root / "run" / "arch.json").read_text())
    assert arch["spec"]["stages"][0]["block"] == {"type": "plain_test", "kernel": 5, "act": "relu"}
    model = __import__("rnas").build_model(arch)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("block,message", [
    ({"kernel": 4}, "block.kernel: kernel size must be odd, got 4"),
    ({"expansion": 2}, "block.expansion: not a parameter of block type 'plain_test' (its parameters: kernel, act)"),
    ({"act": "tanh"}, "block.act: unknown value 'tanh'"),
])
def test_its_declared_parameters_are_the_schema(plain_block, block, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_space(plain_space(**block), "plain")


def test_its_width_rule_is_checked(plain_block):
    space = plain_space()
    space["stages"] = [{"depth": 1, "stride": 1, "widths": [8, 5]}]
    with pytest.raises(SpecError, match=r"stages\[0\]\.widths: plain_test needs even widths, got 5"):
        parse_space(space, "plain")


def test_an_unregistered_type_is_refused_and_preact_is_a_class_property():
    with pytest.raises(SpecError, match="block.type: unknown value 'plain_test'"):
        parse_space(plain_space(), "plain")
    assert BLOCKS["robust_res"].preact and not getattr(BLOCKS["mbconv"], "preact", False)


def test_specs_and_networks_copy_and_pickle():
    import copy
    import pickle

    from search_spaces import load_space
    from supernets import Network

    block = load_space("s3").stages[0].block
    assert copy.deepcopy(block) == block == pickle.loads(pickle.dumps(block)) and copy.deepcopy(block).kernel == 3
    net = Network(load_space("s3"))
    assert copy.deepcopy(net).spec == net.spec


def test_an_unregistered_block_type_is_refused_by_specs_again(plain_block):
    spec = parse_space(plain_space(), "plain")
    assert spec.stages[0].block.type == "plain_test"
    entry = unregister_block("plain_test")
    assert entry.cls is PlainBlock and "plain_test" not in BLOCKS
    with pytest.raises(SpecError, match="plain_test"):
        parse_space(plain_space(), "plain")
    register_block("plain_test", entry.params, entry.check_widths)(PlainBlock)  # for the fixture's teardown
