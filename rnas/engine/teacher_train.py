"""`rnas teacher train`: adversarially train a teacher for a dataset that has none, saved in RobustBench's
layout (``<model-dir>/<data>/Linf/<name>.pt`` = {'state_dict': ...}) with a .json of its validation
clean and PGD accuracy."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from rnas.config import defaults, flag
from rnas.config.sections import DataSection, OptimSection, RuntimeSection, parse_teacher, shared
from rnas.data import dataset_info, loaders_for
from rnas.engine.trainer import Objective, Trainer
from rnas.errors import UserError
from rnas.robust.attacks import parse_eps, pgd
from rnas.runtime.device import place
from rnas.runtime.distributed import Dist, convert_sync_bn, device_name, join_job, on_every_rank
from rnas.runtime.rundir import atomic_save, atomic_write_json, check_can_create, resume_checkpoint, seed_everything
from rnas.teachers import TrainableTeacher, teacher_arch


@dataclass
class TeacherTrainConfig(RuntimeSection, OptimSection, DataSection):
    arch: str = flag("wrn-16-2", "teacher architecture (wrn-D-K, wrn-a2, r18, r50, ...), or a YAML file naming "
                     "one (rnas scale --flops B -o FILE.yaml)", cli="--teacher", aliases=("--arch",),
                     parse=parse_teacher)
    at: str = flag("pgd", "adversarial training: pgd (Madry), trades, nfgsm", choices=("pgd", "trades", "nfgsm"))
    name: str | None = flag(None, "checkpoint name (default: <arch>-<at>)")
    model_dir: str | None = flag(None, "where the RobustBench-layout checkpoint goes (default: <out>/models)")
    out: str = shared(RuntimeSection, "out", "runs/teacher", "run directory (checkpoint, metrics, TensorBoard)")
    epochs: int = shared(OptimSection, "epochs", 30)
    lr: float = shared(OptimSection, "lr", 0.1, "peak SGD lr (cosine schedule)")
    weight_decay: float = shared(OptimSection, "weight_decay", 5e-4)
    milestones: list[int] = shared(OptimSection, "milestones", [], "unused with the default cosine schedule")
    cosine: bool = shared(OptimSection, "cosine", True, "cosine lr schedule")
    compile: bool = shared(RuntimeSection, "compile", False, "torch.compile the model (pays on GPUs; slower on CPUs)")
    eps: float = flag(defaults.EPS, "l_inf budget (pixel units)", parse=parse_eps, range="> 0")
    step: float = flag(defaults.STEP, "PGD / TRADES step size", parse=parse_eps, range="> 0")
    steps: int = flag(defaults.STEPS, "PGD / TRADES steps", range=">= 1")
    beta: float = flag(defaults.TRADES_BETA, "TRADES beta", range=">= 0")
    eval_n: int = flag(1000, "validation images for the final clean / PGD-10 accuracy", range=">= 1", cli="--n",
                       aliases=("--eval-n",))


def build_teacher_training(cfg: TeacherTrainConfig, dist: Dist | None = None) -> Trainer:
    device, dist = join_job(cfg.device, dist)
    cfg.device = device_name(device, dist)  # config.yaml says where it ran
    seed_everything(cfg.seed)
    data = loaders_for(cfg, device)
    model = TrainableTeacher(teacher_arch(cfg.arch, cfg.data), dataset_info(cfg.data).num_classes)
    model = place(convert_sync_bn(model, device) if cfg.sync_bn else model, device)
    objective = Objective(base=cfg.at, distill="none", eps=cfg.eps, step=cfg.step, steps=cfg.steps, beta=cfg.beta)
    return Trainer("teacher train", cfg, model, data, objective, device,
                   extra_state={"teacher_arch": cfg.arch, "data": cfg.data}, dist=dist)


Trainer.BUILDERS[TeacherTrainConfig] = build_teacher_training


def robust_accuracy(model, loader, n: int, eps: float) -> dict:
    """Clean and PGD-10 (step eps/4) accuracy in % on the first ``n`` validation images."""
    correct = {"clean": 0, "pgd10": 0}
    seen = 0
    for x, y in loader.epoch(0):
        x, y = x[: n - seen], y[: n - seen]
        with torch.no_grad():
            correct["clean"] += (model.eval()(x).argmax(1) == y).sum().item()
        x_adv = pgd(model, x, y, eps, eps / 4, 10)
        with torch.no_grad():
            correct["pgd10"] += (model(x_adv).argmax(1) == y).sum().item()
        seen += len(y)
        if seen >= n:
            break
    return {k: 100.0 * v / max(1, seen) for k, v in correct.items()} | {"n": seen}


def run_teacher_training(cfg: TeacherTrainConfig, run: Path, resume: bool = False, *, callbacks=(),
                         should_stop=None, dist: Dist | None = None) -> Path:
    """Train, then write the RobustBench-layout checkpoint and its accuracy json; returns the .pt path."""
    name = cfg.name or f"{cfg.arch}-{cfg.at}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name) or ".." in name:
        raise UserError(f"--name {name}: a checkpoint file name (letters, digits, . _ + -), not a path")
    ckpt = resume_checkpoint(run, resume)
    folder = Path(cfg.model_dir or run / "models") / cfg.data / "Linf"
    taken = [p for p in (folder / f"{name}.pt", folder / f"{name}.json") if p.exists()]
    if taken:
        raise UserError(f"{taken[0]}: a teacher of that name is already there; give another --name or --model-dir "
                        "(nothing was overwritten)")
    check_can_create(folder, "--model-dir", cfg.model_dir)
    dist = join_job(cfg.device, dist)[1]

    def build() -> Trainer:
        trainer = build_teacher_training(cfg, dist)
        if ckpt:
            trainer.load_state(ckpt)
        return trainer

    trainer = on_every_rank(dist, build)
    trainer.fit(run, resume, callbacks=callbacks, should_stop=should_stop)
    if not trainer.dist.main:
        return folder / f"{name}.pt"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save({"state_dict": trainer.model.net.state_dict()}, folder / f"{name}.pt")
    summary = {"arch": cfg.arch, "training": cfg.at, "data": cfg.data, "epochs": cfg.epochs, "eps": cfg.eps}
    if trainer.data.val is not None:
        summary["val"] = robust_accuracy(trainer.model, trainer.data.val, cfg.eval_n, cfg.eps)
    atomic_write_json(folder / f"{name}.json", summary)
    return folder / f"{name}.pt"
