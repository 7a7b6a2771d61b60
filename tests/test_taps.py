"""Student attention taps read what the sampled network computes: masked activations, identical to the
derived net's in argmax mode, and the attention loss reaches every width logit through the masks."""
import pytest
import torch
from conftest import ALL_SPACES, TINY_BLOCKS, builtin, randomize, tiny_spec

from rnas.method.distill import CrossLayerAttention, attention_maps, channel_energy
from rnas.method.taps import Taps
from supernets import Network, build_model, derive


def maps_of(net, x, size=4):
    with Taps(net.tap_layers(), channel_energy) as taps, torch.no_grad():
        net(x)
        return attention_maps(taps.collect(), size)


def check_maps_equal(spec):
    supernet = randomize(Network(spec)).eval()
    supernet.mode = "argmax"
    model = build_model(derive(supernet), supernet).eval()
    assert [n for n, _ in supernet.tap_layers()] == [n for n, _ in model.tap_layers()]
    x = torch.rand(3, spec.in_channels, spec.input_size, spec.input_size)
    ours, theirs = maps_of(supernet, x), maps_of(model, x)
    assert ours.shape == (3, len(supernet.tap_layers()), 16)
    assert (ours - theirs).abs().max().item() <= 1e-5
    return supernet, model


@pytest.mark.parametrize("name", ALL_SPACES)
def test_builtin_supernet_maps_equal_derived_maps_in_argmax_mode(name):
    supernet, model = check_maps_equal(builtin(name))
    # the derived net is physically thinner, yet its maps are the supernet's
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in supernet.weight_parameters())


@pytest.mark.parametrize("block", sorted(TINY_BLOCKS))
@pytest.mark.parametrize("stem", ["conv", "convstem"])
def test_every_block_type_maps_equal_derived_maps(block, stem):
    for _ in range(3):
        check_maps_equal(tiny_spec(TINY_BLOCKS[block], stem))


def test_raw_conv_outputs_would_differ_from_the_derived_net():
    """Why the taps moved: the max-width supernet's raw conv outputs carry channels the sampled (narrower)
    net does not have, so conv taps give other maps than the derived net; tap points do not."""
    spec = tiny_spec(TINY_BLOCKS["mbconv"])
    supernet = randomize(Network(spec)).eval()
    with torch.no_grad():
        for p in supernet.arch_parameters():
            p.zero_()
            p[-1] = 1.0  # the narrowest choice everywhere
    supernet.mode = "argmax"
    model = build_model(derive(supernet), supernet).eval()
    x = torch.rand(2, 3, spec.input_size, spec.input_size)
    assert (maps_of(supernet, x) - maps_of(model, x)).abs().max() <= 1e-5
    convs = dict(supernet.conv_layers())
    derived_convs = dict(model.conv_layers())
    name = "blocks.3.expand"  # reads a masked input, writes hidden channels the mask removes only later
    with Taps([(name, convs[name])], channel_energy) as a, Taps([(name, derived_convs[name])], channel_energy) as b:
        with torch.no_grad():
            supernet(x)
            model(x)
        raw = (attention_maps(a.collect(), 4) - attention_maps(b.collect(), 4)).abs().max()
    assert raw > 1e-3


@pytest.mark.parametrize("space", ["s3", "s5"])
def test_attention_loss_alone_reaches_every_width_logit(space):
    torch.manual_seed(0)
    net = randomize(Network(builtin(space)), logit_scale=0.3).train()
    layers = net.tap_layers()
    tutor = CrossLayerAttention(len(layers), 7)
    x = torch.rand(4, 3, 32, 32)
    with Taps(layers, channel_energy) as taps:
        net(x)
        s_maps = attention_maps(taps.collect(), 8)
    t_maps = torch.nn.functional.normalize(torch.rand(4, 7, 64), dim=-1)
    tutor(s_maps, t_maps).backward()
    for i, p in enumerate(net.arch_parameters()):
        assert p.grad is not None and torch.all(p.grad.abs() > 0), f"block {i}: {p.grad}"
    assert torch.all(tutor.tutor_logits.grad.abs() > 0)


@pytest.mark.parametrize("block", sorted(TINY_BLOCKS))
def test_attention_loss_reaches_width_logits_of_every_block_type(block):
    torch.manual_seed(0)
    net = randomize(Network(tiny_spec(TINY_BLOCKS[block])), logit_scale=0.3).train()
    layers = net.tap_layers()
    assert len(layers) == 1 + 2 * len(net.blocks)
    with Taps(layers, channel_energy) as taps:
        net(torch.rand(3, 3, 16, 16))
        s_maps = attention_maps(taps.collect(), 4)
    t_maps = torch.nn.functional.normalize(torch.rand(3, 5, 16), dim=-1)
    CrossLayerAttention(len(layers), 5)(s_maps, t_maps).backward()
    assert all(torch.all(p.grad.abs() > 0) for p in net.arch_parameters())
