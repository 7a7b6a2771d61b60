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

from search_spaces import load_space, parse_space, spec_to_dict
from supernets import Network

from .config import flag, parse_macs
from .data import DATASETS, make_loaders
from .device import autocast, check_fits, compile_model, place, resolve_device
from .distill import (
    FLOP_KINDS,
    CrossLayerAttention,
    attention_maps,
    backward_with_share,
    channel_energy,
    flop_factor,
    rnas_loss,
    teacher_targets,
)
from .errors import UserError
from .loop import clean_accuracy, run_job, share_step
from .rundir import resume_checkpoint, rng_state, seed_everything, set_rng_state
from .taps import Taps, conv_taps
from .teachers import load_teacher

CHECKPOINT_FORMAT = "rnas-search-1"
GAMMA_S = 1000.0  # README "CIFAR-10: the study of the defaults" (sweep in progress)
MAC_EXPONENT = 0.01  # chosen by measurement: README "A search that trades accuracy for MACs"


@dataclass
class SearchConfig:
    space: str = flag("S5", "search space: built-in name (s3 s5 s7 m l is im i) or a YAML path")
    teacher: str = flag("wrt34", "teacher architecture: wrt34, wrn-D-K, r18, r50, wrt50")
    teacher_ckpt: str | None = flag(None, "teacher checkpoint: a file, or a RobustBench model name with --model-dir")
    model_dir: str | None = flag(None, "RobustBench model dir, read as <model-dir>/<data>/<threat>/<name>.pt")
    threat: str = flag("Linf", "threat-model folder for --model-dir lookups")
    random_teacher: bool = flag(False, "allow a teacher with random weights (smoke runs only)")
    data: str = flag("cifar10", "dataset", choices=DATASETS)
    data_dir: str | None = flag(None, "dataset root (torchvision layout / ImageFolder root)")
    download: bool = flag(False, "download CIFAR into --data-dir if absent")
    val_size: int | None = flag(None, "validation images carved from the end of train (default per dataset)",
                                range=">= 0")
    limit: int | None = flag(None, "use only the first N training images (smoke runs)", range=">= 1")
    out: str = flag("runs/search", "run directory")
    epochs: int = flag(100, "search epochs", range=">= 1")
    batch_size: int = flag(128, "batch size (split 80/20 into weight and arch samples)", range=">= 2")
    lr: float = flag(0.1, "SGD learning rate of the weights", range="> 0")
    momentum: float = flag(0.9, "SGD momentum", range="[0, 1)")
    weight_decay: float = flag(2e-4, "SGD weight decay", range=">= 0")
    milestones: list[int] = flag([75, 90], "epochs at which the weight lr is multiplied by --lr-decay", range=">= 0")
    lr_decay: float = flag(0.1, "lr factor at each milestone", range="(0, 1]")
    cosine: bool = flag(False, "cosine lr schedule to zero instead of milestones (ImageNet-100 recipe)")
    arch_lr: float = flag(0.01, "Adam learning rate of the width and tutor logits", range="> 0")
    arch_split: float = flag(0.2, "fraction of each batch used for the arch step", range="(0, 1)")
    tau: float = flag(5.0, "initial Gumbel temperature of the width choices", range="> 0")
    tutor_tau: float = flag(5.0, "initial Gumbel temperature of the tutor choices", range="> 0")
    tau_decay: float = flag(0.045, "both temperatures are multiplied by exp(-tau_decay) every epoch", range=">= 0")
    gamma_s: float = flag(GAMMA_S, "gamma_s of Eq. 2, weight of the attention loss (paper's 1/(n_s n_t) form)",
                          range=">= 0")
    kl: str = flag("paper", "logit term: paper = KL(p, q) as Eq. 2; hinton = T^2 KL(q_T || p_T)",
                   choices=("paper", "hinton"))
    kd_temperature: float = flag(4.0, "temperature of the hinton KL", range="> 0")
    flop: str = flag("power", "n_f of the sampled nets: power = (MACs/max)^mac_exponent, linear = MACs/max, "
                     "fbnetv2 = alpha log(MACs)^beta, none", choices=FLOP_KINDS)
    mac_exponent: float = flag(MAC_EXPONENT, "power factor: a 1 % MAC cut is worth this many % of the loss",
                               range=">= 0")
    flop_alpha: float = flag(0.2, "alpha of the fbnetv2 factor", range=">= 0")
    flop_beta: float = flag(0.5, "beta of the fbnetv2 factor", range=">= 0")
    mac_target: float | None = flag(None, "MAC budget, e.g. 6.64M: n_f = max(MACs/T, T/MACs)^mac_target_exponent "
                                    "and rnas derive picks the net under it", parse=parse_macs)
    mac_target_exponent: float = flag(1.0, "pull towards --mac-target", range=">= 0")
    map_size: int = flag(8, "side of the common attention-map size", range=">= 1")
    shortcut_taps: bool = flag(True, "tap the teacher's 1x1 shortcut convs too")
    seed: int = flag(0, "random seed", range=">= 0")
    device: str = flag("cpu", "cpu, cuda, cuda:N or auto")
    workers: int = flag(2, "DataLoader workers (folder datasets)", range=">= 0")
    amp: bool = flag(False, "bfloat16 autocast for the forward passes")
    compile: bool = flag(False, "torch.compile the student (pays on GPUs; slower on CPUs)")
    checkpoint_every: int = flag(0, "also checkpoint every N steps (0: at epoch ends only)", range=">= 0")
    log_every: int = flag(20, "TensorBoard step-logging interval", range=">= 0")


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


