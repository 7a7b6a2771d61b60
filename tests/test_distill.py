"""Cross-layer attention distillation: Eq. (1)-(3), tutor gradients, per-sample normalisation."""
import math

import pytest
import torch
from torch.nn import functional as F

from rnas.method.distill import (
    CrossLayerAttention,
    attention_map,
    attention_maps,
    channel_energy,
    flop_factor,
    kl_divergence,
    paired_attention_loss,
    rnas_loss,
    uniform_mapping,
)
from supernets import build_supernet


def random_maps(batch, n, size=8, seed=None):
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    acts = torch.randn(batch * n, 4, size, size, generator=gen)
    return attention_map(acts, size).view(batch, n, size * size)


def test_attention_map_is_sum_of_squares_normalised_per_sample():
    a = torch.randn(3, 5, 4, 4)
    m = attention_map(a, 4)
    ref = a.pow(2).sum(1).flatten(1)
    assert torch.allclose(m, ref / ref.norm(dim=1, keepdim=True), atol=1e-7)
    assert torch.allclose(m.norm(dim=1), torch.ones(3))
    # resizing: area-average when shrinking, bilinear when growing
    big = torch.randn(2, 3, 16, 16)
    shrunk = F.avg_pool2d(big.pow(2).sum(1, keepdim=True), 2).flatten(1)
    assert torch.allclose(attention_map(big, 8), F.normalize(shrunk, dim=1), atol=1e-6)
    assert attention_map(torch.randn(2, 3, 4, 4), 8).shape == (2, 64)


def test_per_sample_normalisation_with_one_sample_scaled_100x():
    a = torch.randn(6, 8, 8, 8)
    scaled = a.clone()
    scaled[2] *= 100
    assert torch.allclose(attention_map(scaled, 8), attention_map(a, 8), atol=1e-6)
    teacher = attention_map(torch.randn(6, 8, 8, 8), 8)[:, None]
    loss = paired_attention_loss(attention_map(a, 8)[:, None], teacher, 1)
    assert torch.allclose(paired_attention_loss(attention_map(scaled, 8)[:, None], teacher, 1), loss, atol=1e-6)
    # a batch-wide normalisation (the official code's) would not have been invariant
    flat = a.pow(2).sum(1).flatten(1)
    flat_scaled = scaled.pow(2).sum(1).flatten(1)
    assert not torch.allclose(flat / flat.norm(), flat_scaled / flat_scaled.norm(), atol=1e-3)


def test_eq1_is_the_weighted_mean_of_pair_distances():
    module = CrossLayerAttention(3, 4)
    with torch.no_grad():
        module.tutor_logits.normal_()
    module.mode = "expected"
    s, t = random_maps(5, 3), random_maps(5, 4)
    g = module.tutor_probs()
    expected = sum(g[i, j] * (s[:, i] - t[:, j]).norm(dim=1) for i in range(3) for j in range(4)).mean() / 12
    assert torch.allclose(module(s, t), expected, atol=1e-6)
    assert module.pair_distances(s, t).shape == (5, 3, 4)


@pytest.mark.parametrize("mode", ["sample", "expected"])
def test_gradient_reaches_every_tutor_logit(mode):
    module = CrossLayerAttention(5, 7)
    module.mode = mode
    module(random_maps(16, 5), random_maps(16, 7)).backward()
    assert module.tutor_logits.grad.shape == (5, 7)
    assert torch.all(module.tutor_logits.grad != 0)


def test_zero_loss_when_every_student_map_equals_its_tutor():
    t = random_maps(4, 6)
    mapping = [5, 0, 3, 3]
    s = t[:, mapping]
    assert paired_attention_loss(s, t[:, mapping], 6).item() == 0.0
    module = CrossLayerAttention(4, 6)
    with torch.no_grad():
        module.tutor_logits.copy_(F.one_hot(torch.tensor(mapping), 6) * 1e4)
    for mode in ("expected", "sample"):
        module.mode, module.tau = mode, 1.0
        assert module(s, t).item() == 0.0
    wrong = [0, 1, 2, 3]  # only layer 3 keeps its tutor: 1/(n_s n_t) sum_i ||s_i - t_wrong(i)||, batch mean
    by_hand = sum(math.dist(s[b, i].tolist(), t[b, wrong[i]].tolist()) for b in range(4) for i in range(4)) / 4 / 24
    assert by_hand > 0.01
    assert paired_attention_loss(s, t[:, wrong], 6).item() == pytest.approx(by_hand, rel=1e-5)
    # Eq. (3)'s term is Eq. (1) with the one-hot tutors: the search module gives the same number
    one_hot = F.one_hot(torch.tensor(wrong), 6).float()[None]
    assert torch.allclose(module(s, t, weights=one_hot), paired_attention_loss(s, t[:, wrong], 6), atol=1e-7)


def test_planted_mapping_is_recovered_by_the_tutor_search():
    torch.manual_seed(0)
    n_s, n_t = 6, 10
    planted = [7, 2, 9, 2, 0, 5]
    module = CrossLayerAttention(n_s, n_t, tau=1.0)
    opt = torch.optim.Adam([module.tutor_logits], lr=0.05)
    for _ in range(300):
        t = random_maps(32, n_t)
        # a fixed transform of the planted teacher layer: square-root contrast change, renormalised
        s = F.normalize(t[:, planted].sqrt(), dim=-1)
        opt.zero_grad()
        module(s, t).backward()
        opt.step()
    assert module.tutors() == planted


