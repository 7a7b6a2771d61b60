"""The epoch loop shared by search, retrain and teacher training (nanoGPT-style, one screen):
for each step: job.train_step -> accumulate -> log -> checkpoint on request or stop;
at each epoch end: lr schedule -> job.epoch_record (validation, ...) -> metrics -> checkpoint.

The loop prints nothing and installs no signal handler: progress goes to ``callbacks`` (objects with
optional ``on_step(job, terms)`` / ``on_epoch(job, record)``, or plain functions of the epoch record),
a stop request is the ``should_stop()`` callable, and a stop or a failure is an exception. In a
``torchrun`` job every rank runs the loop; rank 0 alone writes the run directory."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Protocol

import torch

from rnas.config import save_config
from rnas.errors import TrainingDiverged, UserError
from rnas.runtime.device import eval_mode
from rnas.runtime.distributed import SINGLE, Dist, kill_point
from rnas.runtime.loggers import make_sinks
from rnas.runtime.rundir import Metrics, RunLock, atomic_save, atomic_write_json, holds_run


class Job(Protocol):
    cfg: object  # has epochs, checkpoint_every, log_every
    command: str  # "search", "retrain", ... (for messages)
    epoch: int
    step: int
    progress: dict | None  # the running epoch's sums, counts, images and seconds (checkpointed)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dist: Dist  # this process's place in a torchrun job (SINGLE outside one)

    @property
    def loader(self): ...
    def begin_epoch(self, epoch: int) -> None: ...
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]: ...
    def epoch_record(self) -> dict: ...
    def state(self) -> dict: ...
    def log_tables(self, tb, epoch: int) -> None: ...  # TensorBoard figures of the epoch (may do nothing)
    def close(self) -> None: ...


class RunStopped(Exception):
    """The run stopped on request (``should_stop()``) after checkpointing; ``--resume`` continues it."""

    def __init__(self, run: Path, command: str, epoch: int, step: int, signum: int):
        super().__init__(f"stopped at epoch {epoch}, step {step}; resume with: rnas {command} --resume {run}")
        self.run, self.command, self.epoch, self.step, self.signum = run, command, epoch, step, signum


class _NoMetrics:
    """What ranks other than 0 write: nothing."""

    tb = None

    def settings(self, config: dict) -> None:
        pass

    def write(self, record: dict) -> None:
        pass

    def scalars(self, values: dict, step: int) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


def _hooks(callbacks) -> tuple[list, list]:
    """(on_step, on_epoch) functions of ``callbacks``: objects with on_step / on_epoch methods, or plain
    functions of the epoch record."""
    callbacks = list(callbacks or ())
    on_step = [cb.on_step for cb in callbacks if hasattr(cb, "on_step")]
    on_epoch = [cb.on_epoch if hasattr(cb, "on_epoch") else (lambda job, record, f=cb: f(record))
                for cb in callbacks if hasattr(cb, "on_epoch") or not hasattr(cb, "on_step")]
    return on_step, on_epoch


def run_job(job: Job, run: Path | str, resume: bool = False, *, callbacks=(), should_stop=None) -> Path:
    """Write the resolved config and a step-0 checkpoint (so a run killed at any moment can be resumed),
    then train ``job`` into ``run`` until ``cfg.epochs``, holding the run directory's lock throughout.
    ``should_stop()`` (e.g. a signal flag; non-zero = stop) is polled after every step: the run then
    checkpoints and raises ``RunStopped``."""
    run = Path(run)
    dist = job.dist
    check_position(job, run)
    if job.epoch > job.cfg.epochs:
        raise UserError(f"--epochs {job.cfg.epochs}: {run} has already done {job.epoch} epochs; "
                        "a resumed run can be extended, not shortened")
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
    with RunLock(run) if dist.main else contextlib.nullcontext():
        if dist.main and not resume and holds_run(run):
            # another run took the directory between our check (prepare_run_dir) and the lock
            raise UserError(f"--out {run}: another run was written there while this one was starting; "
                            "choose another --out (nothing of it was changed)")
        if dist.main:
            save_config(job.cfg, run / "config.yaml")
            if not (run / "checkpoint.pt").exists():
                atomic_save(job.state(), run / "checkpoint.pt")
        config = dataclasses.asdict(job.cfg) if dist.main and dataclasses.is_dataclass(job.cfg) else None
        sinks = make_sinks(getattr(job.cfg, "log", "tensorboard"), run, config) if config is not None else []
        metrics = Metrics(run, job.epoch if resume else None, sinks) if dist.main else _NoMetrics()
        if not resume and config is not None:
            metrics.settings(config)
        try:
            train_epochs(job, run, metrics, *_hooks(callbacks), should_stop or (lambda: 0))
        except BaseException:
            try:
                metrics.close(failed=True)
            finally:
                job.close()
            raise
        try:
            metrics.close()
        finally:
            job.close()
    return run


def check_position(job: Job, run: Path) -> None:
    """A resumed job's epoch and step are whole numbers in range, or a one-line UserError before anything
    of ``run`` is written (a tampered checkpoint must not truncate metrics.jsonl)."""
    epoch, step = job.epoch, job.step
    for name, value in (("epoch", epoch), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{run / 'checkpoint.pt'}: {name} {value!r} is not a position a run can resume "
                            "from (a damaged or edited checkpoint); nothing was changed")


def _finite_and_stop(job: Job, terms: dict[str, torch.Tensor], should_stop) -> tuple[list[bool], int]:
    """(finite flag per term, stop request) agreed by all ranks: one device sync per step (plus one tiny
    all-reduce under torchrun, so every rank stops or fails at the same step)."""
    finite = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).isfinite()
    dist = job.dist
    if not dist.enabled:
        return finite.tolist(), int(should_stop() or 0)
    flags = torch.cat([(~finite).float(), torch.tensor([float(should_stop() or 0)], device=finite.device)])
    flags = dist.max(flags).tolist()
    return [not f for f in flags[:-1]], int(flags[-1])


class _FiniteCheck:
    """Which loss terms were finite, kept on the device and read on the host only at ``check`` (log steps,
    checkpoints, stops and epoch ends): a step itself then reads no value, so a GPU never waits for it. Under
    torchrun every step is agreed at once (``_finite_and_stop``), so that all ranks stop at the same step."""

    def __init__(self):
        self.pending: list[tuple[int, int, dict, torch.Tensor]] = []
        self.measured: dict[tuple, torch.Tensor] = {}  # which terms are measurements, per key set, on the device

    def add(self, epoch: int, step: int, terms: dict) -> torch.Tensor:
        """The (terms,) finite flags of this step, on the device."""
        finite = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).isfinite()
        keys = tuple(terms)
        if keys not in self.measured:
            self.measured[keys] = torch.tensor([_is_measurement(k) for k in keys], device=finite.device)
        self.pending.append((epoch, step, terms, finite | self.measured[keys]))
        return finite

    def check(self, job: Job, run: Path) -> None:
        """Raise ``TrainingDiverged`` for the first step since the last check with a non-finite loss term."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        ok = torch.stack([flags.all() for *_, flags in pending]).tolist()  # the one host read
        for (epoch, step, terms, flags), good in zip(pending, ok, strict=True):
            if not good:
                raise _diverged(job, terms, flags.tolist(), run, epoch, step)