class Searcher:
    """Everything a search needs, built and validated before the run directory is touched."""

    def __init__(self, cfg: SearchConfig, spec=None):
        self.cfg = cfg
        if not 0 < cfg.arch_split < 1:
            raise UserError(f"--arch-split {cfg.arch_split}: must be in (0, 1)")
        if cfg.batch_size < 2:
            raise UserError(f"--batch-size {cfg.batch_size}: needs at least 2 (one weight, one arch sample)")
        if cfg.mac_target is not None and cfg.flop not in ("power", "linear"):
            raise UserError(f"--mac-target needs --flop power or linear, not {cfg.flop}")
        self.device = resolve_device(cfg.device)
        spec = spec or load_space(cfg.space)
        if cfg.teacher_ckpt is None and not cfg.random_teacher:
            raise UserError("no teacher checkpoint: give --teacher-ckpt (or --random-teacher for a smoke run)")
        seed_everything(cfg.seed)
        self.data = make_loaders(cfg.data, cfg.data_dir, cfg.batch_size, self.device, cfg.seed, cfg.val_size,
                                 cfg.limit, cfg.workers, cfg.download)
        if spec.input_size != self.data.input_size:
            raise UserError(f"--space {cfg.space}: a {spec.input_size}x{spec.input_size} space, but --data "
                            f"{cfg.data} has {self.data.input_size}x{self.data.input_size} images")
        self.teacher = place(load_teacher(cfg.teacher, cfg.teacher_ckpt, cfg.model_dir, cfg.data, cfg.threat,
                                          self.data.num_classes), self.device)
        check_fits(spec, self.data.num_classes, self.device, f"--space {cfg.space}")
        self.supernet = place(Network(spec, self.data.num_classes), self.device)
        example = torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size, device=self.device)
        t_layers = conv_taps(self.teacher, example, cfg.shortcut_taps)
        s_layers = self.supernet.tap_layers()  # masked activations: what the sampled network computes
        self.teacher_layers, self.student_layers = [n for n, _ in t_layers], [n for n, _ in s_layers]
        self.teacher_taps = Taps(t_layers, channel_energy)
        self.student_taps = Taps(s_layers, channel_energy)
        self.tutor = CrossLayerAttention(len(s_layers), len(t_layers), cfg.tutor_tau).to(self.device)
        compile_model(self.supernet, cfg.compile)  # after the taps: their hooks are traced with it
        self.arch_params = self.supernet.arch_parameters() + [self.tutor.tutor_logits]
        self.weight_params = self.supernet.weight_parameters()
        self.weight_opt = torch.optim.SGD(self.weight_params, cfg.lr, momentum=cfg.momentum,
                                          weight_decay=cfg.weight_decay)
        self.arch_opt = torch.optim.Adam(self.arch_params, cfg.arch_lr)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.weight_opt, cfg.epochs) if cfg.cosine else
                          torch.optim.lr_scheduler.MultiStepLR(self.weight_opt, cfg.milestones, cfg.lr_decay))
        self.max_macs = self.supernet.cost([0] * len(self.supernet.searched_blocks))[1]
        self.epoch, self.step, self.progress = 0, 0, None
        self.begin_epoch(0)

    # ---- one objective, two steps ------------------------------------------------------------
    def autocast(self):
        return autocast(self.device, self.cfg.amp)

    def teacher_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher logits q (N, classes) and attention maps (N, n_t, map_size²): one inference-mode forward
        of the whole batch, sliced by the weight and arch steps."""
        return teacher_targets(self.teacher, x, self.teacher_taps, self.cfg.map_size, self.autocast())

    def objective(self, x: torch.Tensor, y: torch.Tensor, targets) -> dict[str, torch.Tensor]:
        """Eq. (2) on one sub-batch: student with taps, tutor loss, against ``targets`` = (q, teacher
        maps) of these samples (a slice of ``teacher_targets``). n_f costs the very networks the forward
        sampled (its per-sample Gumbel weights)."""
        q, t_maps = targets
        cfg = self.cfg
        weights = self.supernet.width_weights(len(x))
        with self.autocast():
            p = self.supernet(x, weights).float()
        s_maps = attention_maps(self.student_taps.collect(), cfg.map_size)
        attention = self.tutor(s_maps, t_maps)
        n_f = None
        macs = self.supernet.expected_macs(weights)
        if cfg.flop != "none":
            n_f = flop_factor(macs, self.max_macs, cfg.flop, cfg.mac_exponent, cfg.flop_alpha, cfg.flop_beta,
                              cfg.mac_target, cfg.mac_target_exponent)
        terms = rnas_loss(p, q, y, attention, cfg.gamma_s, cfg.kl, cfg.kd_temperature, n_f)
        terms["sampled_macs"] = macs.detach().mean()
        return terms

    def _step(self, x, y, targets, optimizer: torch.optim.Optimizer, frozen: list,
              share_of: list | None = None) -> dict[str, torch.Tensor]:
        """One optimizer step on Eq. (2); ``frozen`` parameters get no gradient (and cost no backward).
        With ``share_of`` (parameters) the attention term's gradient share over them is measured too."""
        _set_requires_grad(frozen, False)
        try:
            terms = self.objective(x, y, targets)
            optimizer.zero_grad(set_to_none=True)
            share = backward_with_share(terms["total"], terms["attn_weighted"] if share_of else None, share_of or [])
            if share is not None:
                terms["attn_grad_share"] = share
            optimizer.step()
        finally:
            _set_requires_grad(frozen, True)
        return terms

    def weight_step(self, x, y, targets, measure_share: bool = False) -> dict[str, torch.Tensor]:
        """SGD on the supernet weights; width and tutor logits frozen."""
        return self._step(x, y, targets, self.weight_opt, self.arch_params,
                          self.weight_params if measure_share else None)

    def arch_step(self, x, y, targets) -> dict[str, torch.Tensor]:
        """Adam on the width and tutor logits; weights and BN running statistics frozen."""
        with frozen_bn_statistics(self.supernet):
            return self._step(x, y, targets, self.arch_opt, self.weight_params)

    # ---- the loop's job interface (rnas/loop.py) -------------------------------------------------
    command = "search"

    @property
    def loader(self):
        return self.data.train

    def begin_epoch(self, epoch: int) -> None:
        """Temperatures of both Gumbel softmaxes: tau_0 · exp(-tau_decay · epoch)."""
        decay = math.exp(-self.cfg.tau_decay * epoch)
        self.supernet.tau, self.tutor.tau = self.cfg.tau * decay, self.cfg.tutor_tau * decay

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher on the whole batch -> split 80/20 -> weight step on the first part -> arch step on the rest."""
        n = min(len(y) - 1, max(1, round(len(y) * (1 - self.cfg.arch_split))))
        q, t_maps = self.teacher_targets(x)
        w_terms = self.weight_step(x[:n], y[:n], (q[:n], t_maps[:n]), measure_share=share_step(self))
        a_terms = self.arch_step(x[n:], y[n:], (q[n:], t_maps[n:]))
        return {**{f"weight/{k}": v for k, v in w_terms.items()}, **{f"arch/{k}": v for k, v in a_terms.items()},
                "expected_macs": self.supernet.expected_macs().detach(),
                "tau": torch.tensor(self.supernet.tau), "tutor_tau": torch.tensor(self.tutor.tau)}

    def epoch_record(self) -> dict:
        """Validation accuracy of the argmax architecture, its MACs, and TensorBoard width/tutor tables."""
        probs = self.supernet.width_probs().detach().cpu()
        widths = [b.width_choices[k] for b, k in zip(self.supernet.searched_blocks, probs.argmax(-1).tolist(),
                                                        strict=True)]
        record = {"tau": self.supernet.tau, "tutor_tau": self.tutor.tau,
                  "expected_macs": self.supernet.expected_macs().item(), "argmax_macs": self.supernet.cost()[1],
                  "argmax_widths": widths,
                  "width_probs": [[round(p, 4) for p in row[:len(b.width_choices)]]
                                  for row, b in zip(probs.tolist(), self.supernet.searched_blocks, strict=True)],
                  "val_acc": clean_accuracy(self.supernet, self.data.val, self.student_taps)}
        return record

    def log_tables(self, tb, epoch: int) -> None:
        """TensorBoard: every block's width probabilities and the tutor probability matrix as an image."""
        probs = self.supernet.width_probs().detach().cpu()
        for b, block in enumerate(self.supernet.searched_blocks):
            for k, width in enumerate(block.width_choices):
                tb.add_scalar(f"width/block{b:02d}/{width}", probs[b, k].item(), epoch)
        tb.add_image("tutor_probabilities", self.tutor.tutor_probs().detach().cpu()[None], epoch, dataformats="CHW")

    def close(self) -> None:
        self.teacher_taps.remove()
        self.student_taps.remove()

    # ---- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "epoch": self.epoch, "step": self.step,
                "supernet": self.supernet.state_dict(), "tutor": self.tutor.state_dict(),
                "weight_opt": self.weight_opt.state_dict(), "arch_opt": self.arch_opt.state_dict(),
                "scheduler": self.scheduler.state_dict(), "tau": self.supernet.tau, "tutor_tau": self.tutor.tau,
                "rng": rng_state(), "config": dataclasses.asdict(self.cfg), "progress": self.progress,
                "spec": spec_to_dict(self.supernet.spec), "num_classes": self.supernet.num_classes,
                "student_layers": self.student_layers, "teacher_layers": self.teacher_layers}

    def load_state(self, ckpt: dict) -> None:
        self.supernet.load_state_dict(ckpt["supernet"])
        self.tutor.load_state_dict(ckpt["tutor"])
        self.weight_opt.load_state_dict(ckpt["weight_opt"])
        self.arch_opt.load_state_dict(ckpt["arch_opt"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step, self.progress = ckpt["epoch"], ckpt["step"], ckpt.get("progress")
        self.supernet.tau, self.tutor.tau = ckpt["tau"], ckpt["tutor_tau"]
        set_rng_state(ckpt["rng"])


def run_search(cfg: SearchConfig, run: Path, resume: bool = False) -> Path:
    """Search into ``run`` (a fresh directory, or an existing run when ``resume``)."""
    ckpt = resume_checkpoint(run, resume)
    spec = parse_space(ckpt["spec"], f"{run}/checkpoint.pt:spec") if ckpt else None
    searcher = Searcher(cfg, spec)  # every user error surfaces here, before anything is written
    if ckpt:
        if ckpt["student_layers"] != searcher.student_layers:
            raise UserError(f"{run}/checkpoint.pt: searched with the student taps of an older rnas "
                            f"({ckpt['student_layers'][:2]}...); it cannot be resumed: start a new search")
        searcher.load_state(ckpt)
    return run_job(searcher, run, resume)
