"""`rnas retrain RUN/arch.json`: train the derived network with Eq. (3) (or a baseline), and adversarially
(``--at trades|pgd|nfgsm``, from scratch or as a fine-tune of ``--init CKPT``), optionally with Mixture BN
(``--mbn``). Distillation (``--baseline``) and adversarial training (``--at``) are independent axes."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from rnas.config import defaults, flag
from rnas.config.sections import DataSection, OptimSection, RuntimeSection, TeacherSection, shared
from rnas.data import loaders_for
from rnas.data.splits import held_out
from rnas.engine.cost import count_macs, passes_per_image, training_macs
from rnas.engine.early_stopping import attacked_range
from rnas.engine.optim import fill_recipe
from rnas.engine.trainer import Objective, Trainer
from rnas.errors import UserError
from rnas.method.baselines import BASELINES
from rnas.method.distill import uniform_mapping
from rnas.method.taps import conv_taps
from rnas.robust.adversarial import convert_to_mbn
from rnas.robust.attacks import parse_eps
from rnas.runtime.device import place
from rnas.runtime.distributed import Dist, convert_sync_bn, device_name, join_job, on_every_rank
from rnas.runtime.rundir import TRAIN_CHECKPOINT, load_checkpoint, resume_checkpoint, seed_everything
from rnas.teachers import load_teacher, require_weights
from supernets import build_model, read_arch

AT_MODES = ("none", "trades", "pgd", "nfgsm")
AT_HELP = ("adversarial training of the student (examples made against it, in pixel space): none; trades = "
           "clean CE + beta KL(clean || adv), the KL-to-teacher and attention terms on the clean forward; pgd / "
           "nfgsm = CE on the adversarial examples, the KL and attention terms compare the student on them with the "
           "teacher on the clean images (as ARD); with --mbn pgd / nfgsm also train on the clean images through "
           "the clean BN (half of each CE). Needs --init CKPT (a fine-tune) or --from-scratch "
           "(default: none, or trades with --trades)")


@dataclass
class RetrainConfig(RuntimeSection, OptimSection, TeacherSection, DataSection):
    arch: str = flag("", "arch.json written by rnas derive")
    teacher: str | None = shared(TeacherSection, "teacher", None, "teacher architecture (default: the one the arch "
                                 "was searched with)")
    teacher_ckpt: str | None = shared(TeacherSection, "teacher_ckpt", None,
                                      "teacher checkpoint (default: the search's)")
    model_dir: str | None = shared(TeacherSection, "model_dir", None, "RobustBench model dir (default: the search's)")
    data: str | None = shared(DataSection, "data", None, "dataset (default: the search's)")
    out: str = shared(RuntimeSection, "out", "runs/retrain")
    epochs: int | None = shared(OptimSection, "epochs", None, "epochs (default: 100 CIFAR/digits, 200 ImageNet-100, "
                                "20 for an adversarial fine-tune of --init)")
    batch_size: int | None = shared(OptimSection, "batch_size", None, "global batch size (default: 128; 256 on "
                                    "ImageNet-100)")
    lr: float | None = shared(OptimSection, "lr", None, "SGD lr (default: 0.1; 0.05 on ImageNet-100; 0.01 for an "
                              "adversarial fine-tune of --init)")
    weight_decay: float | None = shared(OptimSection, "weight_decay", None, "weight decay (default: 2e-4; 4e-5 on "
                                        "ImageNet-100)")
    milestones: list[int] | None = shared(OptimSection, "milestones", None, "lr x lr-decay at these epochs (default: "
                                          "75 %% and 90 %% of --epochs)".replace("%%", "%"))
    cosine: bool | None = shared(OptimSection, "cosine", None, "cosine schedule (default: on for ImageNet-100)")
    lr_per_step: bool | None = flag(None, "step the lr schedule after every training step, not every epoch: the "
                                    "default milestones fall at 75 %% and 90 %% of the run's steps (so a run of one or "
                                    "two epochs decays too), --milestones E at E epochs' steps, --cosine over all the "
                                    "steps (default: on for runs of 1-5 epochs without --milestones, whose per-epoch "
                                    "schedule would not finish; config.yaml keeps what it resolved to)"
                                    .replace("%%", "%"))
    baseline: str = flag("cl", "cl: Eq. 3 with the searched tutors; ce: CE only; kd: CE + KL (logit KD); "
                         "fixed: Eq. 3 with a uniform depth-proportional tutor mapping", choices=tuple(BASELINES))
    gamma_t: float = flag(defaults.GAMMA_T, "gamma_t of Eq. 3, weight of the attention loss (paper's 1/(n_s n_t) form)",
                          range=">= 0")
    kl: str = flag(defaults.KL, "logit term: paper = KL(p, q); hinton = T^2 KL(q_T || p_T)",
                   choices=("paper", "hinton"))
    kd_temperature: float = flag(defaults.KD_TEMPERATURE, "temperature of the hinton KL", range="> 0")
    map_size: int = flag(defaults.MAP_SIZE, "side of the common attention-map size", range=">= 1")
    at: str | None = flag(None, AT_HELP, choices=AT_MODES)
    trades: bool = flag(False, "the same as --at trades")
    init: str | None = flag(None, "start from this retrain checkpoint (weights only)")
    from_scratch: bool = flag(False, "with --at: train from random weights instead of fine-tuning --init")
    beta: float = flag(defaults.TRADES_BETA, "TRADES beta", range=">= 0")
    eps: float = flag(defaults.EPS, "l_inf budget of --at (pixel units, e.g. 8/255)", parse=parse_eps, range="> 0")
    step: float = flag(defaults.STEP, "TRADES / PGD inner step size", parse=parse_eps, range="> 0")
    steps: int = flag(defaults.STEPS, "TRADES / PGD inner steps", range=">= 1")
    nfgsm_noise: float = flag(defaults.NFGSM_NOISE, "N-FGSM: uniform noise radius in units of eps (de Jorge et al.: 2)",
                               range=">= 0")
    mbn: bool = flag(False, "Mixture BN: separate clean/adversarial BN while training (needs --at)")
    robust_val: int = flag(0, "each epoch, PGD-10 accuracy at --eps (step --step) on this many of the last "
                           "validation images (whole validation batches of 500; not the first ones, which rnas "
                           "eval --n reports on): val_robust_acc in metrics.jsonl, and the epoch with the best one "
                           "kept as RUN/best.pt (early stopping, Rice et al.; rnas eval RUN/best.pt). Not counted "
                           "in the training cost. 0: off", range=">= 0")
    budget: float | None = flag(None, "train for this compute instead of --epochs, in epochs of plain CE training of "
                                "this net on this training set (student forward + backward MACs, plus the teacher's "
                                "forwards and every attack step): the epochs are the budget over one epoch's cost "
                                "(rounded, at least 1)", range="> 0")


def fill_defaults(cfg: RetrainConfig, arch: dict) -> RetrainConfig:
    """Resolve every dataset- and mode-dependent default (the resolved values go to config.yaml)."""
    def default(value, fallback):
        return fallback if value is None else value

    teacher = arch.get("teacher", {})
    if cfg.trades and cfg.at not in (None, "trades"):
        raise UserError(f"--trades and --at {cfg.at}: --trades means --at trades; give one")
    cfg.at = default(cfg.at, "trades" if cfg.trades else "none")
    cfg.data = default(cfg.data, arch.get("data", "cifar10"))
    if cfg.teacher is None:
        cfg.teacher = teacher.get("name", "wrt34")
        cfg.teacher_ckpt = default(cfg.teacher_ckpt, teacher.get("checkpoint"))
        cfg.model_dir = default(cfg.model_dir, teacher.get("model_dir"))
    if cfg.at != "none" and cfg.init is not None:  # a short adversarial fine-tune
        if cfg.budget is None:
            cfg.epochs = default(cfg.epochs, 20)
        cfg.lr = default(cfg.lr, 0.01)
    fill_recipe(cfg)  # the rest from the dataset's recipe
    return cfg


def budget_epochs(cfg: RetrainConfig, student_macs: int, teacher_macs: int) -> int:
    """The epochs ``--budget`` buys: budget x (3 x student MACs) / one epoch's MACs per image of this
    --at / --baseline / --mbn (``rnas.engine.cost.passes_per_image``), rounded, at least 1."""
    per_image = passes_per_image(cfg.at, cfg.steps, cfg.mbn, BASELINES[cfg.baseline].needs_teacher)
    return max(1, round(cfg.budget * 3 * student_macs / training_macs(per_image, student_macs, teacher_macs)))


def resolve_budget(cfg: RetrainConfig, student_macs: int, teacher_macs: int) -> None:
    """--budget -> --epochs (and its default milestones); a run resumed with both must agree."""
    if cfg.budget is None:
        return
    epochs = budget_epochs(cfg, student_macs, teacher_macs)
    if cfg.epochs is not None and cfg.epochs != epochs:
        raise UserError(f"--epochs {cfg.epochs} and --budget {cfg.budget:g} ({epochs} epochs of this training): "
                        "give one")
    cfg.epochs = epochs
    fill_recipe(cfg)  # the milestones of these epochs


def _tutors(cfg: RetrainConfig, arch: dict, teacher, model, example) -> dict | None:
    """Student layers, teacher layers and the one-hot mapping for the cl / fixed modes."""
    if BASELINES[cfg.baseline].tutors is None:
        return None
    searched_with = arch.get("teacher", {}).get("name")
    student = [n for n, _ in model.tap_layers()]
    if BASELINES[cfg.baseline].tutors == "searched":
        if arch.get("student_layers") != student:
            raise UserError(f"{cfg.arch}: tutors for student layers {arch.get('student_layers', [])[:2]}..., but "
                            f"this network's attention taps are {student[:2]}... (searched by an older rnas): "
                            f"search again, or use --baseline ce|kd|fixed")
        if cfg.teacher != searched_with:
            raise UserError(f"--teacher {cfg.teacher}: the searched tutors are layers of {searched_with}; "
                            f"retrain with that teacher or use --baseline ce|kd|fixed")
        teachers, tutors = arch.get("teacher_layers"), arch.get("tutors")
        if not isinstance(teachers, list) or not isinstance(tutors, list) or len(tutors) != len(student):
            raise UserError(f"{cfg.arch}: tutors / teacher_layers: missing, or not one tutor per student layer "
                            f"({len(student)}); derive it again with rnas derive")
        bad = next((j for j in tutors if not isinstance(j, int) or not 0 <= j < len(teachers)), None)
        if bad is not None:
            raise UserError(f"{cfg.arch}: tutors: {bad!r} is not an index of its {len(teachers)} teacher layers")
        known = {n for n, _ in conv_taps(teacher, example)}
        unknown = next((n for n in teachers if n not in known), None)
        if unknown is not None:
            raise UserError(f"{cfg.arch}: teacher_layers: {unknown!r} is not a conv layer of teacher {cfg.teacher}")
        return {"student_layers": student, "teacher_layers": teachers, "mapping": tutors}
    teachers = (arch["teacher_layers"] if cfg.teacher == searched_with and "teacher_layers" in arch
                else [n for n, _ in conv_taps(teacher, example)])
    return {"student_layers": student, "teacher_layers": teachers,
            "mapping": uniform_mapping(len(student), len(teachers))}


def build_retrain(cfg: RetrainConfig, dist: Dist | None = None) -> Trainer:
    """Every check and every object of a retrain run, before anything is written (``Trainer.from_config``
    of ``rnas retrain``)."""
    arch, _ = read_arch(cfg.arch)
    fill_defaults(cfg, arch)
    if cfg.mbn and cfg.at == "none":
        raise UserError("--mbn separates clean and adversarial BN statistics: it needs --at trades|pgd|nfgsm")
    if cfg.at != "none" and not cfg.init and not cfg.from_scratch:
        raise UserError(f"--at {cfg.at} fine-tunes a trained net: give --init CKPT (a retrain checkpoint), "
                        "or --from-scratch")
    if cfg.from_scratch and (cfg.at == "none" or cfg.init):
        raise UserError("--from-scratch goes with --at and without --init (it replaces the --init fine-tuning)")
    device, dist = join_job(cfg.device, dist)
    cfg.device = device_name(device, dist)  # config.yaml says where it ran
    seed_everything(cfg.seed)
    data = loaders_for(cfg, device)
    if cfg.robust_val:
        _, first, size = attacked_range(data.val, cfg.robust_val)  # a one-line error without a usable split
        images = (f"select-split images {first}-{size - 1} (--val-select); rnas eval reports on the report split"
                  if held_out(cfg) is not None else
                  f"validation images {first}-{size - 1}; report on others (e.g. rnas eval --n {first})" if first
                  else f"all {size} validation images, so its accuracy on them is optimistic; report on other images")
        if dist.main:
            print(f"rnas: note: --robust-val {cfg.robust_val}: best.pt is chosen on {images}", file=sys.stderr)
    model = build_model(arch)
    if model.num_classes != data.num_classes:
        raise UserError(f"{cfg.arch}: the arch has {model.num_classes} classes, --data {cfg.data} has "
                        f"{data.num_classes}")
    if cfg.init:
        init = load_checkpoint(Path(cfg.init))
        if init.get("format") != TRAIN_CHECKPOINT or init.get("kind") != "retrain":
            raise UserError(f"--init {cfg.init}: not an rnas retrain checkpoint")
        if init["arch"]["widths"] != arch["widths"] or init.get("mbn"):
            raise UserError(f"--init {cfg.init}: trained for another architecture (widths differ) or with MBN")
        model.load_state_dict(init["model"])
    if cfg.mbn:
        convert_to_mbn(model)
    if cfg.sync_bn:
        if cfg.mbn:
            raise UserError("--sync-bn with --mbn: Mixture BN layers are not synchronised; drop one of them")
        convert_sync_bn(model, device)
    place(model, device)
    teacher = None
    if BASELINES[cfg.baseline].needs_teacher:
        require_weights(cfg)
        teacher = place(load_teacher(cfg.teacher, cfg.teacher_ckpt, cfg.model_dir, cfg.data, cfg.threat,
                                     data.num_classes), device)
    size = arch["spec"]["input_size"]
    example = torch.zeros(1, 3, size, size, device=device)
    macs = (count_macs(model, size, device), count_macs(teacher, size, device) if teacher is not None else 0)
    resolve_budget(cfg, *macs)
    objective = Objective(base="ce" if cfg.at == "none" else cfg.at, nfgsm_noise=cfg.nfgsm_noise,
                          distill=BASELINES[cfg.baseline].distill,
                          gamma=cfg.gamma_t, kl=cfg.kl, kd_temperature=cfg.kd_temperature, eps=cfg.eps,
                          step=cfg.step, steps=cfg.steps, beta=cfg.beta, map_size=cfg.map_size)
    tutors = _tutors(cfg, arch, teacher, model, example)
    return Trainer("retrain", cfg, model, data, objective, device, teacher, tutors,
                   extra_state={"arch": arch, "mbn": cfg.mbn, "tutors": tutors}, dist=dist, macs=macs)


Trainer.BUILDERS[RetrainConfig] = build_retrain


def check_same_tutors(ckpt: dict, now: dict, arch_path: str) -> None:
    """A resumed retrain goes on with the tutors it was started with: its arch file re-derived meanwhile with
    other tutors (another ``--tutor-derive``) is a one-line UserError, not a run that changes teacher layers
    mid-training and a report that shows tutors the run never had."""
    before, after = ckpt.get("arch", {}).get("tutors"), now["arch"].get("tutors")
    if before is not None and before != after:
        changed = sum(a != b for a, b in zip(before, after or [], strict=False))
        how = now["arch"].get("tutor_derive", defaults.UNRECORDED_TUTOR_DERIVE)
        raise UserError(f"{arch_path}: its tutors changed since this run started ({changed} of {len(before)} "
                        f"student layers; now {how}); resume with the file it was started with, or retrain into a "
                        "new --out")


def run_retrain(cfg: RetrainConfig, run: Path, resume: bool = False, *, callbacks=(), should_stop=None,
                dist: Dist | None = None) -> Path:
    dist = join_job(cfg.device, dist)[1]

    def build() -> Trainer:
        ckpt = resume_checkpoint(run, resume)
        trainer = build_retrain(cfg, dist)
        if ckpt:
            if BASELINES[cfg.baseline].tutors == "searched":  # the other modes never read the file's tutors
                check_same_tutors(ckpt, trainer.extra_state, cfg.arch)
            trainer.load_state(ckpt)
        return trainer

    return on_every_rank(dist, build).fit(run, resume, callbacks=callbacks, should_stop=should_stop)