def _is_measurement(key: str) -> bool:
    """Terms that measure the step rather than make up the loss (the attention term's gradient share);
    non-finite when the scaled fp16 gradients overflowed, which the gradient scaler handles by skipping
    the step."""
    return key.endswith("attn_grad_share")


def _diverged(job: Job, terms: dict, finite: list[bool], run: Path, epoch: int, step: int) -> TrainingDiverged:
    bad = [f"{k}={float(v.detach()):g}" for (k, v), ok in zip(terms.items(), finite, strict=True) if not ok]
    return TrainingDiverged(
        f"rnas {job.command}: non-finite loss at epoch {epoch + 1}, step {step + 1}: {', '.join(bad[:4])}"
        f" (a learning rate or temperature out of its useful range?); the last good checkpoint "
        f"{run / 'checkpoint.pt'} is kept")


def _save(job: Job, run: Path) -> None:
    if job.dist.main:
        atomic_save(job.state(), run / "checkpoint.pt")


def train_epochs(job: Job, run: Path, metrics, on_step: list, on_epoch: list, should_stop) -> None:
    cfg, loader = job.cfg, job.loader
    steps = len(loader)
    if steps == 0:
        raise UserError(f"--batch-size {cfg.batch_size}: larger than the training set")
    after_checkpoint = getattr(job, "after_checkpoint", lambda run: None)  # a job's files beside its checkpoint
    after_checkpoint(run)  # as of the checkpoint it starts or resumes from
    deferred = _FiniteCheck() if not job.dist.enabled else None
    while job.epoch < cfg.epochs:
        epoch, start = job.epoch, job.step
        job.begin_epoch(epoch)
        # the epoch's running sums so far (restored when resuming mid-epoch, so the record is the same)
        progress = job.progress if start and job.progress else {"sums": {}, "counts": {}, "seen": 0, "seconds": 0.0}
        job.progress = progress
        sums, counts = progress["sums"], progress["counts"]  # a term measured on some steps only averages over those
        t0 = time.perf_counter() - progress["seconds"]
        per_step = getattr(cfg, "lr_per_step", False)
        # the learning rate of the epoch's (last) step; per step, kept in the progress, since a run stopped
        # after the epoch's last step resumes with its scheduler already on the next epoch's
        lr = progress.get("lr", job.scheduler.get_last_lr()[0])
        for step, (x, y) in enumerate(loader.epoch(epoch, start), start=start):
            kill_point(job.dist, epoch * steps + step)
            terms = job.train_step(x, y)
            if per_step:
                lr = progress["lr"] = job.scheduler.get_last_lr()[0]
                job.scheduler.step()
            if deferred is None:
                finite, stop = _finite_and_stop(job, terms, should_stop)
                if not all(ok or _is_measurement(k) for k, ok in zip(terms, finite, strict=True)):
                    raise _diverged(job, terms, finite, run, epoch, step)
                # a measurement that overflowed is an fp16 step the gradient scaler skipped: not recorded
                terms = {k: v for (k, v), ok in zip(terms.items(), finite, strict=True) if ok}
                _accumulate(sums, counts, terms)
            else:
                finite, stop = deferred.add(epoch, step, terms), int(should_stop() or 0)
                _accumulate(sums, counts, terms, finite)
            progress["seen"] += loader.batch_size if job.dist.enabled else len(y)
            progress["seconds"] = time.perf_counter() - t0
            global_step = epoch * steps + step
            job.step = step + 1
            log = cfg.log_every and global_step % cfg.log_every == 0
            save = stop or (cfg.checkpoint_every and job.step % cfg.checkpoint_every == 0)
            if deferred is not None and (log or save or job.step == steps):
                deferred.check(job, run)
            if log:
                metrics.scalars({f"step/{k}": v.item() for k, v in _finite_terms(terms, finite, deferred)},
                                global_step)
            for hook in on_step:
                hook(job, terms)
            if save:
                _save(job, run)
            if stop:
                raise RunStopped(run, job.command, epoch + 1, job.step, stop)
        if not per_step:
            job.scheduler.step()  # the epoch's own learning rate (lr) was the one before this step
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, **{k: round(float(v) / float(counts[k]), 6) for k, v in sums.items()
                                     if float(counts[k])},  # a measurement that never was finite: none
                  "lr": lr, **job.epoch_record(),
                  "seconds": round(seconds, 3), "images_per_s": round(progress["seen"] / seconds, 1)}
        meter = getattr(job, "meter", None)
        if meter is not None and (total := meter.add_seconds(seconds)) is not None:
            record["cost/total_seconds"] = total  # the run's wall-clock so far, beside its other totals
        metrics.write(record)
        if meter is not None and job.dist.main:  # the run's totals in one small file
            atomic_write_json(run / "cost.json", meter.summary(record, epoch + 1, cfg.epochs))
        if metrics.tb is not None:
            job.log_tables(metrics.tb, epoch)
        metrics.scalars({f"epoch/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"},
                        epoch)
        job.epoch, job.step, job.progress = epoch + 1, 0, None
        _save(job, run)
        after_checkpoint(run)
        for hook in on_epoch:
            hook(job, record)


