"""One study step where it runs (a spawned process, a Ray worker, a SLURM job): the same engine call in every
executor (``STEP_KINDS[kind].run``), its progress as messages, how it ended as a tuple ``("done",)``,
``("stopped", signum)`` or ``("failed", one line)``.

A step of ``nproc: N`` runs under torchrun: ``python -m torch.distributed.run --standalone --nproc-per-node N -m
rnas.study.rank STEP_FILE``, every rank running the same call (the engine joins the torchrun job), rank 0
reporting. Away from the study process (Ray, SLURM, torchrun ranks) messages go to an events file under the
study directory (``.executor/<step>/events.jsonl``, which the study process reads), and a step stops when its
``stop`` file appears there (it checkpoints first, as on SIGTERM)."""
from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rnas.errors import USER_ERRORS, TrainingDiverged
from rnas.runtime.rundir import StopSignal, first_line
from rnas.study.steps import STEP_KINDS

EXECUTOR_DIR = ".executor"  # under the study directory: per-step events, pid, stop file; submitit's jobs


def step_dir(out: Path, name: str) -> Path:
    """``OUT/.executor/<step name with / as __>``: what the executors and the step exchange."""
    return Path(out) / EXECUTOR_DIR / name.replace("/", "__")


class _Events:
    """The step's progress as messages to the study process: fraction done (at most twice a second),
    epoch lines and eval rows."""

    def __init__(self, channel, name: str):
        self.channel, self.name, self.last = channel, name, 0.0

    def send(self, kind: str, *values) -> None:
        self.channel.put((self.name, kind, *values))

    def on_step(self, job, terms) -> None:
        now = time.monotonic()
        if now - self.last > 0.5:
            self.last = now
            self.send("progress", (job.epoch + job.step / len(job.loader)) / job.cfg.epochs)

    def on_epoch(self, job, record: dict) -> None:
        shown = " ".join(f"{k} {record[k]:.4g}" for k in ("val_acc", "expected_macs") if record.get(k) is not None)
        self.send("epoch", (record["epoch"] + 1) / job.cfg.epochs,
                  f"epoch {record['epoch'] + 1}/{job.cfg.epochs} {shown}".strip())


class FileChannel:
    """Messages appended as JSON lines to a file the study process reads (``put`` as a queue's)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def put(self, message: tuple) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(list(message)) + "\n")


class FileReader:
    """The study process's side of a ``FileChannel``: the whole lines added since the last read."""

    def __init__(self, path: Path):
        self.path, self.offset = Path(path), 0

    def read(self) -> list[tuple]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [tuple(json.loads(line)) for line in data[:end].splitlines() if line.strip()]


class StopFile:
    """``should_stop()`` of a step away from the study process: SIGTERM once its stop file appears (checked
    at most every 0.2 s), or a signal this process received."""

    def __init__(self, path: Path, signals: StopSignal | None = None):
        self.path, self.signals, self.checked, self.seen = Path(path), signals, 0.0, False

    def __call__(self) -> int:
        if self.signals is not None and self.signals.received:
            return self.signals.received
        now = time.monotonic()
        if not self.seen and now - self.checked > 0.2:
            self.checked, self.seen = now, self.path.exists()
        return int(signal.SIGTERM) if self.seen else 0


def execute(step, out: Path, threads: int, channel, should_stop) -> tuple:
    """Run ``step`` here through the engine's Python API (or under torchrun, ``nproc`` > 1); how it ended."""
    from rnas.engine.loop import RunStopped

    torch.set_num_threads(threads)
    events = _Events(channel, step.name)
    try:
        if step.resources.get("nproc", 1) > 1:
            return _torchrun(step, out, threads, events, should_stop)
        kind = STEP_KINDS[step.kind]
        kind.run(step, out, events, should_stop if kind.trains else (lambda: 0))  # derive and eval just end
        return ("done",)
    except RunStopped as stopped:
        return ("stopped", stopped.signum)
    except (*USER_ERRORS, TrainingDiverged) as err:
        return ("failed", str(err).splitlines()[0] if str(err) else type(err).__name__)
    except Exception as err:  # noqa: BLE001 - any crash of a step is reported, and the independent steps go on
        return ("failed", f"{type(err).__name__}: {first_line(err, 300)}")


def _torchrun(step, out: Path, threads: int, events: _Events, should_stop) -> tuple:
    """The step on ``nproc`` ranks (torchrun, on this machine): the ranks' messages are passed on, a stop
    request becomes the ranks' stop file, their result is rank 0's."""
    here = step_dir(out, step.name) / "ranks"
    here.mkdir(parents=True, exist_ok=True)
    for name in ("events.jsonl", "result.json", "stop"):
        (here / name).unlink(missing_ok=True)
    with open(here / "step.pkl", "wb") as fh:
        pickle.dump((step, str(out), threads), fh)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(step.resources["nproc"]), "-m", "rnas.study.rank", str(here / "step.pkl")]
    reader = FileReader(here / "events.jsonl")
    with open(here / "torchrun.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while process.poll() is None:
            time.sleep(0.2)
            if signum := should_stop():
                if not STEP_KINDS[step.kind].trains:  # an evaluation has no checkpoint: it just ends
                    process.terminate()
                    process.wait()
                    return ("stopped", signum)
                (here / "stop").touch()
            for message in reader.read():
                events.send(*message[1:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for message in reader.read():
        events.send(*message[1:])
    try:
        return tuple(json.loads((here / "result.json").read_text()))
    except (OSError, ValueError):
        log = [line for line in (here / "torchrun.log").read_text().splitlines() if line.strip()]
        return ("failed", f"torchrun exited with code {process.returncode}" + (f": {log[-1][:200]}" if log else ""))


class Nowhere:
    """The channel of ranks other than 0."""

    def put(self, message) -> None:
        pass
