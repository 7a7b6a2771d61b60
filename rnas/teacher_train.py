"""`rnas teacher train`: adversarially train a teacher for a dataset that has none, saved in RobustBench's
layout (``<model-dir>/<data>/Linf/<name>.pt`` = {'state_dict': ...}) with a .json of its validation
clean and PGD accuracy."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .attacks import parse_eps, pgd
from .config import flag
from .data import DATASETS, make_loaders
from .device import place, resolve_device
from .errors import UserError
from .loop import run_job
from .rundir import check_can_create, resume_checkpoint, seed_everything
from .teachers import DATASET_CLASSES, teacher_arch
from .train import Objective, Trainer


@dataclass
class TeacherTrainConfig:
    arch: str = flag("wrn-16-2", "teacher architecture (wrn-D-K, r18, r50, ...)")
    at: str = flag("pgd", "adversarial training: pgd (Madry), trades, nfgsm", choices=("pgd", "trades", "nfgsm"))
    name: str | None = flag(None, "checkpoint name (default: <arch>-<at>)")
    model_dir: str | None = flag(None, "where the RobustBench-layout checkpoint goes (default: <out>/models)")
    data: str = flag("cifar10", "dataset", choices=DATASETS)
    data_dir: str | None = flag(None, "dataset root")
    download: bool = flag(False, "download CIFAR into --data-dir if absent")
    val_size: int | None = flag(None, "validation images carved from the end of train", range=">= 0")
    limit: int | None = flag(None, "use only the first N training images", range=">= 1")
    out: str = flag("runs/teacher", "run directory (checkpoint, metrics, TensorBoard)")
    epochs: int = flag(30, "epochs", range=">= 1")
    batch_size: int = flag(128, "batch size", range=">= 1")
    lr: float = flag(0.1, "peak SGD lr (cosine schedule)", range="> 0")
    momentum: float = flag(0.9, "SGD momentum", range="[0, 1)")
    weight_decay: float = flag(5e-4, "weight decay", range=">= 0")
    milestones: list[int] = flag([], "unused with the default cosine schedule", range=">= 0")
    lr_decay: float = flag(0.1, "lr factor at each milestone (without --cosine)", range="(0, 1]")
    cosine: bool = flag(True, "cosine lr schedule")
    eps: float = flag(8 / 255, "l_inf budget (pixel units)", parse=parse_eps, range="> 0")
    step: float = flag(2 / 255, "PGD / TRADES step size", parse=parse_eps, range="> 0")
    steps: int = flag(10, "PGD / TRADES steps", range=">= 1")
    beta: float = flag(6.0, "TRADES beta", range=">= 0")
    eval_n: int = flag(1000, "validation images for the final clean / PGD-10 accuracy", range=">= 1")
    seed: int = flag(0, "random seed", range=">= 0")
    device: str = flag("cpu", "cpu, cuda, cuda:N or auto")
    workers: int = flag(2, "DataLoader workers (folder datasets)", range=">= 0")
    compile: bool = flag(False, "torch.compile the model (pays on GPUs; slower on CPUs)")
    checkpoint_every: int = flag(0, "also checkpoint every N steps", range=">= 0")
    log_every: int = flag(20, "TensorBoard step-logging interval", range=">= 0")


def build_teacher_training(cfg: TeacherTrainConfig) -> Trainer:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data = make_loaders(cfg.data, cfg.data_dir, cfg.batch_size, device, cfg.seed, cfg.val_size, cfg.limit,
                        cfg.workers, cfg.download)
    arch = teacher_arch(cfg.arch, cfg.data)
    if arch.mean is not None:
        raise UserError(f"--arch {cfg.arch}: its checkpoints expect outside normalisation; train a wrn-D-K or r18")
    model = place(arch.build(DATASET_CLASSES[cfg.data]), device)
    objective = Objective(base=cfg.at, distill="none", eps=cfg.eps, step=cfg.step, steps=cfg.steps, beta=cfg.beta)
    return Trainer("teacher train", cfg, model, data, objective, device,
                   extra_state={"teacher_arch": cfg.arch, "data": cfg.data})


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


def run_teacher_training(cfg: TeacherTrainConfig, run: Path, resume: bool = False) -> Path:
    """Train, then write the RobustBench-layout checkpoint and its accuracy json; returns the .pt path."""
    ckpt = resume_checkpoint(run, resume)
    name = cfg.name or f"{cfg.arch}-{cfg.at}"
    folder = Path(cfg.model_dir or run / "models") / cfg.data / "Linf"
    taken = [p for p in (folder / f"{name}.pt", folder / f"{name}.json") if p.exists()]
    if taken:
        raise UserError(f"{taken[0]}: a teacher of that name is already there; give another --name or --model-dir "
                        "(nothing was overwritten)")
    check_can_create(folder, f"--model-dir {cfg.model_dir}")
    trainer = build_teacher_training(cfg)
    if ckpt:
        trainer.load_state(ckpt)
    run_job(trainer, run, resume)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": trainer.model.state_dict()}, folder / f"{name}.pt")
    summary = {"arch": cfg.arch, "training": cfg.at, "data": cfg.data, "epochs": cfg.epochs, "eps": cfg.eps}
    if trainer.data.val is not None:
        summary["val"] = robust_accuracy(trainer.model, trainer.data.val, cfg.eval_n, cfg.eps)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return folder / f"{name}.pt"