def _accumulate(sums: dict, counts: dict, terms: dict, finite: torch.Tensor | None = None) -> None:
    """Add the step's terms to the epoch's sums on the device; with ``finite`` (the terms' flags, a device
    tensor) a non-finite measurement adds nothing and is not counted, as the host check drops it."""
    for i, (key, value) in enumerate(terms.items()):
        value = value.detach()
        if finite is not None and _is_measurement(key):
            sums[key] = sums.get(key, 0) + torch.where(finite[i], value, torch.zeros_like(value))
            counts[key] = counts.get(key, 0) + finite[i].long()
        else:
            sums[key] = sums.get(key, 0) + value
            counts[key] = counts.get(key, 0) + 1


def _finite_terms(terms: dict, finite, deferred) -> list[tuple[str, torch.Tensor]]:
    """The terms a log step writes: all of them once checked (deferred), else the finite ones kept."""
    if deferred is None:
        return list(terms.items())
    keep = finite.tolist()  # a log step reads values anyway
    return [(k, v) for (k, v), ok in zip(terms.items(), keep, strict=True) if ok]


def share_step(job: Job) -> bool:
    """Whether this step also measures the attention term's gradient share (one extra backward): the
    steps TensorBoard logs (every ``log_every``-th global step), or every 50th when step logging is off."""
    return (job.epoch * len(job.loader) + job.step) % (job.cfg.log_every or 50) == 0


@torch.no_grad()
def correct_count(model, x, y) -> torch.Tensor:
    """[correct predictions, images] of one batch, on its device (summed over batches, then over ranks)."""
    return torch.stack([(model(x).argmax(1) == y).sum(), torch.tensor(len(y), device=y.device)])


@torch.no_grad()
def clean_accuracy(model, loader, taps=None, dist=SINGLE) -> float | None:
    """Top-1 accuracy (%) on ``loader`` in eval mode (restored after); ``taps`` are paused meanwhile.
    Under torchrun each rank counts its share of every batch and the counts are summed."""
    if loader is None:
        return None
    counts = None
    dist.broadcast_buffers(model)
    with eval_mode(model), (taps.paused() if taps is not None else contextlib.nullcontext()):
        for x, y in loader.epoch(0):
            batch = correct_count(model, x, y)
            counts = batch if counts is None else counts + batch
    correct, total = dist.sum(counts).tolist()
    return 100.0 * correct / total
