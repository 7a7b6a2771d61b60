"""Training a fixed network: `rnas retrain` (Eq. 3, its baselines, TRADES, Mixture BN) and
`rnas teacher train` (PGD-AT, TRADES or N-FGSM adversarial training, no teacher)."""
from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from .adversarial import bn_route, nfgsm_examples, pgd_examples, trades_examples, trades_terms
from .device import autocast, compile_model
from .distill import (
    attention_maps,
    backward_with_share,
    channel_energy,
    kl_divergence,
    paired_attention_loss,
    rnas_loss,
    teacher_targets,
)
from .loop import clean_accuracy, share_step
from .rundir import rng_state, set_rng_state
from .taps import Taps

CHECKPOINT_FORMAT = "rnas-train-1"


@dataclasses.dataclass
class Objective:
    """What one training step minimises. ``base``: ce | trades | pgd | nfgsm (the adversarial-training
    objective replacing CE); ``distill``: none | kd (KL only) | cl (KL + gamma·L_attn with one-hot tutors)."""

    base: str = "ce"
    distill: str = "cl"
    gamma: float = 1.0
    kl: str = "paper"
    kd_temperature: float = 4.0
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    beta: float = 6.0
    map_size: int = 8


class Trainer:
    """A model, an optional frozen teacher with tutor taps, SGD + schedule, and the loop's job interface."""

    def __init__(self, command: str, cfg, model: nn.Module, data, objective: Objective, device: torch.device,
                 teacher: nn.Module | None = None, tutors: dict | None = None, extra_state: dict | None = None):
        self.command, self.cfg, self.model, self.data, self.obj = command, cfg, model, data, objective
        self.device, self.teacher, self.extra_state = device, teacher, extra_state or {}
        self.student_taps = self.teacher_taps = None
        if objective.distill == "cl":
            student = dict(model.named_modules())
            teacher_modules = dict(teacher.named_modules())
            used = sorted(set(tutors["mapping"]))  # tap only the teacher layers that tutor someone
            self.tutor_index = torch.tensor([used.index(j) for j in tutors["mapping"]], device=device)
            self.n_teacher = len(tutors["teacher_layers"])
            self.student_taps = Taps([(n, student[n]) for n in tutors["student_layers"]], channel_energy)
            self.teacher_taps = Taps([(tutors["teacher_layers"][j], teacher_modules[tutors["teacher_layers"][j]])
                                      for j in used], channel_energy)
        compile_model(model, getattr(cfg, "compile", False))
        self.opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, cfg.epochs) if cfg.cosine else
                          torch.optim.lr_scheduler.MultiStepLR(self.opt, cfg.milestones, cfg.lr_decay))
        self.epoch, self.step, self.progress = 0, 0, None

    @property
    def loader(self):
        return self.data.train

    def begin_epoch(self, epoch: int) -> None:
        self.model.train()

    def _autocast(self):
        return autocast(self.device, getattr(self.cfg, "amp", False))

    def _forward(self, x, route: str, tap: bool = True) -> torch.Tensor:
        taps = self.student_taps.paused() if (self.student_taps and not tap) else contextlib.nullcontext()
        with bn_route(self.model, route), taps, self._autocast():
            return self.model(x).float()

    def base_terms(self, x, y) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(terms, clean logits) of the base objective; student taps hold the clean forward's maps."""
        o = self.obj
        if o.base == "trades":
            x_adv = trades_examples(self.model, x, o.eps, o.step, o.steps)
            logits_adv = self._forward(x_adv, "adv", tap=False)
            logits = self._forward(x, "clean")
            terms = trades_terms(logits, logits_adv, y, o.beta)
            return {**terms, "base": terms["trades"]}, logits
        if o.base in ("pgd", "nfgsm"):
            x_adv = (pgd_examples(self.model, x, y, o.eps, o.step, o.steps) if o.base == "pgd"
                     else nfgsm_examples(self.model, x, y, o.eps))
            logits = self._forward(x_adv, "adv")
            return {"base": F.cross_entropy(logits, y)}, logits
        logits = self._forward(x, "adv")
        return {"base": F.cross_entropy(logits, y)}, logits

    def objective(self, x, y) -> dict[str, torch.Tensor]:
        """Eq. (3): base + KL(p, q) + gamma_t · L_attn (per the distillation mode)."""
        terms, logits = self.base_terms(x, y)
        o = self.obj
        if o.distill == "none":
            return {**terms, "total": terms["base"]}
        q, t_maps = teacher_targets(self.teacher, x, self.teacher_taps, o.map_size, self._autocast())
        if o.distill == "kd":
            kl = kl_divergence(logits, q, o.kl, o.kd_temperature)
            return {**terms, "kl": kl, "total": terms["base"] + kl}
        s_maps = attention_maps(self.student_taps.collect(), o.map_size)
        tutor_maps = t_maps.index_select(1, self.tutor_index)
        attention = paired_attention_loss(s_maps, tutor_maps, self.n_teacher)
        return {**terms, **rnas_loss(logits, q, y, attention, o.gamma, o.kl, o.kd_temperature, base=terms["base"])}

    def train_step(self, x, y) -> dict[str, torch.Tensor]:
        terms = self.objective(x, y)
        self.opt.zero_grad(set_to_none=True)
        measure = "attn_weighted" in terms and share_step(self)
        share = backward_with_share(terms["total"], terms["attn_weighted"] if measure else None,
                                    list(self.model.parameters()))
        if share is not None:
            terms["attn_grad_share"] = share
        self.opt.step()
        return {k: v.detach() for k, v in terms.items()}

    def epoch_record(self) -> dict:
        return {"val_acc": clean_accuracy(self.model, self.data.val, self.student_taps)}

    def state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "kind": self.command, "epoch": self.epoch, "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "progress": self.progress,
                "config": dataclasses.asdict(self.cfg), **self.extra_state}

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step, self.progress = ckpt["epoch"], ckpt["step"], ckpt.get("progress")
        set_rng_state(ckpt["rng"])

    def close(self) -> None:
        for taps in (self.student_taps, self.teacher_taps):
            if taps is not None:
                taps.remove()
