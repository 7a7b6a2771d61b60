"""Adversarial attacks on models that take images in [0, 1] (normalisation inside the model).

``eps`` and step sizes are in pixel units: a float, or for the l_inf attacks implemented here (fgsm, pgdK,
mifgsm, cw) also a per-channel tensor [1, C, 1, 1] that broadcasts over the batch (``rnas eval --eps-space
normalized``). Every attack runs with the model in eval mode (restored after), returns x_adv with
|x_adv - x| <= eps (per channel) and 0 <= x_adv <= 1 (the l2/l1 AutoAttack variants bound their own norm),
and never accumulates parameter gradients.
"""
from __future__ import annotations

import contextlib
import re
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F

from .errors import UserError


def parse_eps(text: str | float) -> float:
    """'8/255' -> 0.0313..., '0.5' -> 0.5."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"bad eps {text!r}: use a number or a fraction such as 8/255") from None


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run in eval mode, restore the previous train/eval state afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


Budget = float | torch.Tensor  # pixel units; a tensor is per channel, [1, C, 1, 1]


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: Budget) -> torch.Tensor:
    """Closest point of the eps-ball (a box when eps is per channel) around x intersected with [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CW margin max_{k != y} z_k - z_y per sample (positive once misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Gradient of the summed loss w.r.t. the input only (also inside a caller's no_grad block)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        value = F.cross_entropy(logits, y, reduction="sum") if loss == "ce" else margin_loss(logits, y).sum()
        (grad,) = torch.autograd.grad(value, x)
    return grad


def fgsm(model, x, y, eps: Budget) -> torch.Tensor:
    """One signed-gradient step of size eps on the cross-entropy (Goodfellow et al.)."""
    with eval_mode(model):
        return project_linf(x + eps * _input_grad(model, x, y, "ce").sign(), x, eps).detach()


def pgd(model, x, y, eps: Budget, step: Budget = 2 / 255, steps: int = 20, random_start: bool = True,
        loss: str = "ce", generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent (Madry et al.) on ``ce`` or the CW ``margin`` loss, uniform random start."""
    with eval_mode(model):
        x_adv = x.clone()
        if random_start:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_adv = project_linf(x + (2 * noise - 1) * eps, x, eps)
        for _ in range(steps):
            x_adv = project_linf(x_adv + step * _input_grad(model, x_adv, y, loss).sign(), x, eps)
        return x_adv.detach()


def mifgsm(model, x, y, eps: Budget, steps: int = 10, mu: float = 1.0) -> torch.Tensor:
    """Momentum iterative FGSM (Dong et al.): g <- mu g + grad / ||grad||_1, step eps/steps."""
    with eval_mode(model):
        x_adv, momentum, step = x.clone(), torch.zeros_like(x), eps / steps
        for _ in range(steps):
            grad = _input_grad(model, x_adv, y, "ce")
            momentum = mu * momentum + grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_adv = project_linf(x_adv + step * momentum.sign(), x, eps)
        return x_adv.detach()


CW_STEPS = 40  # CW-40, as RobustResNets (Huang et al.) evaluate


def cw_linf(model, x, y, eps: Budget, steps: int = CW_STEPS, step: Budget | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """CW-l_inf: PGD on the margin loss (Carlini & Wagner's objective under an l_inf budget)."""
    return pgd(model, x, y, eps, eps / 4 if step is None else step, steps, loss="margin", generator=generator)


def autoattack(model, x, y, eps: float, norm: str = "Linf", version: str = "standard", seed: int = 0) -> torch.Tensor:
    """AutoAttack (Croce & Hein) through the optional ``pyautoattack`` package; ``eps`` is one float."""
    if isinstance(eps, torch.Tensor):  # pyautoattack's projections and step sizes assume a scalar budget
        raise UserError("autoattack: pyautoattack takes one scalar budget, not a per-channel eps "
                        "(--eps-space normalized); use fgsm, pgdK, mifgsm or cw there")
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise UserError("AutoAttack needs the optional extra: pip install 'rnas[autoattack]'") from None
    import logging

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    params = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model), torch.enable_grad():
        try:  # pyautoattack calls backward(): keep the model's parameter grads untouched
            for p in params:
                p.requires_grad_(False)
            adversary = AutoAttack(model, norm=norm, eps=eps, version=version, device=x.device, seed=seed)
            adversary.verbose = False
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=max(1, len(x)))
        finally:
            for p in params:
                p.requires_grad_(True)
        return x_adv.detach()


DEFAULT_EPS = {"autoattack-l2": 0.5, "autoattack-l1": 12.0}
SCALAR_BUDGET = ("autoattack", *DEFAULT_EPS)  # pyautoattack: one float budget, never a per-channel tensor


ATTACK_NAMES = "clean, fgsm, pgdK e.g. pgd20, mifgsm, cw, autoattack, autoattack-l2, autoattack-l1"


def check_attack(name: str) -> str:
    """``name`` if it is a known attack, else a one-line UserError listing the known ones."""
    if name in ("clean", "fgsm", "mifgsm", "cw", *SCALAR_BUDGET) or re.fullmatch(r"pgd\d+", name):
        return name
    raise UserError(f"unknown attack {name!r} ({ATTACK_NAMES})")


def run_attack(name: str, model, x, y, eps: Budget, *, cw_steps: int = CW_STEPS, seed: int = 0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial inputs for a named attack (ATTACK_NAMES); random starts from ``generator`` (default: ``seed``)."""
    if name == "clean":
        return x
    if name == "fgsm":
        return fgsm(model, x, y, eps)
    if generator is None:
        generator = torch.Generator(x.device).manual_seed(seed)
    if match := re.fullmatch(r"pgd(\d+)", name):
        return pgd(model, x, y, eps, eps / 4, int(match[1]), generator=generator)  # 2/255 at the standard 8/255
    if name == "mifgsm":
        return mifgsm(model, x, y, eps)
    if name == "cw":
        return cw_linf(model, x, y, eps, cw_steps, generator=generator)
    if name == "autoattack":
        return autoattack(model, x, y, eps, seed=seed)
    if name in DEFAULT_EPS:
        return autoattack(model, x, y, DEFAULT_EPS[name], "L2" if name.endswith("l2") else "L1", seed=seed)
    check_attack(name)
    raise AssertionError(f"attack {name!r} is listed but not dispatched")


def attack_steps(name: str, cw_steps: int = CW_STEPS) -> int | None:
    """Gradient steps of an iterative attack (pgdK: K, mifgsm: 10, cw: ``cw_steps``), else None."""
    if match := re.fullmatch(r"pgd(\d+)", name):
        return int(match[1])
    return {"mifgsm": 10, "cw": cw_steps}.get(name)


def takes_channel_budget(name: str) -> bool:
    """True for the l_inf attacks implemented here (fgsm, pgdK, mifgsm, cw), which accept a per-channel eps
    tensor; False for clean (no budget) and the AutoAttack variants (SCALAR_BUDGET)."""
    return name != "clean" and name not in SCALAR_BUDGET


def attack_eps(name: str, eps: float) -> float:
    """The budget an attack runs at: ``eps`` for l_inf attacks, the threat model's default otherwise."""
    return 0.0 if name == "clean" else DEFAULT_EPS.get(name, eps)
