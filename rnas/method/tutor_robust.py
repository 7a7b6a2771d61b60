"""The ``robust`` tutor objective: tutor logits follow the student's adversarial loss after a look-ahead.

DARTS's second-order step (Liu et al., 2019, Eqs. 6-8) with an adversarial loss as the validation loss::

    w' = w - xi grad_w L_train(w, alpha)                       look-ahead: Eq. (2) on the weight slice
    L_adv(w') = CE(student_w'(x_adv), y)                       x_adv: FGSM / PGD-k against student_w' (pixels)
    grad_alpha L_adv(w') = -xi grad2_{alpha,w} L_train(w, alpha) . grad_w' L_adv(w')

The student's output does not depend on the tutor logits (they weight the attention term only), so the
first-order term is zero and the whole signal is the look-ahead's: a tutor gains weight when a weight step
towards it lowers the adversarial loss. The mixed second derivative is DARTS's central difference
(grad_alpha L_train(w + e v) - grad_alpha L_train(w - e v)) / 2e with v = grad_w' L_adv(w'),
e = 0.01 / ||v||. Only Eq. (2)'s attention term depends on alpha, so each side costs one student forward
and a backward through the tutor weights alone. ``robust-standardised`` z-scores those distance changes
per teacher column over the student rows (``rnas.method.tutors``) before the tutor weights' backward. x_adv is
held fixed (Danskin's theorem: the gradient of the inner maximum is the gradient at the maximiser). Every
forward here normalises with batch statistics and leaves BN's running statistics alone, as the arch step
does.
"""
from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F

from rnas.method.tutors import standardise_columns, weighted_distance
from rnas.robust.attacks import project_linf

TUTOR_ATTACKS = ("fgsm", "pgd")


def adversarial_examples(forward, x: torch.Tensor, y: torch.Tensor, eps: float, attack: str = "fgsm",
                         steps: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """l_inf examples against ``forward`` (images in [0, 1] -> logits) inside the eps-ball and [0, 1]:
    ``fgsm`` one step of size eps from x; ``pgd`` ``steps`` steps of 2.5·eps/steps from a uniform start."""
    def grad_sign(z):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(F.cross_entropy(forward(z), y, reduction="sum"), z)
        return g.sign()

    if attack == "fgsm":
        return project_linf(x + eps * grad_sign(x), x, eps).detach()
    if attack != "pgd":
        raise ValueError(f"unknown tutor attack {attack!r} ({', '.join(TUTOR_ATTACKS)})")
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = project_linf(x + (2 * noise - 1) * eps, x, eps)
    step = 2.5 * eps / steps
    for _ in range(steps):
        x_adv = project_linf(x_adv + step * grad_sign(x_adv), x, eps)
    return x_adv.detach()


@contextlib.contextmanager
def weights_moved(params: list[torch.Tensor], direction: list[torch.Tensor], scale: float):
    """Inside the block every parameter is p + scale · direction (restored bit-exactly after)."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(d, alpha=scale)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


def lookahead_tutor_gradient(searcher, weight_part, arch_part, generator: torch.Generator | None = None,
                             xi: float | None = None, fd_radius: float = 0.01) -> tuple[torch.Tensor, dict]:
    """The robust objective's gradient on ``searcher.tutor.tutor_logits`` (n_s, n_t) and its measurements
    (``adv_ce``: the adversarial loss at w'; ``adv_acc``: accuracy there, %). ``weight_part`` /
    ``arch_part`` are (x, y, (q, teacher maps), n_global) of the two slices; ``generator`` draws the
    look-ahead's Gumbel weights and the PGD start; ``xi`` is the look-ahead step (default: the weight
    optimizer's current learning rate); ``fd_radius`` the norm of the central difference's weight move."""
    cfg, supernet = searcher.cfg, searcher.supernet
    params = [p for p in searcher.weight_params if p.requires_grad]
    xi = searcher.weight_opt.param_groups[0]["lr"] if xi is None else xi
    x_w, y_w, targets_w, n_w = weight_part
    x_a, y_a, _, n_a = arch_part
    widths_w, tutor_w = searcher.draw(n_w, generator)
    widths_a = searcher.dist.rows(supernet.width_weights(n_a, generator))
    # look-ahead w' = w - xi grad_w L_train(w, alpha)
    terms = searcher.objective(x_w, y_w, targets_w, n_w, draws=(widths_w, tutor_w.detach()))
    step = torch.autograd.grad(terms["total"], params, allow_unused=True)
    step = [torch.zeros_like(p) if s is None else s for p, s in zip(params, step, strict=True)]

    def student(z):
        with searcher.autocast():
            return supernet(z, widths_a).float()

    with weights_moved(params, step, -xi), searcher.student_taps.paused():
        x_adv = adversarial_examples(student, x_a, y_a, cfg.tutor_eps, cfg.tutor_attack, cfg.tutor_attack_steps,
                                     generator)
        logits = student(x_adv)
        adv_ce = F.cross_entropy(logits, y_a)
        v = torch.autograd.grad(adv_ce, params, allow_unused=True)
    v = [torch.zeros_like(p) if g is None else g for p, g in zip(params, v, strict=True)]
    norm = torch.sqrt(sum(g.double().square().sum() for g in v))
    e = fd_radius / max(float(norm), 1e-12)
    distances = []
    with torch.no_grad():
        for sign in (1.0, -1.0):
            with weights_moved(params, v, sign * e):
                _, s_maps = searcher.student_forward(x_w, widths_w)
                distances.append(searcher.tutor.pair_distances(s_maps, targets_w[1]))
    n_f = terms["n_f"].detach() if "n_f" in terms else 1.0
    measured = {"adv_ce": adv_ce.detach(), "adv_acc": (logits.argmax(1) == y_a).float().mean().detach() * 100}
    change = distances[0] - distances[1]  # 2e x (how each distance moves up the adversarial loss), per sample
    if searcher.tutor_objective.standardised:  # z-scored per teacher column over the student rows: unitless
        (grad,) = torch.autograd.grad(cfg.gamma_s * n_f * weighted_distance(tutor_w, standardise_columns(change)),
                                      searcher.tutor.tutor_logits)
        return -xi * grad, measured
    # grad_alpha of gamma n_f (L_attn(g(alpha), D+) - L_attn(g(alpha), D-)), through the Gumbel softmax only
    (grad,) = torch.autograd.grad(cfg.gamma_s * n_f * weighted_distance(tutor_w, change), searcher.tutor.tutor_logits)
    return -xi / (2 * e) * grad, measured
