"""Adversarial attacks on models that take images in [0, 1] (normalisation inside the model).

``eps`` and step sizes are in pixel units: a float, or for the l_inf attacks implemented here (fgsm, pgdK,
mifgsm, cw) also a per-channel tensor [1, C, 1, 1] that broadcasts over the batch (``rnas eval --eps-space
normalized``). Every attack runs with the model in eval mode (restored after), returns x_adv with
|x_adv - x| <= eps (per channel) and 0 <= x_adv <= 1 (the l2/l1 AutoAttack variants bound their own norm),
and never accumulates parameter gradients.

ATTACKS is the one table of attacks: each attack function carries its ``@register_attack`` entry (name or
pattern, threat model, default steps / step / eps, per-channel budget, description), and check_attack,
run_attack, attack_steps, attack_eps, takes_channel_budget and ``rnas eval --list-attacks`` all read it.
Adding an attack is one decorated function.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F

from rnas.errors import UserError
from rnas.names import match_name
from rnas.runtime.device import eval_mode


def parse_eps(text: str | float) -> float:
    """'8/255' -> 0.0313..., '0.5' -> 0.5."""
    try:
        value = float(text) if isinstance(text, (int, float)) else float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"bad eps {text!r}: use a finite number or a fraction such as 8/255")
    return value


Budget = float | torch.Tensor  # pixel units; a tensor is per channel, [1, C, 1, 1]
CW_STEPS = 40  # CW-40, as RobustResNets (Huang et al.) evaluate


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


@dataclass(frozen=True)
class AttackInfo:
    """One attack of the registry: everything `rnas eval` needs to know about it lives here.

    ``run_attack`` calls ``fn(model, x, y, eps, **call_kwargs)`` plus whichever of ``steps``, ``step``,
    ``generator``, ``seed`` and the name's ``<placeholders>`` ``fn`` takes as parameters."""

    name: str  # an exact name, or a pattern whose <placeholders> match digits: "pgd<steps>"
    fn: Callable[..., torch.Tensor]
    threat: str  # "linf", "l2", "l1", or "none" (clean)
    description: str
    steps: int | None = None  # default gradient steps (a <steps> placeholder in the name replaces it)
    step_rule: str | None = None  # step size: "eps", "eps/4", "eps/steps"; None: the attack's own
    default_eps: float | None = None  # a fixed budget that replaces --eps (l2/l1 AutoAttack; clean: 0)
    channel_budget: bool = True  # accepts a per-channel eps tensor [1, C, 1, 1] (--eps-space normalized)
    cw_steps: bool = False  # --cw-steps (run_attack's ``cw_steps``) sets its step count
    example: str | None = None  # a concrete name for a pattern, shown in listings: "pgd20"
    call_kwargs: dict = field(default_factory=dict)  # fixed keyword arguments of fn, e.g. norm="L2"


ATTACKS: dict[str, AttackInfo] = {}  # name or pattern -> AttackInfo, in registration order


def register_attack(name: str, **info):
    """Decorator: add ``fn`` to ATTACKS under ``name`` with the AttackInfo fields ``info``; returns ``fn``."""
    def add(fn):
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        ATTACKS[name] = AttackInfo(name, fn, **info)
        return fn
    return add


def unregister_attack(name: str) -> AttackInfo:
    """Remove (and return) the registry entry ``name`` (a test's own attack, say)."""
    return ATTACKS.pop(name)


def attack_names() -> str:
    """The registry's names for messages: 'clean, fgsm, pgd<steps> e.g. pgd20, ...'."""
    return ", ".join(a.name + (f" e.g. {a.example}" if a.example else "") for a in ATTACKS.values())


def lookup_attack(name: str) -> tuple[AttackInfo, dict[str, int]]:
    """(registry entry, placeholder values) of an attack name, or a one-line UserError listing the known ones."""
    for info in ATTACKS.values():
        if (values := match_name(info.name, name)) is not None:
            if values.get("steps") == 0:
                raise UserError(f"attack {name!r}: needs at least one step (0 steps is the clean accuracy)")
            return info, values
    raise UserError(f"unknown attack {name!r} ({attack_names()})")


