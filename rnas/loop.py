"""The epoch loop shared by search, retrain and teacher training (nanoGPT-style, one screen):
for each step: job.train_step -> accumulate -> log -> checkpoint on request or signal;
at each epoch end: lr schedule -> job.epoch_record (validation, ...) -> metrics -> checkpoint."""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from .attacks import eval_mode
from .config import save_config
from .errors import TrainingDiverged, UserError
from .rundir import Metrics, RunLock, StopSignal, atomic_save


class Job(Protocol):
    cfg: object  # has epochs, checkpoint_every, log_every
    command: str  # "search", "retrain", ... (for messages)
    epoch: int
    step: int
    progress: dict | None  # the running epoch's sums, counts, images and seconds (checkpointed)
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @property
    def loader(self): ...
    def begin_epoch(self, epoch: int) -> None: ...
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]: ...
    def epoch_record(self) -> dict: ...
    def state(self) -> dict: ...
    def close(self) -> None: ...


def run_job(job: Job, run: Path, resume: bool) -> Path:
    """Write the resolved config and a step-0 checkpoint (so a run killed at any moment can be resumed),
    then train ``job`` into ``run`` until ``cfg.epochs``, holding the run directory's lock throughout."""
    if job.epoch > job.cfg.epochs:
        raise UserError(f"--epochs {job.cfg.epochs}: {run} has already done {job.epoch} epochs; "
                        "a resumed run can be extended, not shortened")
    run.mkdir(parents=True, exist_ok=True)
    with RunLock(run):
        save_config(job.cfg, run / "config.yaml")
        if not (run / "checkpoint.pt").exists():
            atomic_save(job.state(), run / "checkpoint.pt")
        metrics = Metrics(run, job.epoch if resume else None)
        try:
            with StopSignal() as stop:
                train_epochs(job, run, metrics, stop)
        finally:
            metrics.close()
            job.close()
    return run


def _check_finite(job: Job, terms: dict[str, torch.Tensor], run: Path, epoch: int, step: int) -> None:
    """Stop the run (nothing written from this step on) when a loss term is NaN or infinite."""
    finite = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).isfinite()
    if bool(finite.all()):  # one device sync per step
        return
    bad = [f"{k}={float(v.detach()):g}" for (k, v), ok in zip(terms.items(), finite.tolist(), strict=True) if not ok]
    raise TrainingDiverged(
        f"rnas {job.command}: non-finite loss at epoch {epoch + 1}, step {step + 1}: {', '.join(bad[:4])}"
        f" (a learning rate or temperature out of its useful range?); the last good checkpoint "
        f"{run / 'checkpoint.pt'} is kept")


def train_epochs(job: Job, run: Path, metrics: Metrics, stop: StopSignal) -> None:
    cfg, loader = job.cfg, job.loader
    steps = len(loader)
    if steps == 0:
        raise UserError(f"--batch-size {cfg.batch_size}: larger than the training set")
    quiet = not sys.stderr.isatty()
    while job.epoch < cfg.epochs:
        epoch, start = job.epoch, job.step
        job.begin_epoch(epoch)
        # the epoch's running sums so far (restored when resuming mid-epoch, so the record is the same)
        progress = job.progress if start and job.progress else {"sums": {}, "counts": {}, "seen": 0, "seconds": 0.0}
        job.progress = progress
        sums, counts = progress["sums"], progress["counts"]  # a term measured on some steps only averages over those
        t0 = time.perf_counter() - progress["seconds"]
        bar = tqdm(total=steps, initial=start, desc=f"{job.command} {epoch + 1}/{cfg.epochs}", disable=quiet,
                   leave=False)
        for step, (x, y) in enumerate(loader.epoch(epoch, start), start=start):
            terms = job.train_step(x, y)
            _check_finite(job, terms, run, epoch, step)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0) + value.detach()
                counts[key] = counts.get(key, 0) + 1
            progress["seen"] += len(y)
            progress["seconds"] = time.perf_counter() - t0
            global_step = epoch * steps + step
            if cfg.log_every and global_step % cfg.log_every == 0:
                metrics.scalars({f"step/{k}": v.item() for k, v in terms.items()}, global_step)
            bar.update(1)
            job.step = step + 1
            if stop.received or (cfg.checkpoint_every and job.step % cfg.checkpoint_every == 0):
                atomic_save(job.state(), run / "checkpoint.pt")
            if stop.received:
                bar.close()
                print(f"rnas: stopped at epoch {epoch + 1}, step {job.step}; resume with: "
                      f"rnas {job.command} --resume {run}", file=sys.stderr)
                raise SystemExit(128 + stop.received)
        bar.close()
        job.scheduler.step()
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, **{k: round(float(v) / counts[k], 6) for k, v in sums.items()},
                  "lr": job.scheduler.get_last_lr()[0], **job.epoch_record(),
                  "seconds": round(seconds, 3), "images_per_s": round(progress["seen"] / seconds, 1)}
        metrics.write(record)
        if hasattr(job, "log_tables"):
            job.log_tables(metrics.tb, epoch)
        metrics.scalars({f"epoch/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"},
                        epoch)
        job.epoch, job.step, job.progress = epoch + 1, 0, None
        atomic_save(job.state(), run / "checkpoint.pt")
        if quiet:
            shown = {k: record[k] for k in ("val_acc", "expected_macs", "tau") if record.get(k) is not None}
            loss = next((record[k] for k in ("weight/total", "total") if k in record), float("nan"))
            print(f"{job.command} epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f} "
                  + " ".join(f"{k} {v:.4g}" for k, v in shown.items()) + f" ({record['images_per_s']} img/s)",
                  flush=True)


def share_step(job: Job) -> bool:
    """Whether this step also measures the attention term's gradient share (one extra backward): the
    steps TensorBoard logs (every ``log_every``-th global step), or every 50th when step logging is off."""
    return (job.epoch * len(job.loader) + job.step) % (job.cfg.log_every or 50) == 0


@torch.no_grad()
def clean_accuracy(model, loader, taps=None) -> float | None:
    """Top-1 accuracy (%) on ``loader`` in eval mode (restored after); ``taps`` are paused meanwhile."""
    if loader is None:
        return None
    correct = total = 0
    with eval_mode(model), (taps.paused() if taps is not None else contextlib.nullcontext()):
        for x, y in loader.epoch(0):
            correct += (model(x).argmax(1) == y).sum()
            total += len(y)
    return 100.0 * correct.item() / total
