"""``rnas retrain --robust-val N`` (Rice et al.'s early stopping): PGD-10 accuracy on the end of the validation
split after every epoch, and the model of the best epoch kept as RUN/best.pt beside checkpoint.pt."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch

from rnas.data import keyed_generator
from rnas.engine.loop import correct_count
from rnas.errors import UserError
from rnas.robust.attacks import pgd
from rnas.runtime.device import eval_mode
from rnas.runtime.distributed import SINGLE, Dist
from rnas.runtime.rundir import TRAIN_CHECKPOINT, atomic_save

BEST = "best.pt"


def split_size(loader) -> int | None:
    """Images in a validation loader (None: an iterable of unknown length)."""
    for owner, field in ((loader, "labels"), (loader, "dataset"), (getattr(loader, "batches", None), "dataset")):
        if owner is not None and hasattr(owner, field):
            return len(getattr(owner, field))
    return None


def attacked_range(loader, n: int) -> tuple[int, int, int]:
    """(first batch, first image, images in the split): the fewest whole batches at the end of ``loader`` that
    hold at least ``n`` images (all of them when the split is smaller)."""
    size, batch = (None, None) if loader is None else (split_size(loader), loader.batch_size)
    if not size or not batch:
        raise UserError(f"--robust-val {n}: needs a validation split of known size and batch size "
                        "(--val-size 0, or a validation loader of unknown length?)")
    start = max(0, (size - n) // batch)
    return start, start * batch, size


def robust_accuracy(model, loader, n: int, eps: float, step: float, taps=None, dist: Dist = SINGLE,
                    key: tuple[int, ...] = (0,), steps: int = 10) -> tuple[float, int]:
    """(PGD-``steps`` accuracy in %, images attacked) on the ``attacked_range`` of ``loader``. Each batch's
    random start is drawn for the whole global batch from ``key`` (seed, epoch) and the batch index, so the
    number is the same after a resume and on any number of torchrun ranks (each attacks its share)."""
    start, _, size = attacked_range(loader, n)
    counts = torch.zeros(2, dtype=torch.long)
    dist.broadcast_buffers(model)
    with eval_mode(model), (taps.paused() if taps is not None else contextlib.nullcontext()):
        for i, (x, y) in enumerate(loader.epoch(0, start)):
            whole = min(loader.batch_size, size - (start + i) * loader.batch_size)
            noise = torch.rand((whole, *x.shape[1:]), generator=keyed_generator(x.device, *key, i, 3),
                               device=x.device, dtype=x.dtype)
            if (keep := loader.keep(whole)) is not None:
                noise = noise[keep.to(x.device)]
            counts = counts.to(x.device) + correct_count(model, pgd(model, x, y, eps, step, steps, noise=noise), y)
    correct, total = dist.sum(counts).tolist()
    return round(100.0 * correct / total, 4), int(total)


def best_epoch_of(path: Path) -> int | None:
    """The epochs done of the model in a best.pt (None: no readable file)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - a missing or damaged best.pt is written again
        return None


def write_best(trainer, run: Path) -> None:
    """RUN/best.pt: the trainer's model as a model file (``rnas eval``, ``rnas.load_model``), not a resume point."""
    atomic_save({"format": TRAIN_CHECKPOINT, "kind": trainer.command, "epoch": trainer.epoch, "best": trainer.best,
                 "model": trainer.model.state_dict(), "config": dataclasses.asdict(trainer.cfg), **trainer.extra_state},
                run / BEST)
