"""Running a study's graph: every step whose output is complete is skipped, an interrupted run directory
is resumed, up to ``jobs`` independent steps run at once (each in its own process, driving the engine's
Python API), a failed step blocks only the steps that need its output, and ``study.json`` records the
state after every change so ``rnas report`` and a later ``rnas study`` see where things stand."""
from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import sys
import time
from pathlib import Path

import networkx as nx
import torch

from rnas.errors import USER_ERRORS, TrainingDiverged, UserError
from rnas.runtime.rundir import STUDY_STATE, RunLock, StopSignal, atomic_write_json, first_line
from rnas.study.plan import Step, Study
from rnas.study.steps import STEP_KINDS, check_inputs, check_settings, epochs_done, is_complete, target_epochs

STATE_FILE = "study.json"


# ---- one step, in its own process ------------------------------------------------------------------
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


def _run_step(step: Step, out: Path, threads: int, channel) -> None:
    """Entry point of a step's process: run it through the Python API, report how it ended."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the study alone, which stops its steps with SIGTERM
    torch.set_num_threads(threads)
    events = _Events(channel, step.name)
    from rnas.engine.loop import RunStopped

    try:
        kind = STEP_KINDS[step.kind]
        if kind.trains:  # a training step checkpoints and stops; derive and eval just end
            with StopSignal() as stop:
                kind.run(step, out, events, lambda: stop.received or 0)
        else:
            kind.run(step, out, events, lambda: 0)
        events.send("done")
    except RunStopped as stopped:
        events.send("stopped", stopped.signum)
    except (*USER_ERRORS, TrainingDiverged) as err:
        events.send("failed", str(err).splitlines()[0] if str(err) else type(err).__name__)
    except Exception as err:  # noqa: BLE001 - any crash of a step is reported, and the independent steps go on
        events.send("failed", f"{type(err).__name__}: {first_line(err, 300)}")


# ---- the study process -----------------------------------------------------------------------------
class StudyStopped(Exception):
    def __init__(self, signum: int, again: str):
        super().__init__(f"study stopped (signal {signum}); every run checkpointed: {again} continues it")
        self.signum = signum


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class StudyConsole:
    """What the terminal shows: a tqdm bar per running step (name, ETA) on a terminal, otherwise one line
    per step start, epoch (or eval row) and end, each with the step's ETA."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.bars, self.start, self.first = total, {}, {}, {}

    def line(self, text: str) -> None:
        if self.tty:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def begin(self, number: int, step: Step, fraction: float) -> None:
        self.start[step.name], self.first[step.name] = time.monotonic(), fraction
        where = f" (resuming at {fraction:.0%})" if fraction > 0 else ""
        self.line(f"[{number}/{self.total}] {step.kind} {step.path}: started{where}")
        if self.tty:
            from tqdm import tqdm

            self.bars[step.name] = tqdm(total=1000, initial=int(fraction * 1000), desc=f"{step.kind} {step.path}",
                                        file=self.stream, leave=False, bar_format="{desc} {percentage:3.0f}%|{bar}| "
                                        "ETA {remaining}", position=self._free_row())

    def _free_row(self) -> int:
        taken = {bar.pos for bar in self.bars.values()}
        return next(i for i in range(len(self.bars) + 1) if i not in taken and -i not in taken)

    def eta(self, name: str, fraction: float) -> str:
        gained = fraction - self.first[name]
        if gained <= 0:
            return "ETA unknown"
        return f"ETA {_duration((time.monotonic() - self.start[name]) / gained * (1 - fraction))}"

    def progress(self, number: int, step: Step, fraction: float, text: str | None) -> None:
        if step.name in self.bars:
            bar = self.bars[step.name]
            bar.update(max(0, int(fraction * 1000) - bar.n))
        if text is not None and not self.tty:
            self.line(f"[{number}/{self.total}] {step.kind} {step.path}: {text}, {self.eta(step.name, fraction)}")

    def end(self, number: int, step: Step, state: str, error: str | None) -> None:
        bar = self.bars.pop(step.name, None)
        if bar is not None:
            bar.close()
        took = _duration(time.monotonic() - self.start.get(step.name, time.monotonic()))
        tail = f": {error}" if error else ""
        self.line(f"[{number}/{self.total}] {step.kind} {step.path}: {state} after {took}{tail}")


