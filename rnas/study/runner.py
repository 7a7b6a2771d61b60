"""Running a study's graph: every step whose output is complete is skipped, an interrupted run directory
is resumed, up to ``jobs`` independent steps run at once (each in its own process, driving the engine's
Python API, launched by the study's executor: here, as Ray tasks or as SLURM jobs, rnas.study.executors),
a failed step blocks only the steps that need its output, and ``study.json`` records the state after every
change so ``rnas report`` and a later ``rnas study`` see where things stand."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import networkx as nx

from rnas.errors import UserError
from rnas.runtime.rundir import STUDY_STATE, RunLock, atomic_write_json, atomic_write_text, first_line
from rnas.study.cluster import check_available
from rnas.study.executors import FINAL, Executor, LocalExecutor
from rnas.study.plan import Step, Study
from rnas.study.steps import STEP_KINDS, check_inputs, check_settings, epochs_done, is_complete, target_epochs

STATE_FILE = "study.json"


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

    def __init__(self, total: int, stream=None, clock=time.monotonic):
        self.stream, self.clock = stream or sys.stderr, clock
        self.tty = self.stream.isatty()
        self.total, self.bars, self.start, self.paced, self.stepping = total, {}, {}, {}, set()

    def line(self, text: str) -> None:
        if self.tty:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def begin(self, number: int, step: Step, fraction: float) -> None:
        self.start[step.name] = self.clock()
        self.paced[step.name] = (self.start[step.name], fraction)
        self.stepping.discard(step.name)
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
        since, first = self.paced[name]
        gained = fraction - first
        if gained <= 0:
            return "ETA unknown"
        return f"ETA {_duration((self.clock() - since) / gained * (1 - fraction))}"

    def progress(self, number: int, step: Step, fraction: float, text: str | None) -> None:
        if text is None and step.name not in self.stepping:
            # the pace counts from the step's first batch, where the run really stands: a run resumed from a
            # mid-epoch checkpoint starts past the whole epochs ``begin`` saw (and its start-up is not work)
            self.stepping.add(step.name)
            self.paced[step.name] = (self.clock(), fraction)
        if step.name in self.bars:
            bar = self.bars[step.name]
            bar.update(max(0, int(fraction * 1000) - bar.n))
        if text is not None and not self.tty:
            self.line(f"[{number}/{self.total}] {step.kind} {step.path}: {text}, {self.eta(step.name, fraction)}")

    def end(self, number: int, step: Step, state: str, error: str | None) -> None:
        bar = self.bars.pop(step.name, None)
        if bar is not None:
            bar.close()
        took = _duration(self.clock() - self.start.get(step.name, self.clock()))
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
        if record.get("job"):
            steps[-1]["job"] = record["job"]
    state = {"format": STUDY_STATE, "name": study.name, "spec": "study.yaml", "executor": study.executor.kind,
             "steps": steps, "models": study.models}
    if study.seeds is not None:  # the study's seeds: and whether they share one search
        state.update(seeds=study.seeds, share_search=study.share_search)
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
    or 0) stops the running steps (they checkpoint) and raises ``StudyStopped``. The study's executor
    launches the steps (local: processes here; ray, slurm: on a cluster, every ready step at once unless
    ``jobs`` says otherwise)."""
    check_available(study.executor)
    cluster = study.executor.kind != "local"
    jobs = jobs or (study.jobs if study.jobs_given or not cluster else len(study.graph))
    local_threads = threads or study.threads or max(1, (os.cpu_count() or 1) // jobs)
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    steps = study.steps()
    console = console or StudyConsole(len(steps))
    should_stop = should_stop or (lambda: 0)
    seconds = _previous_seconds(out)
    with RunLock(out):
        check_same_study(study)
        atomic_write_text(out / "study.yaml", study.source.read_text())
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
        executor = make_executor(study, threads or study.threads, local_threads)
        _Scheduler(study, records, jobs, executor, console).loop(should_stop)
    return {name: r["state"] for name, r in records.items()}


def _block(study: Study, records: dict, name: str) -> None:
    for later in nx.descendants(study.graph, name):
        if records[later]["state"] == "pending":
            records[later].update(state="blocked", error=f"needs {name}")


def make_executor(study: Study, threads: int | None, local_threads: int) -> Executor:
    """The study's executor (its extra checked installed before anything is written)."""
    kind = study.executor.kind
    if kind == "ray":
        from rnas.study.ray_executor import RayExecutor

        return RayExecutor(study, threads)
    if kind == "slurm":
        from rnas.study.slurm_executor import SlurmExecutor

        return SlurmExecutor(study, threads)
    return LocalExecutor(study, local_threads)


class _Scheduler:
    """The study process's loop: starts ready steps through the executor (up to ``jobs`` at once), reads their
    messages, records how each ended in study.json, and stops them on a signal."""

    def __init__(self, study: Study, records: dict, jobs: int, executor: Executor, console):
        self.study, self.records, self.jobs, self.executor, self.console = study, records, jobs, executor, console
        self.steps = study.steps()
        self.by_name = {s.name: s for s in self.steps}
        self.number = {s.name: i + 1 for i, s in enumerate(self.steps)}
        self.running: dict[str, float] = {}  # name -> start time
        self.stopping = 0

    def finish(self, name: str, kind: str, value=None) -> None:
        step = self.by_name[name]
        started = self.running.pop(name)
        record = self.records[name]
        record["seconds"] = record.get("seconds", 0.0) + time.monotonic() - started
        if kind == "lost":  # its process, worker or job ended without saying how
            kind = "stopped" if self.stopping else "failed"
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
        step = self.by_name[name]
        if kind in ("progress", "epoch"):
            self.console.progress(self.number[name], step, values[0], values[1] if kind == "epoch" else None)
        elif kind == "note":
            self.console.line(f"[{self.number[name]}/{self.console.total}] {step.kind} {step.path}: {values[0]}")
            self.records[name]["job"] = self.executor.job_id(name) or self.records[name].get("job")
            write_state(self.study, self.records)
        elif kind in FINAL:
            self.finish(name, kind, values[0] if values else None)

    def start_ready(self) -> None:
        """Start pending steps whose inputs are done, up to ``jobs`` at once, in the plan's order."""
        out, records = self.study.out, self.records
        for step in self.steps:
            if len(self.running) >= self.jobs:
                return
            if records[step.name]["state"] != "pending" or not all(
                    records[p]["state"] == "done" for p in self.study.graph.predecessors(step.name)):
                continue
            try:  # its inputs as its predecessors left them now (a net derived or grown again since the scan)
                check_inputs(step, out)
            except UserError as err:
                records[step.name].update(state="failed", error=str(err))
                _block(self.study, records, step.name)
                self.console.end(self.number[step.name], step, "failed", str(err))
                write_state(self.study, records)
                continue
            job = self.executor.launch(step)
            self.running[step.name] = time.monotonic()
            records[step.name]["state"] = "running"
            records[step.name]["job"] = job
            target = target_epochs(step, out) if STEP_KINDS[step.kind].trains else None
            fraction = min(1.0, epochs_done(out / step.path) / target) if target else 0.0
            self.console.begin(self.number[step.name], step, fraction)
            write_state(self.study, records)

    def loop(self, should_stop) -> None:
        try:
            try:
                self.executor.open()
            except Exception as err:  # noqa: BLE001 - no cluster to reach: one line, the steps stay pending
                raise UserError(f"--executor {self.executor.kind}: cannot start ({first_line(err, 200)}); "
                                "no step ran") from None
            while True:
                signum = int(should_stop() or 0)
                if signum:  # first signal: the steps checkpoint and stop; a second one kills them
                    self.executor.stop(kill=bool(self.stopping))
                    self.stopping = self.stopping or signum
                if not self.stopping:
                    self.start_ready()
                if not self.running:
                    break
                for message in self.executor.poll(0.2):  # a signal is acted on within 0.2 s
                    self.handle(message)
        finally:
            self.executor.close()  # the study itself failed: leave no step running behind it
        if self.stopping:
            raise StudyStopped(self.stopping, self.study.again)


def summary(study: Study, states: dict) -> tuple[str, int]:
    """(last lines, exit code): 0 when every step is done, 1 when some failed or are blocked."""
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "failed", "blocked", "pending")}
    text = (f"study {study.name}: {counts['done']}/{len(states)} steps done"
            + "".join(f", {counts[s]} {s}" for s in ("failed", "blocked", "pending") if counts[s])
            + f"; {study.out / STATE_FILE} (next: rnas report {study.out} -o {study.out / 'report'})")
    return text, 0 if counts["done"] == len(states) else 1
