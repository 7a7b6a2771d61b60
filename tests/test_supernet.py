"""Supernet mechanics: parameters, Gumbel masks per sample, temperature, modes, expected cost."""
import pytest
import torch
from conftest import ALL_SPACES, TINY_BLOCKS, builtin, randomize, tiny_spec

from supernets import Network, build_supernet


def test_arch_and_weight_parameters_partition_all_parameters():
    net = build_supernet("S5")
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == 15 and all(p.shape == (len(b.width_choices),) for p, b in zip(arch, net.blocks, strict=True))
    ids = {id(p) for p in arch}
    assert not ids & {id(p) for p in weights}
    assert len(arch) + len(weights) == len(list(net.parameters()))


def test_search_blocks_own_their_logits():
    net = build_supernet("S3", num_classes=7)
    names = [n for n, _ in net.named_parameters() if n.endswith("width_logits")]
    assert names == [f"blocks.{i}.width_logits" for i in range(9)]
    assert net.fc.out_features == 7


def _masks(net, batch):
    return net.channel_mask_matrix(net.width_weights(batch))


def test_sample_mode_masks_are_per_sample_and_on_the_input_device():
    net = build_supernet("S3").train()
    masks = _masks(net, 16)
    assert masks.shape[0] == 16 and masks.device == net.fc.weight.device
    distinct = {tuple(m.flatten().tolist()) for m in masks}
    assert len(distinct) == 16  # continuous Gumbel noise: every sample gets its own mask
    # every mask is sum_k g_k 1[c < f_k]: non-increasing along channels, 1 on the smallest choice
    first = net.blocks[3].cout  # a block with choices 32,28,24,20
    m = net.channel_masks(net.width_weights(16))[first.var][:, :, 0, 0]
    assert m.shape == (16, first.size)
    assert torch.all(m[:, :20] > 1 - 1e-6) and torch.all(m[:, 1:] <= m[:, :-1] + 1e-6)


def test_forward_applies_per_sample_masks():
    """Same image repeated in one batch gives different outputs only because masks differ per sample."""
    net = randomize(build_supernet("S3")).train()
    x = torch.rand(1, 3, 32, 32).repeat(4, 1, 1, 1)
    for m in net.modules():  # batch statistics would be shared anyway; use running stats to isolate masks
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        out = net(x) - net.fc.bias
        assert (out[0] - out[1]).abs().max() > 1e-2 * out.abs().max()
        net.mode = "expected"
        out = net(x)
    assert (out[0] - out[1]).abs().max() == 0


def test_low_temperature_makes_masks_one_hot():
    net = build_supernet("S3").train()
    torch.manual_seed(1)
    net.tau = 5.0
    hot = net.width_weights(256).max(-1).values
    net.tau = 0.01
    cold = net.width_weights(256).max(-1).values
    assert hot.mean() < 0.75
    assert cold.mean() > 0.99 and (cold > 0.999).float().mean() > 0.9
    # where the weights are one-hot, the mask is exactly the indicator of that choice
    w = net.width_weights(64)
    masks = net.channel_mask_matrix(w)
    onehot = torch.nn.functional.one_hot(w.argmax(-1), w.shape[-1]).float()
    exact = net.channel_mask_matrix(onehot)
    sharp = (w.max(-1).values > 1 - 1e-6).all(-1)
    assert sharp.sum() > 10
    assert torch.allclose(masks[sharp], exact[sharp], atol=1e-5)
    assert set(exact.unique().tolist()) <= {0.0, 1.0}