def step_size(rule: str | None, eps: Budget, steps: int | None) -> Budget | None:
    """The step of a rule 'eps', 'eps/4' or 'eps/steps' at budget ``eps`` (pixel units); None for no rule."""
    if rule is None:
        return None
    _, _, divisor = rule.partition("/")
    return eps if not divisor else eps / (steps if divisor == "steps" else int(divisor))


@register_attack("clean", threat="none", default_eps=0.0, channel_budget=False, description="no attack")
def clean(model, x, y, eps: Budget) -> torch.Tensor:
    """The inputs themselves (the clean-accuracy row)."""
    return x


@register_attack("fgsm", threat="linf", step_rule="eps", description="one signed-gradient step of size eps "
                 "(Goodfellow et al.)")
def fgsm(model, x, y, eps: Budget) -> torch.Tensor:
    """One signed-gradient step of size eps on the cross-entropy (Goodfellow et al.)."""
    with eval_mode(model):
        return project_linf(x + eps * _input_grad(model, x, y, "ce").sign(), x, eps).detach()


@register_attack("pgd<steps>", threat="linf", step_rule="eps/4", example="pgd20",
                 description="PGD on the cross-entropy, uniform random start (Madry et al.)")
def pgd(model, x, y, eps: Budget, step: Budget = 2 / 255, steps: int = 20, random_start: bool = True,
        loss: str = "ce", generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Projected gradient ascent (Madry et al.) on ``ce`` or the CW ``margin`` loss, uniform random start
    (``noise``: its U[0, 1) draws of x's shape, when the caller made them; else drawn from ``generator``)."""
    with eval_mode(model):
        x_adv = x.clone()
        if random_start:
            if noise is None:
                noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_adv = project_linf(x + (2 * noise - 1) * eps, x, eps)
        for _ in range(steps):
            x_adv = project_linf(x_adv + step * _input_grad(model, x_adv, y, loss).sign(), x, eps)
        return x_adv.detach()


@register_attack("mifgsm", threat="linf", steps=10, step_rule="eps/steps",
                 description="momentum iterative FGSM, mu = 1 (Dong et al.)")
def mifgsm(model, x, y, eps: Budget, steps: int = 10, mu: float = 1.0, step: Budget | None = None) -> torch.Tensor:
    """Momentum iterative FGSM (Dong et al.): g <- mu g + grad / ||grad||_1, step eps/steps by default."""
    with eval_mode(model):
        x_adv, momentum, step = x.clone(), torch.zeros_like(x), eps / steps if step is None else step
        for _ in range(steps):
            grad = _input_grad(model, x_adv, y, "ce")
            momentum = mu * momentum + grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_adv = project_linf(x_adv + step * momentum.sign(), x, eps)
        return x_adv.detach()


@register_attack("cw", threat="linf", steps=CW_STEPS, cw_steps=True, step_rule="eps/4",
                 description="CW-linf: PGD on the margin loss max_{k!=y} z_k - z_y (--cw-steps)")
def cw_linf(model, x, y, eps: Budget, steps: int = CW_STEPS, step: Budget | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """CW-l_inf: PGD on the margin loss (Carlini & Wagner's objective under an l_inf budget)."""
    return pgd(model, x, y, eps, eps / 4 if step is None else step, steps, loss="margin", generator=generator)


@register_attack("autoattack-l1", threat="l1", default_eps=12.0, channel_budget=False, call_kwargs={"norm": "L1"},
                 description="AutoAttack standard, l1 threat model (unseen-threat row)")
@register_attack("autoattack-l2", threat="l2", default_eps=0.5, channel_budget=False, call_kwargs={"norm": "L2"},
                 description="AutoAttack standard, l2 threat model (unseen-threat row)")
@register_attack("autoattack-rand", threat="linf", channel_budget=False, call_kwargs={"version": "rand"},
                 description="AutoAttack rand: APGD-CE and APGD-DLR with EOT, for randomised defences")
@register_attack("autoattack-plus", threat="linf", channel_budget=False, call_kwargs={"version": "plus"},
                 description="AutoAttack plus: the standard attacks with more restarts and target classes")
@register_attack("autoattack", threat="linf", channel_budget=False,
                 description="AutoAttack standard (Croce & Hein) via the optional pyautoattack")
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
            with torch.no_grad():
                classes = model(x[:1]).shape[1]
            if classes < 4:  # the targeted DLR loss reads the 4th-largest logit
                raise UserError(f"autoattack: needs at least 4 classes (the model has {classes})")
            # the targeted attacks aim at the 9 (l1: 5) classes after the top one: at most as many as exist
            for attack in (adversary.apgd_targeted, adversary.fab):
                attack.n_target_classes = min(attack.n_target_classes, classes - 1)
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=max(1, len(x)))
        finally:
            for p in params:
                p.requires_grad_(True)
        return x_adv.detach()


def check_attack(name: str) -> str:
    """``name`` if it is a registered attack, else a one-line UserError listing the known ones."""
    lookup_attack(name)
    return name


def run_attack(name: str, model, x, y, eps: Budget, *, cw_steps: int = CW_STEPS, seed: int = 0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial inputs [N, C, H, W] in [0, 1] for a registered attack at ``eps`` (pixel units; the entry's
    default_eps replaces it); random starts from ``generator`` (default: a generator seeded with ``seed``)."""
    info, values = lookup_attack(name)
    budget = eps if info.default_eps is None else info.default_eps
    steps = attack_steps(name, cw_steps)
    params = inspect.signature(info.fn).parameters
    offered = {**values, "steps": steps, "step": step_size(info.step_rule, budget, steps), "seed": seed}
    kwargs = {k: v for k, v in offered.items() if k in params and v is not None}
    if "generator" in params:
        kwargs["generator"] = torch.Generator(x.device).manual_seed(seed) if generator is None else generator
    return info.fn(model, x, y, budget, **info.call_kwargs, **kwargs)


def attack_steps(name: str, cw_steps: int = CW_STEPS) -> int | None:
    """Gradient steps of an attack (pgdK: K, mifgsm: 10, cw: ``cw_steps``), None for one-shot ones."""
    info, values = lookup_attack(name)
    return values.get("steps", cw_steps if info.cw_steps else info.steps)


def takes_channel_budget(name: str) -> bool:
    """True for attacks that accept a per-channel eps tensor (fgsm, pgdK, mifgsm, cw); False for clean
    (no budget) and the AutoAttack variants (pyautoattack takes one scalar)."""
    return lookup_attack(name)[0].channel_budget


def attack_eps(name: str, eps: float) -> float:
    """The budget an attack runs at: ``eps`` for l_inf attacks, the entry's default_eps otherwise (clean: 0)."""
    default = lookup_attack(name)[0].default_eps
    return eps if default is None else default


def attack_table() -> list[dict]:
    """One row per registered attack: name, threat, default_eps (None: --eps), steps (None: one-shot), step,
    description."""
    return [{"name": a.name, "threat": a.threat, "default_eps": a.default_eps,
             "steps": "<steps>" if "<steps>" in a.name else a.steps,
             "step": a.step_rule, "description": a.description} for a in ATTACKS.values()]


def format_attack_table() -> str:
    """`rnas eval --list-attacks`: the registry as an aligned text table (columns 2+ spaces apart)."""
    def eps_text(row):
        return "--eps" if row["default_eps"] is None else "-" if row["threat"] == "none" else f"{row['default_eps']:g}"
    cells = [("name", "threat", "default eps", "steps", "step", "description")]
    cells += [(r["name"], r["threat"], eps_text(r), "-" if r["steps"] is None else str(r["steps"]), r["step"] or "-",
               r["description"]) for r in attack_table()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
                     for row in cells)
