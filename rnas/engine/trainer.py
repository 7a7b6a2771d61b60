"""The trainer library: ``Trainer`` trains a fixed network on an ``Objective``, the loop behind `rnas retrain`
(Eq. 3, its baselines, TRADES, Mixture BN) and `rnas teacher train` (PGD-AT, TRADES or N-FGSM, no teacher)."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from rnas.config import defaults
from rnas.data import keyed_generator
from rnas.engine.cost import CostMeter, count_macs
from rnas.engine.early_stopping import BEST, best_epoch_of, robust_accuracy, write_best
from rnas.engine.loop import clean_accuracy, run_job, share_step
from rnas.engine.optim import fill_recipe, make_grad_scaler, make_optimizer, make_scheduler
from rnas.errors import UserError
from rnas.method.distill import (
    attention_maps,
    backward_with_share,
    channel_energy,
    kl_divergence,
    paired_attention_loss,
    rnas_loss,
    teacher_targets,
)
from rnas.method.taps import Taps
from rnas.robust.adversarial import (
    MixtureBatchNorm2d,
    bn_route,
    nfgsm_examples,
    pgd_examples,
    trades_examples,
    trades_terms,
)
from rnas.runtime.device import autocast, capture, captured, check_capturable, compile_model, full_precision
from rnas.runtime.distributed import SINGLE, Dist, check_batch, note_world_change
from rnas.runtime.rundir import TRAIN_CHECKPOINT, rng_state, set_rng_state


@dataclasses.dataclass
class Objective:
    """What one training step minimises. ``base``: ce | trades | pgd | nfgsm (the adversarial-training
    objective replacing CE); ``distill``: none | kd (KL only) | cl (KL + gamma·L_attn with one-hot tutors)."""

    base: str = "ce"
    distill: str = "cl"
    gamma: float = defaults.GAMMA_T
    kl: str = defaults.KL
    kd_temperature: float = defaults.KD_TEMPERATURE
    eps: float = defaults.EPS
    step: float = defaults.STEP
    steps: int = defaults.STEPS
    beta: float = defaults.TRADES_BETA
    map_size: int = defaults.MAP_SIZE
    nfgsm_noise: float = defaults.NFGSM_NOISE


class Trainer:
    """A model, an optional frozen teacher with tutor taps, SGD + schedule, and the loop's job interface.
    Built from objects (your model, teacher and ``DataBundle``), or by ``from_config`` from a
    RetrainConfig / TeacherTrainConfig as ``rnas retrain`` / ``rnas teacher train`` do; ``fit(run)`` trains."""

    def __init__(self, command: str, cfg, model: nn.Module, data, objective: Objective, device: torch.device,
                 teacher: nn.Module | None = None, tutors: dict | None = None, extra_state: dict | None = None,
                 dist: Dist = SINGLE, macs: tuple[int, int] | None = None):
        fill_recipe(cfg)  # a config built in Python leaves these to its dataset, as the CLI does
        self.command, self.cfg, self.model, self.obj = command, cfg, model, objective
        self.device, self.teacher, self.extra_state, self.dist = device, teacher, extra_state or {}, dist
        check_batch(data.train.batch_size, dist)
        self.data = data.shard(dist)
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
        self.mixture = any(isinstance(m, MixtureBatchNorm2d) for m in model.modules())
        if macs is None:  # (student, teacher) MACs of one image; counted here unless the caller did
            size = data.input_size
            with contextlib.ExitStack() as paused:  # one image through each model
                for taps in (self.student_taps, self.teacher_taps):
                    if taps is not None:
                        paused.enter_context(taps.paused())
                macs = (count_macs(model, size, device),
                        count_macs(teacher, size, device) if teacher is not None else 0)
        self.meter = CostMeter(model, teacher, *macs, len(data.train) * data.train.batch_size)
        self.captured = captured(getattr(cfg, "graphs", "off"), device)
        if self.captured:
            check_training_capturable(cfg, objective, dist)
            self.meter.hooked = False  # a compiled graph cannot run the meter's hooks: train_step counts
        compile_model(model, getattr(cfg, "compile", False) and not self.captured)
        self._loss = capture(self.loss_terms, device) if self.captured else self.loss_terms
        self.opt = make_optimizer(model.parameters(), cfg, fused=self.captured)
        self.scheduler = make_scheduler(self.opt, cfg, len(self.data.train))
        self.scaler = make_grad_scaler(getattr(cfg, "amp", "none"), device)
        self.epoch, self.step, self.progress = 0, 0, None
        self.best = None  # --robust-val: {"epoch", "val_robust_acc"} of the best epoch

    BUILDERS: dict[type, Callable] = {}  # config class -> builder; retrain.py and teacher_train.py add theirs

    @classmethod
    def from_config(cls, cfg, dist: Dist | None = None) -> Trainer:
        """The trainer of ``rnas retrain`` (a RetrainConfig) or ``rnas teacher train`` (a TeacherTrainConfig):
        the builder the config's module entered in ``Trainer.BUILDERS``."""
        if type(cfg) not in cls.BUILDERS:
            raise TypeError(f"Trainer.from_config: no builder for {type(cfg).__name__} "
                            f"(known: {', '.join(c.__name__ for c in cls.BUILDERS)})")
        return cls.BUILDERS[type(cfg)](cfg, dist)

    def log_tables(self, tb, epoch: int) -> None:
        """Nothing beyond the scalars: a fixed network has no width or tutor tables."""

    def fit(self, run, resume: bool = False, *, callbacks=(), should_stop=None):
        """Train into the run directory ``run`` (see ``rnas.engine.loop.run_job``); returns it."""
        from pathlib import Path

        return run_job(self, Path(run), resume, callbacks=callbacks, should_stop=should_stop)

    def _noise(self) -> torch.Generator | None:
        """Random starts of adversarial examples: the global stream in one process; under torchrun a stream
        of (seed, epoch, step, rank), so ranks draw different noise for their different samples."""
        if not self.dist.enabled:
            return None
        return keyed_generator(self.device, getattr(self.cfg, "seed", 0), self.epoch, self.step, 2, self.dist.rank)

    @property
    def loader(self):
        return self.data.train

    def begin_epoch(self, epoch: int) -> None:
        self.model.train()

    def _autocast(self):
        return autocast(self.device, getattr(self.cfg, "amp", "none"))

    def _forward(self, x, route: str, tap: bool = True) -> torch.Tensor:
        taps = self.student_taps.paused() if (self.student_taps and not tap) else contextlib.nullcontext()
        with bn_route(self.model, route), taps, self._autocast():
            return full_precision(self.model(x))

    def base_terms(self, x, y) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(terms, clean logits) of the base objective; student taps hold the clean forward's maps."""
        o = self.obj
        if o.base == "trades":
            x_adv = trades_examples(self.model, x, o.eps, o.step, o.steps, self._noise())
            logits_adv = self._forward(x_adv, "adv", tap=False)
            logits = self._forward(x, "clean")
            terms = trades_terms(logits, logits_adv, y, o.beta)
            return {**terms, "base": terms["trades"]}, logits
        if o.base in ("pgd", "nfgsm"):
            x_adv = (pgd_examples(self.model, x, y, o.eps, o.step, o.steps, self._noise()) if o.base == "pgd"
                     else nfgsm_examples(self.model, x, y, o.eps, o.nfgsm_noise, self._noise()))
            logits = self._forward(x_adv, "adv")  # the taps hold this forward's maps
            adversarial = F.cross_entropy(logits, y)
            if not self.mixture:
                return {"base": adversarial}, logits
            natural = F.cross_entropy(self._forward(x, "clean", tap=False), y)  # Mixture BN: clean images too
            return {"natural": natural, "adversarial": adversarial, "base": (natural + adversarial) / 2}, logits
        logits = self._forward(x, "adv")
        return {"base": F.cross_entropy(logits, y)}, logits

    def objective(self, x, y) -> dict[str, torch.Tensor]:
        """Eq. (3): base + KL(p, q) + gamma_t · L_attn (per the distillation mode); one captured graph under
        ``--graphs``."""
        return self._loss(x, y)

    def loss_terms(self, x, y) -> dict[str, torch.Tensor]:
        """The terms of ``objective``: tensors in, tensors out (captured: static shapes, no host read)."""
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
        return {**terms, **rnas_loss(logits, q, y, attention, gamma=o.gamma, kl=o.kl,
                                              temperature=o.kd_temperature, base=terms["base"])}

    def train_step(self, x, y) -> dict[str, torch.Tensor]:
        """One SGD step; under torchrun on this rank's share of the global batch, gradients averaged."""
        terms = self.objective(x, y)
        self.opt.zero_grad(set_to_none=True)
        measure = "attn_weighted" in terms and share_step(self)
        n_global = self.data.train.batch_size if self.dist.enabled else len(y)
        weight = self.dist.share_weight(n_global)
        share = backward_with_share(self.scaler.scale(terms["total"] * weight),
                                    self.scaler.scale(terms["attn_weighted"] * weight) if measure else None,
                                    list(self.model.parameters()))
        if share is not None:
            terms["attn_grad_share"] = share
        if self.captured:  # what the meter's hooks count in eager mode (the backward that reaches the logits)
            self.meter.count(student_fwd_images=len(y), student_bwd_images=len(y),
                             teacher_fwd_images=len(y) * (self.obj.distill != "none"))
        self.dist.average_gradients(list(self.model.parameters()))
        self.scaler.step(self.opt)
        self.scaler.update()
        return self.dist.global_means({k: v.detach() for k, v in terms.items()}, len(y) / n_global)

    def epoch_record(self) -> dict:
        with self.meter.paused():
            val_acc = clean_accuracy(self.model, self.data.val, self.student_taps, self.dist)
            robust = self.robust_validation()
        return {"val_acc": val_acc, **robust, **self.meter.record(self.dist)}

    def robust_validation(self) -> dict:
        """With ``robust_val`` N > 0: PGD-10 accuracy at the run's eps on the end of the validation split, and
        the best epoch so far (RUN/best.pt holds its model once the epoch's checkpoint is written)."""
        n = getattr(self.cfg, "robust_val", 0) or 0
        if not n:
            return {}
        accuracy, attacked = robust_accuracy(self.model, self.data.val, n, self.obj.eps, self.obj.step,
                                             self.student_taps, self.dist, (getattr(self.cfg, "seed", 0), self.epoch))
        if self.best is None or accuracy > self.best["val_robust_acc"]:
            self.best = {"epoch": self.epoch + 1, "val_robust_acc": accuracy}  # epochs done, as in checkpoints
        return {"val_robust_acc": accuracy, "val_robust_n": attacked, "best_epoch": self.best["epoch"] - 1}

    def after_checkpoint(self, run) -> None:
        """After an epoch's checkpoint (and when a run starts or resumes): when the model of this moment is the
        best epoch's, write it as RUN/best.pt unless that file already holds it (a run stopped between its
        checkpoint and best.pt gets it on resume)."""
        from pathlib import Path

        best = self.best
        if not (best and best["epoch"] == self.epoch and self.step == 0 and self.dist.main):
            return
        if best_epoch_of(Path(run) / BEST) != self.epoch:
            write_best(self, Path(run))

    def state(self) -> dict:
        return {"format": TRAIN_CHECKPOINT, "kind": self.command, "epoch": self.epoch, "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "progress": self.progress,
                "world_size": self.dist.world, "scaler": self.scaler.state_dict(),
                "config": dataclasses.asdict(self.cfg), "cost": self.meter.state(), "best": self.best,
                **self.extra_state}

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step, self.progress = ckpt["epoch"], ckpt["step"], ckpt.get("progress")
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.meter.load_state(ckpt.get("cost"))
        self.best = ckpt.get("best")
        set_rng_state(ckpt["rng"])
        note_world_change(ckpt.get("world_size", 1), self.dist)

    def close(self) -> None:
        self.meter.remove()
        for taps in (self.student_taps, self.teacher_taps):
            if taps is not None:
                taps.remove()


def check_training_capturable(cfg, objective: Objective, dist: Dist) -> None:
    """What ``--graphs on`` cannot capture yet in a training step, as one line."""
    graphs = getattr(cfg, "graphs", "off")
    if objective.base != "ce":
        raise UserError(f"--graphs {graphs}: the adversarial examples' attack loop ({objective.base}) is not "
                        "captured yet; use --graphs off")
    check_capturable(graphs, getattr(cfg, "amp", "none"), dist.enabled)