def test_modes():
    net = build_supernet("S3")
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    net.mode = "expected"
    assert torch.allclose(net.width_weights(8)[0], net.width_probs())
    net.mode = "argmax"
    w = net.width_weights(8)
    assert w.shape[0] == 1 and set(w.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(w[0].argmax(-1), net.width_probs().argmax(-1))
    net.mode = None
    assert net.eval().current_mode == "argmax" and net.train().current_mode == "sample"
    net.mode = "bogus"
    with pytest.raises(ValueError, match="unknown mode 'bogus'"):
        net(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("name", ALL_SPACES)
def test_expected_macs_exact_when_saturated(name):
    net = Network(builtin(name))
    torch.manual_seed(len(name))
    choices = [int(torch.randint(len(b.width_choices), ())) for b in net.searched_blocks]
    with torch.no_grad():
        for p, k in zip(net.arch_parameters(), choices, strict=True):
            p.zero_()
            p[k] = 1e4  # softmax saturates to exactly one-hot
    params, macs = net.cost(choices)
    assert net.expected_macs().item() == macs
    assert net.expected_params().item() == params


@pytest.mark.parametrize("name", ALL_SPACES)
def test_expected_macs_gradient_reaches_every_logit(name):
    """d E[MACs] / d logit_k = p_k (c_k - E[c]) * dMACs/dE[c]: non-zero for every logit except where a
    choice equals the mean width (IS/IM/I's 96..48 stage has 72) - there it is exactly zero at uniform
    logits and non-zero as soon as the logits move."""
    net = Network(builtin(name))
    net.expected_macs().backward()
    for block, p in zip(net.searched_blocks, net.arch_parameters(), strict=True):
        choices = torch.tensor(block.width_choices, dtype=torch.float64)
        at_mean = choices == choices.mean()
        scale = p.grad.abs().max()
        assert torch.all(p.grad[~at_mean].abs() > 1e-6 * scale)
        assert torch.all(p.grad[at_mean].abs() < 1e-9 * scale)  # zero up to float64 round-off
    net.zero_grad()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.1)
    (net.expected_macs() + net.expected_params()).backward()
    assert all(torch.all(p.grad != 0) for p in net.arch_parameters())


def test_expected_macs_is_the_probability_weighted_cost_of_one_block():
    """With every other block fixed, E[MACs] is exactly sum_k p_k MACs_k: each conv's cost is linear in
    the block's width (depthwise convs included; they are not squared)."""
    spec = tiny_spec(TINY_BLOCKS["mbconv"], widths=((8,), (12, 8, 4)))
    net = Network(spec)
    assert len(net.searched_blocks) == 2
    probs = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    weights = net.one_hot([0, 0])
    weights[1] = probs  # the last block; the block before it stays at 12 channels
    costs = torch.tensor([net.cost([0, k])[1] for k in range(3)], dtype=torch.float64)
    assert costs.unique().numel() == 3
    assert net.expected_macs(weights).item() == pytest.approx((probs * costs).sum().item(), rel=1e-12)


def test_conv_layers_in_execution_order():
    net = Network(tiny_spec(TINY_BLOCKS["robust_res"]))
    order = net.conv_layers()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(order) == len(convs) and {id(m) for _, m in order} == {id(m) for m in convs}
    names = [n for n, _ in order]
    assert names[0] == "stem.0"
    # the SE convs of a block run after its hierarchical convs
    assert names.index("blocks.0.se_reduce") > names.index("blocks.0.convs.2")
    assert net.training  # tracing left the mode alone


def _weight_grads(net, x, arch_grad: bool):
    """Weight gradients of one sample-mode CE step with fixed Gumbel noise; masks need a gradient only
    when ``arch_grad`` (they are then applied out of place). Also: how many hidden activations (the
    depthwise stage's activation outputs) were changed in place."""
    for p in net.arch_parameters():
        p.requires_grad_(arch_grad)
    net.zero_grad(set_to_none=True)
    outputs = []
    hooks = [b.act_dw.register_forward_hook(lambda m, i, o: outputs.append(o)) for b in net.blocks]
    torch.manual_seed(3)
    torch.nn.functional.cross_entropy(net(x), torch.arange(len(x)) % 5).backward()
    for h in hooks:
        h.remove()
    in_place = sum(o._version > 0 for o in outputs)
    return {n: p.grad.clone() for n, p in net.named_parameters() if "width_logits" not in n}, in_place


@pytest.mark.parametrize("act", ["hswish", "relu", "swish"])
def test_in_place_masking_gives_the_same_gradients(act):
    """Weight steps (masks without gradient) mask BN / activation outputs in place; the gradients equal
    those of the out-of-place path used when the masks need a gradient (ReLU keeps out of place)."""
    torch.manual_seed(0)
    net = randomize(Network(tiny_spec({**TINY_BLOCKS["mbconv"], "act": act}))).train()
    x = torch.rand(6, 3, 16, 16)
    (in_place, changed), (reference, unchanged) = _weight_grads(net, x, False), _weight_grads(net, x, True)
    searched_hidden = sum(b.hidden.var is not None for b in net.blocks)  # the first follows the fixed stem
    assert searched_hidden == 3 and unchanged == 0 and changed == (0 if act == "relu" else searched_hidden)
    assert in_place.keys() == reference.keys()
    for name, grad in in_place.items():
        assert torch.allclose(grad, reference[name], atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("block", sorted(TINY_BLOCKS))
def test_channels_last_gives_the_same_outputs_and_gradients(block):
    torch.manual_seed(0)
    net = randomize(Network(tiny_spec(TINY_BLOCKS[block]))).train()
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    ref = net(x)
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    net.to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    out = net(x)
    out.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    for p, g in zip(net.parameters(), ref_grads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-4, rtol=1e-4)
