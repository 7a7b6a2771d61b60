"""TRADES and Mixture BN checked against hand computations on tiny batches."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from rnas.robust.adversarial import (
    MixtureBatchNorm2d,
    bn_route,
    convert_to_mbn,
    nfgsm_examples,
    trades_examples,
    trades_terms,
)


def test_trades_loss_matches_hand_computation():
    clean = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    adv = torch.tensor([[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    beta = 6.0
    terms = trades_terms(clean, adv, y, beta)
    natural = robust = 0.0
    for i in range(2):
        p = [math.exp(v) / sum(math.exp(u) for u in clean[i].tolist()) for v in clean[i].tolist()]
        q = [math.exp(v) / sum(math.exp(u) for u in adv[i].tolist()) for v in adv[i].tolist()]
        natural += -math.log(p[y[i]]) / 2
        robust += sum(pk * math.log(pk / qk) for pk, qk in zip(p, q, strict=True)) / 2
    assert abs(terms["natural"].item() - natural) < 1e-6
    assert abs(terms["robust"].item() - robust) < 1e-6
    assert abs(terms["trades"].item() - (natural + beta * robust)) < 1e-5


def test_trades_and_nfgsm_examples_stay_in_their_budgets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 5)).train()
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 5, (6,))
    eps = 8 / 255
    x_adv = trades_examples(model, x, eps, 2 / 255, 10)
    assert (x_adv - x).abs().max() <= eps + 1e-7 and 0 <= x_adv.min() and x_adv.max() <= 1
    assert (x_adv - x).abs().max() >= eps - 1e-6  # it moved, to the edge of the ball
    assert model.training and all(p.grad is None for p in model.parameters())
    x_n = nfgsm_examples(model, x, y, eps)
    assert 2 * eps < (x_n - x).abs().max() <= 3 * eps + 1e-6  # noise 2 eps + step eps, not projected (N-FGSM)


def manual_bn(x, bn):
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def test_mixture_bn_trades_loss_matches_hand_computation():
    """Clean logits through the clean BN (clean-batch statistics), adversarial logits through the
    adversarial BN (adversarial-batch statistics); the test-time model uses the adversarial branch."""
    torch.manual_seed(0)
    conv, head = nn.Conv2d(3, 4, 3, bias=False), nn.Linear(4, 3)
    model = convert_to_mbn(nn.Sequential(conv, nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head))
    mbn = model[1]
    assert isinstance(mbn, MixtureBatchNorm2d)
    with torch.no_grad():
        mbn.clean.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
        mbn.adv.weight.copy_(torch.tensor([0.3, 1.0, 2.0, 1.0]))
        mbn.adv.bias.fill_(0.25)
    x = torch.rand(5, 3, 6, 6)
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 0, 1])
    model.train()
    with bn_route(model, "clean"):
        logits = model(x)
    with bn_route(model, "adv"):
        logits_adv = model(x_adv)
    loss = trades_terms(logits, logits_adv, y, 6.0)["trades"]

    def by_hand(inp, bn):
        return head(manual_bn(conv(inp), bn).mean((2, 3)))
    expected = trades_terms(by_hand(x, mbn.clean), by_hand(x_adv, mbn.adv), y, 6.0)["trades"]
    assert torch.allclose(loss, expected, atol=1e-6)
    # each branch tracked only its own inputs' statistics
    momentum = mbn.clean.momentum
    assert torch.allclose(mbn.clean.running_mean, momentum * conv(x).mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(mbn.adv.running_mean, momentum * conv(x_adv).mean((0, 2, 3)), atol=1e-6)
    model.eval()
    with torch.no_grad():
        test_time = model(x)
        adv_branch = head(F.batch_norm(conv(x), mbn.adv.running_mean, mbn.adv.running_var, mbn.adv.weight,
                                       mbn.adv.bias, False, 0.0, mbn.adv.eps).mean((2, 3)))
    assert torch.allclose(test_time, adv_branch, atol=1e-6)
