"""Adversarial training objectives (TRADES, PGD-AT, N-FGSM) and Mixture BN (Xie & Yuille, seed 002)."""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.nn import functional as F

from rnas.config import defaults
from rnas.robust.attacks import pgd, project_linf
from rnas.runtime.device import eval_mode


class MixtureBatchNorm2d(nn.Module):
    """Two BNs, one for clean and one for adversarial inputs; ``route`` picks one. Test time uses 'adv'."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.clean, self.adv = bn, copy.deepcopy(bn)
        self.route = "adv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.clean if self.route == "clean" else self.adv)(x)


def convert_to_mbn(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` (in place) by a MixtureBatchNorm2d initialised from it."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, MixtureBatchNorm2d(child))
        else:
            convert_to_mbn(child)
    return model


@contextlib.contextmanager
def bn_route(model: nn.Module, route: str):
    """Route every Mixture BN of ``model`` to 'clean' or 'adv' inside the block (no-op without MBN)."""
    mixtures = [m for m in model.modules() if isinstance(m, MixtureBatchNorm2d)]
    previous = [m.route for m in mixtures]
    for m in mixtures:
        m.route = route
    try:
        yield
    finally:
        for m, r in zip(mixtures, previous, strict=True):
            m.route = r


def trades_examples(model, x, eps: float, step: float, steps: int, generator=None) -> torch.Tensor:
    """TRADES inner maximisation: ascend KL(f(x) || f(x')) from x + 0.001·N(0, 1), in eval mode."""
    with eval_mode(model), bn_route(model, "adv"), torch.enable_grad():
        with torch.no_grad():
            p_clean = model(x).softmax(1)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = project_linf(x + 0.001 * noise, x, eps)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(model(x_adv).log_softmax(1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = project_linf(x_adv.detach() + step * grad.sign(), x, eps)
    return x_adv.detach()


def trades_terms(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> dict:
    """TRADES objective: CE(f(x), y) + beta · (1/B) sum_i KL(p_i(x) || p_i(x_adv))."""
    natural = F.cross_entropy(logits_clean, y)
    robust = F.kl_div(logits_adv.log_softmax(1), logits_clean.softmax(1), reduction="batchmean")
    return {"natural": natural, "robust": robust, "trades": natural + beta * robust}


def nfgsm_examples(model, x, y, eps: float, noise_scale: float = defaults.NFGSM_NOISE, generator=None) -> torch.Tensor:
    """N-FGSM (de Jorge et al.): uniform noise of radius noise_scale·eps, one FGSM step of size eps,
    no projection back to the eps-ball (only to [0, 1])."""
    with eval_mode(model), bn_route(model, "adv"), torch.enable_grad():
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        x_noisy = (x + noise_scale * eps * noise).clamp(0, 1).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_noisy), y, reduction="sum"), x_noisy)
        return (x_noisy + eps * grad.sign()).clamp(0, 1).detach()


def pgd_examples(model, x, y, eps: float, step: float, steps: int, generator=None) -> torch.Tensor:
    """PGD-AT examples (Madry et al.), generated against the adversarial BN branch."""
    with bn_route(model, "adv"):
        return pgd(model, x, y, eps, step, steps, generator=generator)
