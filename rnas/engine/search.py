"""The RNAS-CL search: bilevel 80/20 steps on one supernet, a frozen teacher and the tutor module.

The teacher runs once per batch (inference mode); then the batch is split: the first 80 % of its
samples take a weight step (SGD), the rest an architecture step (Adam on the width logits and the tutor
logits), both on Eq. (2). Temperatures follow tau_e = tau_0 · exp(-tau_decay · e). The loop reads top
to bottom: teacher -> split -> weight step -> arch step -> log -> checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from rnas.config import defaults, flag, parse_macs
from rnas.config.sections import DataSection, OptimSection, RuntimeSection, TeacherSection, shared
from rnas.data import DataBundle, keyed_generator, loaders_for
from rnas.engine.cost import CostMeter, count_macs
from rnas.engine.loop import clean_accuracy, run_job, share_step
from rnas.engine.optim import fill_recipe, make_grad_scaler, make_optimizer, make_scheduler
from rnas.errors import UserError
from rnas.method.distill import (
    FLOP_KINDS,
    CrossLayerAttention,
    attention_maps,
    backward_with_share,
    channel_energy,
    flop_factor,
    rnas_loss,
    teacher_targets,
)
from rnas.method.taps import Taps, conv_taps
from rnas.method.tutor_robust import TUTOR_ATTACKS, lookahead_tutor_gradient
from rnas.method.tutors import TUTOR_OBJECTIVES, gradient_only, tutor_diversity, weighted_distance
from rnas.robust.attacks import parse_eps
from rnas.runtime.device import (
    autocast,
    capture,
    captured,
    check_capturable,
    check_fits,
    compile_model,
    full_precision,
    place,
)
from rnas.runtime.distributed import (
    SINGLE,
    Dist,
    check_batch,
    convert_sync_bn,
    device_name,
    join_job,
    note_world_change,
    on_every_rank,
)
from rnas.runtime.rundir import SEARCH_CHECKPOINT, resume_checkpoint, rng_state, seed_everything, set_rng_state
from rnas.teachers import load_teacher, require_weights
from search_spaces import load_space, parse_space, spec_to_dict
from supernets import Network


@dataclass
class SearchConfig(RuntimeSection, OptimSection, TeacherSection, DataSection):
    space: str = flag("S5", "search space: built-in name (s3 s5 s7 m l is im i) or a YAML path")
    out: str = shared(RuntimeSection, "out", "runs/search")
    epochs: int | None = shared(OptimSection, "epochs", None, "search epochs (default: 100)", range=">= 1")
    batch_size: int | None = shared(OptimSection, "batch_size", None, "global batch size, split 80/20 into weight "
                                    "and arch samples, all ranks together under torchrun (default: 128; 256 on "
                                    "ImageNet-100)", range=">= 2")
    lr: float | None = shared(OptimSection, "lr", None, "SGD lr of the weights (default: 0.1; 0.05 on ImageNet-100)",
                              range="> 0")
    weight_decay: float | None = shared(OptimSection, "weight_decay", None, "SGD weight decay (default: 2e-4; 4e-5 "
                                        "on ImageNet-100)", range=">= 0")
    cosine: bool | None = shared(OptimSection, "cosine", None, "cosine lr schedule to zero instead of milestones "
                                 "(default: on for ImageNet-100)")
    arch_lr: float = flag(0.01, "Adam learning rate of the width and tutor logits", range="> 0")
    arch_split: float = flag(0.2, "fraction of each batch used for the arch step", range="(0, 1)")
    tau: float = flag(5.0, "initial Gumbel temperature of the width choices", range="> 0")
    tutor_tau: float = flag(5.0, "initial Gumbel temperature of the tutor choices", range="> 0")
    tau_decay: float = flag(0.045, "both temperatures are multiplied by exp(-tau_decay) every epoch", range=">= 0")
    gamma_s: float = flag(defaults.GAMMA_S, "gamma_s of Eq. 2, weight of the attention loss (paper's 1/(n_s n_t) form)",
                          range=">= 0")
    kl: str = flag(defaults.KL, "logit term: paper = KL(p, q) as Eq. 2; hinton = T^2 KL(q_T || p_T)",
                   choices=("paper", "hinton"))
    kd_temperature: float = flag(defaults.KD_TEMPERATURE, "temperature of the hinton KL", range="> 0")
    flop: str = flag("power", "n_f of the sampled nets: power = (MACs/max)^mac_exponent, linear = MACs/max, "
                     "fbnetv2 = alpha log(MACs)^beta, none", choices=FLOP_KINDS)
    mac_exponent: float = flag(defaults.MAC_EXPONENT, "power factor: a 1 % MAC cut is worth this many % of the loss",
                               range=">= 0")
    flop_alpha: float = flag(defaults.FLOP_ALPHA, "alpha of the fbnetv2 factor", range=">= 0")
    flop_beta: float = flag(defaults.FLOP_BETA, "beta of the fbnetv2 factor", range=">= 0")
    mac_target: float | None = flag(None, "MAC budget, e.g. 6.64M: n_f = max(MACs/T, T/MACs)^mac_target_exponent "
                                    "and rnas derive picks the net under it", parse=parse_macs)
    mac_target_exponent: float = flag(1.0, "pull towards --mac-target", range=">= 0")
    map_size: int = flag(defaults.MAP_SIZE, "side of the common attention-map size", range=">= 1")
    shortcut_taps: bool = flag(True, "tap the teacher's 1x1 shortcut convs too")
    tutor_objective: str = flag(defaults.TUTOR_OBJECTIVE, "what moves the tutor logits in the arch step: paper = Eq. 1 "
                                "(each layer's nearest teacher map; collapses onto one teacher tap), standardised = "
                                "distances z-scored over the student layers (chosen by measurement: docs/"
                                "experiments/cifar10-tutors.md), robust = the adversarial loss after a look-ahead "
                                "weight step, robust-standardised = that signal z-scored",
                                choices=tuple(TUTOR_OBJECTIVES))
    tutor_attack: str = flag("fgsm", "robust objective: the attack on the arch slice", choices=TUTOR_ATTACKS)
    tutor_attack_steps: int = flag(1, "robust objective: PGD steps of --tutor-attack pgd", range=">= 1")
    tutor_eps: float = flag(defaults.EPS, "robust objective: l_inf budget of the attack (pixel units, e.g. 8/255)",
                            parse=parse_eps, range="> 0")
    lookahead_lr: float | None = flag(None, "robust objective: look-ahead step size (default: the weight lr)",
                                      range="> 0")


def _set_requires_grad(params, flag_: bool) -> None:
    for p in params:
        p.requires_grad_(flag_)


@contextlib.contextmanager
def frozen_bn_statistics(model: torch.nn.Module):
    """BN layers normalise with batch statistics but leave their running statistics alone (the arch step
    updates logits only; its small sub-batch must not move the statistics validation and derive use)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def check_input_size(spec, data: DataBundle, space: str, what: str) -> None:
    """The space's image side must be the data's."""
    if spec.input_size != data.input_size:
        raise UserError(f"--space {space}: a {spec.input_size}x{spec.input_size} space, but {what} has "
                        f"{data.input_size}x{data.input_size} images")