def test_fixed_mapping_and_uniform_baseline():
    assert uniform_mapping(4, 10) == [0, 3, 6, 9]
    assert uniform_mapping(1, 5) == [4]
    assert uniform_mapping(7, 3) == [0, 0, 1, 1, 1, 2, 2]


def test_kl_terms_match_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    p, q = s.softmax(-1)[0], t.softmax(-1)[0]
    paper = sum(p[i] * math.log(p[i] / q[i]) for i in range(3))
    assert kl_divergence(s, t, "paper").item() == pytest.approx(paper.item(), rel=1e-6)
    T = 4.0
    pT, qT = (s / T).softmax(-1)[0], (t / T).softmax(-1)[0]
    hinton = T * T * sum(qT[i] * math.log(qT[i] / pT[i]) for i in range(3))
    assert kl_divergence(s, t, "hinton", T).item() == pytest.approx(hinton.item(), rel=1e-6)
    assert kl_divergence(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_search_and_train_loss_assembly():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10, requires_grad=True), torch.randn(8, 10)
    y = torch.randint(10, (8,))
    attn = torch.tensor(0.3)
    train = rnas_loss(s, t, y, attn, gamma=2.0)
    ce = F.cross_entropy(s, y)
    assert torch.allclose(train["total"], ce + kl_divergence(s, t) + 2.0 * attn)
    net = build_supernet("S3")
    macs = net.expected_macs()
    n_f = flop_factor(macs, net.cost([0] * len(net.searched_blocks))[1])
    assert 0 < n_f.item() < 1
    search = rnas_loss(s, t, y, attn, gamma=2.0, n_f=n_f)
    assert torch.allclose(search["total"], train["total"] * n_f.float())
    search["total"].backward()
    assert all(torch.all(p.grad != 0) for p in net.arch_parameters())
    trades = rnas_loss(s, t, y, attn, gamma=1.0, base=torch.tensor(1.5))
    assert torch.allclose(trades["total"], 1.5 + kl_divergence(s, t) + attn)


def test_flop_factor_variants():
    macs = torch.tensor(5e6, dtype=torch.float64)
    assert flop_factor(macs, 1e7, "linear").item() == 0.5
    assert flop_factor(macs, 1e7, "power", exponent=0.1).item() == pytest.approx(0.5 ** 0.1, rel=1e-12)
    assert flop_factor(macs, 1e7).item() == pytest.approx(0.5 ** 0.01, rel=1e-12)  # power is the default
    # a batch of sampled networks: the mean of their factors
    both = torch.tensor([5e6, 1e7], dtype=torch.float64)
    assert flop_factor(both, 1e7, "power", exponent=0.5).item() == pytest.approx((0.5 ** 0.5 + 1) / 2, rel=1e-12)
    # a target pulls from both sides
    assert flop_factor(macs, 1e7, target_macs=6e6).item() == pytest.approx(1.2, rel=1e-12)
    assert flop_factor(macs * 2, 1e7, target_macs=6e6).item() == pytest.approx(10 / 6, rel=1e-12)
    assert flop_factor(torch.tensor(6e6), 1e7, target_macs=6e6).item() == 1.0
    assert flop_factor(macs * 2, 1e7, target_macs=6e6, target_exponent=2).item() == pytest.approx((10 / 6) ** 2)
    assert flop_factor(macs, 1e7, "fbnetv2").item() == pytest.approx(0.2 * math.log(5e6) ** 0.5)
    with pytest.raises(ValueError, match="MAC target needs"):
        flop_factor(macs, 1e7, "fbnetv2", target_macs=6e6)


def test_channel_energy_gradient_is_two_a_g():
    a = torch.randn(3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(channel_energy, (a,))
    g = torch.randn(3, 1, 4, 6, dtype=torch.float64)
    (channel_energy(a) * g).sum().backward()
    assert torch.allclose(a.grad, 2 * a.detach() * g)
    half = torch.randn(2, 4, 3, 3).to(torch.bfloat16)
    assert channel_energy(half).dtype == torch.float32


def test_attention_maps_of_many_layers_equal_one_layer_at_a_time():
    """Layers grouped by resolution (and interleaved, as a shortcut or a stride makes them) come back in
    layer order, each equal to its own attention_map."""
    shapes = [(4, 16), (6, 8), (3, 16), (5, 4), (2, 8), (7, 8)]  # (channels, side): 16 and 8 interleave
    acts = [torch.randn(2, c, s, s, requires_grad=True) for c, s in shapes]
    maps = attention_maps([channel_energy(a) for a in acts], 8)
    assert maps.shape == (2, 6, 64)
    for i, a in enumerate(acts):
        assert torch.allclose(maps[:, i], attention_map(a, 8), atol=1e-6), i
    weights = torch.randn(2, 6, 64)
    grads = torch.autograd.grad((maps * weights).sum(), acts)
    for i, a in enumerate(acts):
        assert torch.allclose(grads[i], torch.autograd.grad((attention_map(a, 8) * weights[:, i]).sum(), a)[0],
                              atol=1e-5), i