def write_state(study: Study, records: dict) -> None:
    """study.json, replaced atomically."""
    steps = []
    for step in study.steps():
        record = records[step.name]
        steps.append({"name": step.name, "kind": step.kind, "dir": step.path,
                      "deps": sorted(study.graph.predecessors(step.name)), "state": record["state"],
                      "error": record.get("error"), "seconds": round(record.get("seconds", 0.0), 1)})
    state = {"format": STUDY_STATE, "name": study.name, "spec": "study.yaml", "steps": steps, "models": study.models}
    atomic_write_json(study.out / STATE_FILE, state)


def check_same_study(study: Study) -> None:
    """``study.out`` holds no study, or this one (the same ``name``: an edited file continues it); another
    study's directory is a one-line UserError before its study.yaml and study.json are touched."""
    try:
        saved = json.loads((study.out / STATE_FILE).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        saved = None
    name = saved.get("name") if isinstance(saved, dict) else None
    if name != study.name:
        held = f"the study {name!r}" if isinstance(name, str) else f"a {STATE_FILE} rnas cannot read"
        raise UserError(f"--out {study.out}: holds {held}, not {study.name!r}; choose another --out "
                        "(nothing was changed)")


def _previous_seconds(out: Path) -> dict:
    try:
        return {s["name"]: s.get("seconds", 0.0) for s in json.loads((out / STATE_FILE).read_text())["steps"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def run_study(study: Study, jobs: int | None = None, threads: int | None = None, console=None,
              should_stop=None) -> dict:
    """Run every step not yet complete; returns {step name: state}. ``should_stop()`` (a signal number
    or 0) stops the running steps (they checkpoint) and raises ``StudyStopped``."""
    jobs = jobs or study.jobs
    threads = threads or study.threads or max(1, (os.cpu_count() or 1) // jobs)
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    steps = study.steps()
    console = console or StudyConsole(len(steps))
    should_stop = should_stop or (lambda: 0)
    seconds = _previous_seconds(out)
    with RunLock(out):
        check_same_study(study)
        (out / "study.yaml").write_text(study.source.read_text())
        records = {}
        for step in steps:
            try:
                check_settings(step, out)
                check_inputs(step, out)
                inputs_done = all(records[p]["state"] == "done" for p in study.graph.predecessors(step.name))
                records[step.name] = {"state": "done" if inputs_done and is_complete(step, out) else "pending",
                                      "seconds": seconds.get(step.name, 0.0)}
            except UserError as err:
                records[step.name] = {"state": "failed", "error": str(err)}
        for step in steps:  # what a failure before the start blocks
            if records[step.name]["state"] == "failed":
                _block(study, records, step.name)
        write_state(study, records)
        _Scheduler(study, records, jobs, threads, console).loop(should_stop)
    return {name: r["state"] for name, r in records.items()}


def _block(study: Study, records: dict, name: str) -> None:
    for later in nx.descendants(study.graph, name):
        if records[later]["state"] == "pending":
            records[later].update(state="blocked", error=f"needs {name}")


class _Scheduler:
    """The study process's loop: starts ready steps (up to ``jobs`` at once, ``threads`` torch threads each),
    reads their messages, records how each ended in study.json, and stops them on a signal."""

    def __init__(self, study: Study, records: dict, jobs: int, threads: int, console):
        self.study, self.records, self.jobs, self.threads, self.console = study, records, jobs, threads, console
        self.steps = study.steps()
        self.by_name = {s.name: s for s in self.steps}
        self.number = {s.name: i + 1 for i, s in enumerate(self.steps)}
        self.context = multiprocessing.get_context("spawn")
        self.channel = self.context.Queue()
        self.running: dict[str, tuple] = {}  # name -> (process, start time)

    def finish(self, name: str, kind: str, value=None) -> None:
        step = self.by_name[name]
        process, started = self.running.pop(name)
        process.join(timeout=30)
        record = self.records[name]
        record["seconds"] = record.get("seconds", 0.0) + time.monotonic() - started
        if kind == "done" and is_complete(step, self.study.out):
            record.update(state="done", error=None)
        elif kind == "stopped":
            record.update(state="pending", error=None)
        else:
            record.update(state="failed", error=value if kind == "failed" else "finished without completing its output")
            _block(self.study, self.records, name)
        self.console.end(self.number[name], step, "stopped" if kind == "stopped" else record["state"],
                         record.get("error"))
        write_state(self.study, self.records)

    def handle(self, message: tuple) -> None:
        name, kind, *values = message
        if name not in self.running:
            return
        if kind in ("progress", "epoch"):
            self.console.progress(self.number[name], self.by_name[name], values[0],
                                  values[1] if kind == "epoch" else None)
        else:
            self.finish(name, kind, values[0] if values else None)

    def drain(self) -> None:
        """Handle every message already sent (a process's last one is in the pipe before it exits)."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                self.handle(self.channel.get(timeout=0.2))
            except queue.Empty:
                return

    def start_ready(self) -> None:
        """Start pending steps whose inputs are done, up to ``jobs`` at once, in the plan's order."""
        out, records = self.study.out, self.records
        for step in self.steps:
            if len(self.running) >= self.jobs:
                return
            if records[step.name]["state"] != "pending" or not all(
                    records[p]["state"] == "done" for p in self.study.graph.predecessors(step.name)):
                continue
            process = self.context.Process(target=_run_step, args=(step, out, self.threads, self.channel),
                                           daemon=False)
            process.start()
            self.running[step.name] = (process, time.monotonic())
            records[step.name]["state"] = "running"
            target = target_epochs(step, out) if STEP_KINDS[step.kind].trains else None
            fraction = min(1.0, epochs_done(out / step.path) / target) if target else 0.0
            self.console.begin(self.number[step.name], step, fraction)
            write_state(self.study, records)

    def loop(self, should_stop) -> None:
        stopping = 0
        try:
            while True:
                signum = int(should_stop() or 0)
                if signum:  # first signal: the steps checkpoint and stop; a second one kills them
                    for process, _ in self.running.values():
                        if process.is_alive():
                            os.kill(process.pid, signal.SIGKILL if stopping else signal.SIGTERM)
                    stopping = stopping or signum
                if not stopping:
                    self.start_ready()
                if not self.running:
                    break
                try:
                    self.handle(self.channel.get(timeout=0.2))  # a signal is acted on within 0.2 s
                except queue.Empty:
                    pass
                for name, (process, _) in list(self.running.items()):
                    if process.exitcode is not None:  # ended: read what it said last, else it died silently
                        self.drain()
                        if name in self.running:
                            self.finish(name, "stopped" if stopping else "failed",
                                        f"its process exited with code {process.exitcode}")
        finally:
            for process, _ in self.running.values():  # the study itself failed: leave no step running behind it
                process.kill()
                process.join(timeout=10)
        if stopping:
            raise StudyStopped(stopping, self.study.again)


def summary(study: Study, states: dict) -> tuple[str, int]:
    """(last lines, exit code): 0 when every step is done, 1 when some failed or are blocked."""
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "failed", "blocked", "pending")}
    text = (f"study {study.name}: {counts['done']}/{len(states)} steps done"
            + "".join(f", {counts[s]} {s}" for s in ("failed", "blocked", "pending") if counts[s])
            + f"; {study.out / STATE_FILE} (next: rnas report {study.out} -o {study.out / 'report'})")
    return text, 0 if counts["done"] == len(states) else 1