class Searcher:
    """A search from objects: a supernet, a teacher (any module on [0, 1] images whose convolutions are
    tapped), a ``DataBundle`` and a ``SearchConfig`` (its optimisation, temperature and loss fields; the
    data and teacher fields are for ``from_config``). ``fit(run)`` trains into a run directory. Every check
    happens here, before the run directory is touched. Under ``torchrun`` pass ``dist`` (``from_config``
    joins the job itself)."""

    def __init__(self, supernet: Network, teacher: torch.nn.Module, data: DataBundle, cfg: SearchConfig, *,
                 device: torch.device | None = None, dist: Dist = SINGLE):
        fill_recipe(cfg, search=True)  # a config built in Python leaves these to its dataset, as the CLI does
        self.cfg, self.dist = cfg, dist
        if not 0 < cfg.arch_split < 1:
            raise UserError(f"--arch-split {cfg.arch_split}: must be in (0, 1)")
        if cfg.batch_size < 2:
            raise UserError(f"--batch-size {cfg.batch_size}: needs at least 2 (one weight, one arch sample)")
        if cfg.mac_target is not None and cfg.flop not in ("power", "linear"):
            raise UserError(f"--mac-target needs --flop power or linear, not {cfg.flop}")
        self.device = device or next(supernet.parameters()).device
        spec = supernet.spec
        check_input_size(spec, data, cfg.space, "the data")
        check_batch(data.train.batch_size, dist)
        self.data = data.shard(dist, self.parts)
        self.teacher = teacher.eval().requires_grad_(False)
        if cfg.sync_bn:
            convert_sync_bn(supernet, self.device)
        self.supernet = supernet
        example = torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size, device=self.device)
        t_layers = conv_taps(self.teacher, example, cfg.shortcut_taps)
        s_layers = self.supernet.tap_layers()  # masked activations: what the sampled network computes
        self.teacher_layers, self.student_layers = [n for n, _ in t_layers], [n for n, _ in s_layers]
        self.teacher_taps = Taps(t_layers, channel_energy)
        self.student_taps = Taps(s_layers, channel_energy)
        with self.student_taps.paused(), self.teacher_taps.paused():  # one image through each, to count MACs
            self.meter = CostMeter(supernet, self.teacher, count_macs(supernet, spec.input_size, self.device),
                                   count_macs(self.teacher, spec.input_size, self.device),
                                   len(self.data.train) * self.data.train.batch_size)
        self.tutor = CrossLayerAttention(len(s_layers), len(t_layers), cfg.tutor_tau).to(self.device)
        self.tutor_objective = TUTOR_OBJECTIVES[cfg.tutor_objective]
        self.captured = captured(cfg.graphs, self.device)
        if self.captured:
            check_search_capturable(cfg, self.tutor_objective, dist)
            self.meter.hooked = False  # a compiled graph cannot run the meter's hooks: train_step counts
        compile_model(self.supernet, cfg.compile and not self.captured)  # after the taps: hooks traced with it
        self._loss = capture(self.loss_terms, self.device) if self.captured else self.loss_terms
        self._teacher = capture(self._teacher_targets, self.device) if self.captured else self._teacher_targets
        self.arch_params = self.supernet.arch_parameters() + [self.tutor.tutor_logits]
        self.weight_params = self.supernet.weight_parameters()
        self.weight_opt = make_optimizer(self.weight_params, cfg, fused=self.captured)
        self.arch_opt = torch.optim.Adam(self.arch_params, cfg.arch_lr, **({"fused": True} if self.captured else {}))
        self.scheduler = make_scheduler(self.weight_opt, cfg)
        self.scaler = make_grad_scaler(cfg.amp, self.device)
        self.max_macs = self.supernet.cost([0] * len(self.supernet.searched_blocks))[1]
        self.epoch, self.step, self.progress = 0, 0, None
        self.begin_epoch(0)

    @classmethod
    def from_config(cls, cfg: SearchConfig, spec=None, dist: Dist | None = None) -> Searcher:
        """Data, teacher and supernet built from the config's names (what ``rnas search`` runs)."""
        device, dist = join_job(cfg.device, dist)
        cfg.device = device_name(device, dist)  # config.yaml says where it ran
        spec = spec or load_space(cfg.space)
        require_weights(cfg)
        fill_recipe(cfg, search=True)  # batch size, lr, weight decay and schedule of the dataset's search recipe
        seed_everything(cfg.seed)
        data = loaders_for(cfg, device)
        check_input_size(spec, data, cfg.space, f"--data {cfg.data}")  # before the teacher is loaded
        teacher = place(load_teacher(cfg.teacher, cfg.teacher_ckpt, cfg.model_dir, cfg.data, cfg.threat,
                                     data.num_classes), device)
        check_fits(spec, data.num_classes, device, f"--space {cfg.space}")
        supernet = place(Network(spec, data.num_classes), device)
        return cls(supernet, teacher, data, cfg, device=device, dist=dist)

    def parts(self, batch: int) -> list[int]:
        """The weight and arch parts of a global batch: the first ~80 % and the rest."""
        n = min(batch - 1, max(1, round(batch * (1 - self.cfg.arch_split))))
        return [n, batch - n]

    def fit(self, run: str | Path, resume: bool = False, *, callbacks=(), should_stop=None) -> Path:
        """Train into the run directory ``run`` (see ``rnas.engine.loop.run_job``); returns it."""
        return run_job(self, Path(run), resume, callbacks=callbacks, should_stop=should_stop)

    # ---- one objective, two steps ------------------------------------------------------------
    def autocast(self):
        return autocast(self.device, self.cfg.amp)

    def teacher_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher logits q (N, classes) and attention maps (N, n_t, map_size²): one inference-mode forward
        of the whole batch, sliced by the weight and arch steps (captured under ``--graphs``)."""
        return self._teacher(x)

    def _teacher_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return teacher_targets(self.teacher, x, self.teacher_taps, self.cfg.map_size, self.autocast())

    def draw(self, n_global: int, noise: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One Gumbel draw for a part of ``n_global`` samples, this rank's rows: (width weights, tutor weights)."""
        widths = self.dist.rows(self.supernet.width_weights(n_global, noise))
        return widths, self.dist.rows(self.tutor.tutor_weights(n_global, noise))

    def student_forward(self, x: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits p (float32) and attention maps (N, n_s, map_size²) of the sampled networks."""
        with self.autocast():
            p = full_precision(self.supernet(x, widths))
        return p, attention_maps(self.student_taps.collect(), self.cfg.map_size)

    def objective(self, x: torch.Tensor, y: torch.Tensor, targets, n_global: int | None = None,
                  noise: torch.Generator | None = None, part: str = "weight",
                  draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Eq. (2) on one sub-batch: student with taps, tutor loss, against ``targets`` = (q, teacher
        maps) of these samples (a slice of ``teacher_targets``). n_f costs the very networks the forward
        sampled (its per-sample Gumbel weights). Under torchrun ``x`` is this rank's share of a part of
        ``n_global`` samples: the Gumbel weights are drawn (from ``noise``) for all of them and sliced, and
        n_f is the mean over the whole part. ``part="arch"``: the tutor logits' gradient is the one
        ``--tutor-objective`` defines (the reported terms are Eq. 2's either way). ``draws``: (width
        weights, tutor weights) to use instead of drawing them. The draws happen here, eagerly (a generator
        cannot be captured); the rest is ``loss_terms``, one captured graph under ``--graphs``."""
        n_global = n_global or len(x)
        widths, tutor_weights = draws or self.draw(n_global, noise)
        return self._loss(x, y, *targets, widths, tutor_weights, n_global, part)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, q: torch.Tensor, t_maps: torch.Tensor,
                   widths: torch.Tensor, tutor_weights: torch.Tensor, n_global: int,
                   part: str) -> dict[str, torch.Tensor]:
        """Eq. (2)'s terms for given Gumbel draws: tensors in, tensors out, static shapes, no host read."""
        cfg, dist = self.cfg, self.dist
        p, s_maps = self.student_forward(x, widths)
        distances = self.tutor.pair_distances(s_maps, t_maps)
        surrogate = None
        if part == "arch":
            attention, surrogate = self.tutor_objective.arch_attention(tutor_weights, distances)
        else:
            attention = weighted_distance(tutor_weights, distances)
        n_f = None
        macs = self.supernet.expected_macs(widths)
        if cfg.flop != "none":
            n_f = flop_factor(macs, self.max_macs, cfg.flop, exponent=cfg.mac_exponent, alpha=cfg.flop_alpha,
                              beta=cfg.flop_beta, target_macs=cfg.mac_target, target_exponent=cfg.mac_target_exponent)
            n_f = dist.differentiable_sum(n_f * (len(x) / n_global)) if dist.enabled else n_f
        terms = rnas_loss(p, q, y, attention, gamma=cfg.gamma_s, kl=cfg.kl, temperature=cfg.kd_temperature, n_f=n_f)
        if surrogate is not None:  # zero-valued: moves the tutor logits, changes no reported number
            scale = cfg.gamma_s * (terms["n_f"].detach() if n_f is not None else 1.0)
            terms["total"] = terms["total"] + scale * gradient_only(surrogate)
        terms["sampled_macs"] = macs.detach().mean()
        return terms

    def _step(self, x, y, targets, optimizer: torch.optim.Optimizer, params: list, frozen: list, n_global: int,
              noise: torch.Generator | None, share_of: list | None = None, part: str = "weight",
              extra_grads: dict | None = None) -> dict[str, torch.Tensor]:
        """One optimizer step on Eq. (2) over ``params``; ``frozen`` parameters get no gradient (and cost
        no backward). With ``share_of`` (parameters) the attention term's gradient share over them is
        measured too. Under torchrun the gradients are averaged over the ranks before the step."""
        _set_requires_grad(frozen, False)
        try:
            terms = self.objective(x, y, targets, n_global, noise, part)
            optimizer.zero_grad(set_to_none=True)
            weight = self.dist.share_weight(n_global)
            share = backward_with_share(self.scaler.scale(terms["total"] * weight),
                                        self.scaler.scale(terms["attn_weighted"] * weight) if share_of else None,
                                        share_of or [])
            if share is not None:
                terms["attn_grad_share"] = share
            for param, grad in (extra_grads or {}).items():  # a gradient computed apart (robust tutors)
                param.grad = self.scaler.scale(grad) if param.grad is None else param.grad + self.scaler.scale(grad)
            self.dist.average_gradients(params)
            self.scaler.step(optimizer)
            self.scaler.update()
        finally:
            _set_requires_grad(frozen, True)
        return terms

    def weight_step(self, x, y, targets, measure_share: bool = False, n_global: int | None = None,
                    noise: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """SGD on the supernet weights; width and tutor logits frozen."""
        return self._step(x, y, targets, self.weight_opt, self.weight_params, self.arch_params,
                          n_global or len(x), noise, self.weight_params if measure_share else None)

    def arch_step(self, x, y, targets, n_global: int | None = None, noise: torch.Generator | None = None,
                  lookahead=None) -> dict[str, torch.Tensor]:
        """Adam on the width and tutor logits; weights and BN running statistics frozen. With the robust
        tutor objective ``lookahead`` is the weight slice (x, y, targets, n_global) and the generator of
        the look-ahead's draws: the tutor logits then take ``lookahead_tutor_gradient``."""
        n_global = n_global or len(x)
        with frozen_bn_statistics(self.supernet):
            extra, measured = {}, {}
            if self.tutor_objective.hypergradient:
                weight_part, generator = lookahead
                grad, measured = lookahead_tutor_gradient(self, weight_part, (x, y, targets, n_global), generator,
                                                          self.cfg.lookahead_lr)
                extra = {self.tutor.tutor_logits: grad}
            terms = self._step(x, y, targets, self.arch_opt, self.arch_params, self.weight_params, n_global, noise,
                               part="arch", extra_grads=extra)
        return {**terms, **measured}

    # ---- the loop's job interface (rnas/loop.py) -------------------------------------------------
    command = "search"

    @property
    def loader(self):
        return self.data.train

    def begin_epoch(self, epoch: int) -> None:
        """Temperatures of both Gumbel softmaxes: tau_0 · exp(-tau_decay · epoch)."""
        decay = math.exp(-self.cfg.tau_decay * epoch)
        self.supernet.tau, self.tutor.tau = self.cfg.tau * decay, self.cfg.tutor_tau * decay
        # the step reports them as tensors: made once an epoch, not copied to the device every step
        self._temperatures = {"tau": torch.tensor(self.supernet.tau, device=self.device),
                              "tutor_tau": torch.tensor(self.tutor.tau, device=self.device)}

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher on the whole batch -> split 80/20 -> weight step on the first part -> arch step on the rest.
        Under torchrun ``x`` is this rank's share of the weight part followed by its share of the arch part."""
        dist = self.dist
        n_w, n_a = self.parts(self.data.train.batch_size if dist.enabled else len(y))
        n = dist.share_size(n_w)
        noise = keyed_generator(self.device, self.cfg.seed, self.epoch, self.step, 1)  # Gumbel draws of this step
        q, t_maps = self.teacher_targets(x)
        w_terms = self.weight_step(x[:n], y[:n], (q[:n], t_maps[:n]), share_step(self), n_w, noise)
        lookahead = None
        if self.tutor_objective.hypergradient:  # its own draws: the other streams stay as they are
            lookahead = ((x[:n], y[:n], (q[:n], t_maps[:n]), n_w),
                         keyed_generator(self.device, self.cfg.seed, self.epoch, self.step, 2))
        a_terms = self.arch_step(x[n:], y[n:], (q[n:], t_maps[n:]), n_a, noise, lookahead)
        if self.captured:  # what the meter's hooks count in eager mode: images through the forwards and the
            # backwards that reach the logits (a share step's extra backward of the attention term does not)
            self.meter.count(student_fwd_images=len(y), student_bwd_images=len(y), teacher_fwd_images=len(y))
        w_terms = dist.global_means(w_terms, n / n_w)  # each part's means over all ranks
        a_terms = dist.global_means(a_terms, (len(y) - n) / n_a)
        return {**{f"weight/{k}": v for k, v in w_terms.items()}, **{f"arch/{k}": v for k, v in a_terms.items()},
                "expected_macs": self.supernet.expected_macs().detach(), **self._temperatures}

    def epoch_record(self) -> dict:
        """Validation accuracy of the argmax architecture, its MACs, and TensorBoard width/tutor tables."""
        probs = self.supernet.width_probs().detach().cpu()
        widths = [b.width_choices[k] for b, k in zip(self.supernet.searched_blocks, self.supernet.argmax_choices(),
                                                        strict=True)]
        record = {"tau": self.supernet.tau, "tutor_tau": self.tutor.tau,
                  "expected_macs": self.supernet.expected_macs().item(), "argmax_macs": self.supernet.cost()[1],
                  "argmax_widths": widths,
                  "width_probs": [[round(p, 4) for p in row[:len(b.width_choices)]]
                                  for row, b in zip(probs.tolist(), self.supernet.searched_blocks, strict=True)],
                  **tutor_diversity(self.tutor.tutors(), self.tutor.tutor_probs().detach().cpu())}
        with self.meter.paused():
            record["val_acc"] = clean_accuracy(self.supernet, self.data.val, self.student_taps, self.dist)
        record.update(self.meter.record(self.dist))
        return record

    def log_tables(self, tb, epoch: int) -> None:
        """TensorBoard: every block's width probabilities and the tutor probability matrix as an image."""
        from rnas.nets.graph import tutor_heatmap_figure  # networkx and matplotlib: only when logging tables

        probs = self.supernet.width_probs().detach().cpu()
        for b, block in enumerate(self.supernet.searched_blocks):
            for k, width in enumerate(block.width_choices):
                tb.add_scalar(f"width/block{b:02d}/{width}", probs[b, k].item(), epoch)
        probs = self.tutor.tutor_probs().detach().cpu()
        figure = tutor_heatmap_figure(probs.tolist(), self.student_layers, self.teacher_layers,
                                      f"tutor probabilities, epoch {epoch + 1}")
        if figure is not None:
            tb.add_figure("tutor_probabilities", figure, epoch)
        else:  # without matplotlib: the matrix upscaled, in colour, scaled to its own range
            tb.add_image("tutor_probabilities", heat_image(probs), epoch, dataformats="CHW")

    def close(self) -> None:
        self.meter.remove()
        self.teacher_taps.remove()
        self.student_taps.remove()

    # ---- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": SEARCH_CHECKPOINT, "epoch": self.epoch, "step": self.step,
                "supernet": self.supernet.state_dict(), "tutor": self.tutor.state_dict(),
                "weight_opt": self.weight_opt.state_dict(), "arch_opt": self.arch_opt.state_dict(),
                "scheduler": self.scheduler.state_dict(), "tau": self.supernet.tau, "tutor_tau": self.tutor.tau,
                "rng": rng_state(), "config": dataclasses.asdict(self.cfg), "progress": self.progress,
                "world_size": self.dist.world, "scaler": self.scaler.state_dict(),
                "spec": spec_to_dict(self.supernet.spec), "num_classes": self.supernet.num_classes,
                "student_layers": self.student_layers, "teacher_layers": self.teacher_layers,
                "cost": self.meter.state()}

    def load_state(self, ckpt: dict) -> None:
        self.supernet.load_state_dict(ckpt["supernet"])
        self.tutor.load_state_dict(ckpt["tutor"])
        self.weight_opt.load_state_dict(ckpt["weight_opt"])
        self.arch_opt.load_state_dict(ckpt["arch_opt"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step, self.progress = ckpt["epoch"], ckpt["step"], ckpt.get("progress")
        self.supernet.tau, self.tutor.tau = ckpt["tau"], ckpt["tutor_tau"]
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.meter.load_state(ckpt.get("cost"))
        set_rng_state(ckpt["rng"])
        note_world_change(ckpt.get("world_size", 1), self.dist)


def check_search_capturable(cfg: SearchConfig, objective, dist: Dist) -> None:
    """What ``--graphs on`` cannot capture yet in a search step, as one line."""
    if objective.hypergradient:
        raise UserError(f"--graphs {cfg.graphs}: the {cfg.tutor_objective} tutor objective's look-ahead is not "
                        "captured; use --graphs off")
    check_capturable(cfg.graphs, cfg.amp, dist.enabled)


def heat_image(probs: torch.Tensor, cell: int = 12) -> torch.Tensor:
    """(3, H, W) in [0, 1]: each entry a ``cell``-pixel square, coloured dark blue (the matrix's minimum)
    through green to yellow (its maximum)."""
    low, high = probs.min(), probs.max()
    t = ((probs - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
    rgb = torch.stack([t.square(), 0.15 + 0.75 * t, 0.5 * (1 - t) + 0.1], 0)
    return rgb.repeat_interleave(cell, 1).repeat_interleave(cell, 2).clamp(0, 1)


def run_search(cfg: SearchConfig, run: Path, resume: bool = False, *, callbacks=(), should_stop=None,
               dist: Dist | None = None) -> Path:
    """Search into ``run`` (a fresh directory, or an existing run when ``resume``)."""
    dist = join_job(cfg.device, dist)[1]

    def build() -> Searcher:  # every user error surfaces here, on every rank, before anything is written
        ckpt = resume_checkpoint(run, resume)
        spec = parse_space(ckpt["spec"], f"{run}/checkpoint.pt:spec") if ckpt else None
        searcher = Searcher.from_config(cfg, spec, dist)
        if ckpt:
            if ckpt["student_layers"] != searcher.student_layers:
                raise UserError(f"{run}/checkpoint.pt: searched with the student taps of an older rnas "
                                f"({ckpt['student_layers'][:2]}...); it cannot be resumed: start a new search")
            searcher.load_state(ckpt)
        return searcher

    return on_every_rank(dist, build).fit(run, resume, callbacks=callbacks, should_stop=should_stop)
