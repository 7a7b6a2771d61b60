"""How the study process launches a ready step and observes its progress and end: ``local`` (a spawned
process per step, on this machine), ``ray`` (a Ray task per step, rnas.study.ray_executor) and ``slurm`` (a
submitit job per step, rnas.study.slurm_executor). The study process stays the one scheduler of the graph;
an executor only runs steps. Each runs the same engine call (rnas.study.worker.execute).

An executor's ``poll`` returns messages ``(step name, kind, *values)``: ``progress`` / ``epoch`` while it runs,
``note`` (a line to show, e.g. a resubmission), and one final ``done`` / ``stopped`` / ``failed`` (the step's
own end) or ``lost`` (its process, worker or job ended without saying how: killed, or its node lost)."""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from pathlib import Path

from rnas.runtime.rundir import StopSignal
from rnas.study.plan import Step, Study
from rnas.study.steps import STEP_KINDS
from rnas.study.worker import FileReader, execute, step_dir

FINAL = ("done", "stopped", "failed", "lost")


class Executor:
    """Launches steps and reports their messages. ``threads``: torch threads per step when given (else the
    executor's default)."""

    kind = "local"

    def __init__(self, study: Study, threads: int | None):
        self.study, self.out, self.threads = study, study.out, threads
        self.settings = study.executor

    def open(self) -> None:
        """Before the first step (connect to a cluster)."""

    def launch(self, step: Step) -> str | None:
        """Start ``step``; its job id, if it has one."""
        raise NotImplementedError

    def poll(self, timeout: float) -> list[tuple]:
        """Messages since the last call, waiting up to ``timeout`` s for the first."""
        raise NotImplementedError

    def stop(self, kill: bool) -> None:
        """Ask every running step to checkpoint and stop (``kill``: end them now)."""
        raise NotImplementedError

    def close(self) -> None:
        """After the last step, or when the study itself fails: nothing of it left running."""

    def job_id(self, name: str) -> str | None:
        """The running step's job id now (a resubmission changes it)."""
        return None

    def step_threads(self, step: Step) -> int:
        """A cluster step's torch threads: the study's, else its cpus shared by its ranks."""
        resources = step.resources
        return self.threads or max(1, resources.get("cpus", 1) // resources.get("nproc", 1))

    def prepare(self, step: Step) -> Path:
        """A fresh exchange directory for the step (no events or stop request of an earlier launch)."""
        here = step_dir(self.out, step.name)
        here.mkdir(parents=True, exist_ok=True)
        for name in ("events.jsonl", "stop", "pid"):
            (here / name).unlink(missing_ok=True)
        return here


def _local_step(step: Step, out: Path, threads: int, channel) -> None:
    """Entry point of a step's process: run it, send how it ended."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the study alone, which stops its steps with SIGTERM
    if STEP_KINDS[step.kind].trains or step.resources.get("nproc", 1) > 1:  # derive and eval just end
        with StopSignal() as stop:
            result = execute(step, out, threads, channel, lambda: stop.received or 0)
    else:
        result = execute(step, out, threads, channel, lambda: 0)
    channel.put((step.name, *result))


class LocalExecutor(Executor):
    """Each step in a spawned process on this machine (``threads`` torch threads each); stopped with SIGTERM."""

    def __init__(self, study: Study, threads: int):
        super().__init__(study, threads)
        self.context = multiprocessing.get_context("spawn")
        self.channel = self.context.Queue()
        self.processes: dict[str, multiprocessing.Process] = {}
        self.stopping = False

    def launch(self, step: Step) -> str | None:
        process = self.context.Process(target=_local_step, args=(step, self.out, self.threads, self.channel),
                                       daemon=False)
        process.start()
        self.processes[step.name] = process
        return None

    def _get(self, timeout: float, messages: list) -> bool:
        try:
            message = self.channel.get(timeout=timeout)
        except queue.Empty:
            return False
        messages.append(message)
        if message[1] in FINAL:
            process = self.processes.pop(message[0], None)
            if process is not None:
                process.join(timeout=30)
        return True

    def poll(self, timeout: float) -> list[tuple]:
        messages = []
        self._get(timeout, messages)  # a signal is acted on within ``timeout``
        for name, process in list(self.processes.items()):
            if process.exitcode is not None:  # ended: read what it said last, else it died silently
                deadline = time.monotonic() + 2.0
                while name in self.processes and time.monotonic() < deadline and self._get(0.2, messages):
                    pass
                if self.processes.pop(name, None) is not None:
                    messages.append((name, "lost", f"its process exited with code {process.exitcode}"))
        return messages

    def stop(self, kill: bool) -> None:
        for process in self.processes.values():
            if process.is_alive():
                if kill:
                    _kill_group(process)
                else:
                    os.kill(process.pid, signal.SIGTERM)

    def close(self) -> None:
        for process in self.processes.values():  # the study itself failed: leave no step running behind it
            _kill_group(process)
            process.join(timeout=10)
        self.processes.clear()


def _kill_group(process) -> None:
    """SIGKILL a step's process and what it started (its process group: torchrun ranks, data loaders)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # not yet in its own group, or gone
        process.kill()


class FileExecutor(Executor):
    """An executor whose steps run away from the study process: their messages are read from their events
    files, a stop request is their stop file."""

    def __init__(self, study: Study, threads: int | None):
        super().__init__(study, threads)
        self.readers: dict[str, FileReader] = {}

    def watch(self, step: Step) -> Path:
        here = self.prepare(step)
        self.readers[step.name] = FileReader(here / "events.jsonl")
        return here

    def events(self) -> list[tuple]:
        return [m for reader in self.readers.values() for m in reader.read()]

    def request_stop(self, names) -> None:
        for name in names:
            (step_dir(self.out, name) / "stop").touch()

