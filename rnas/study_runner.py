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

from .errors import USER_ERRORS, TrainingDiverged, UserError
from .rundir import RunLock, StopSignal, first_line
from .study import Step, Study

STATE_FILE = "study.json"
FORMAT = "rnas-study-1"


# ---- what is complete ------------------------------------------------------------------------------
def _epochs_done(run: Path) -> int:
    path = run / "checkpoint.pt"
    if not path.is_file():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is resumed (and reported) by the step itself
        return 0


def check_settings(step: Step, out: Path) -> None:
    """A run directory made with other settings than the study file's now is a one-line UserError (the
    study never silently reuses, nor overwrites, a run it did not ask for); more epochs are fine."""
    from .config import changed_setting, read_run_config

    if step.kind not in ("search", "retrain", "finetune") or not (out / step.path / "config.yaml").is_file():
        return
    base = read_run_config(type(step.config), out / step.path / "config.yaml", step.kind)
    # None: a default the run resolves itself (e.g. the dataset's learning rate), written out resolved
    if changed := changed_setting(base, step.config, unset_ok=True):
        key, was, now = changed
        raise UserError(f"{out / step.path} was run with {key} {was!r}, the study now asks for "
                        f"{now!r}; move the run away to run it again, or restore the study file")


def target_epochs(step: Step, out: Path) -> int | None:
    """The epochs a training step runs to: the study's, or when it leaves them to the recipe (None), what
    the run resolved (its config.yaml); None before such a run has started."""
    from .config import read_run_config

    if step.config.epochs is not None:
        return step.config.epochs
    try:
        return int(read_run_config(type(step.config), out / step.path / "config.yaml")["epochs"])
    except (UserError, TypeError, KeyError, ValueError):
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def eval_request(config) -> dict:
    """What an evaluation was asked for, stored in its JSON: a later study asking for something else redoes it."""
    return {"attacks": config.attack_list(), "eps": [round(e, 10) for e in config.eps_values()], "n": config.n,
            "seed": config.seed, "eps_space": config.eps_space, "cw_steps": config.cw_steps}


def is_complete(step: Step, out: Path) -> bool:
    """Whether the step's output is there and was made from its inputs as they are now: an evaluation
    newer than its checkpoint and with the study's attacks / n / seed / eps protocol, arch files from the
    search's last epoch, a run trained to its epochs."""
    if step.kind == "eval":
        result, checkpoint = _read_json(out / step.path), Path(step.config.checkpoint)
        return (result is not None and checkpoint.is_file() and result.get("requested") == eval_request(step.config)
                and (out / step.path).stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns)
    if step.kind == "derive":
        from .derivation import arch_filename

        searched = _epochs_done(out / step.path)
        arch = [_read_json(out / step.path / arch_filename(b)) for b in step.extra["budgets"]]
        return searched > 0 and all(a is not None and a.get("search_epochs_done") == searched for a in arch)
    target = target_epochs(step, out)
    return target is not None and _epochs_done(out / step.path) >= target


def check_inputs(step: Step, out: Path) -> None:
    """A finished retrain or fine-tune made from inputs that have changed since (a longer search derived
    another net; the fine-tuned arm was extended) is refused for that step, never silently kept."""
    if step.kind not in ("retrain", "finetune") or not (out / step.path / "checkpoint.pt").is_file():
        return
    run = out / step.path
    arch = _read_json(Path(step.config.arch))
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True).get("arch") or {}
    if arch is not None and saved and (saved.get("widths"), saved.get("tutors")) != (arch.get("widths"),
                                                                                      arch.get("tutors")):
        raise UserError(f"{run} was trained on another net than {step.config.arch} describes now (the search was "
                        "extended?); move the run away to train the new one")
    if step.kind == "finetune" and Path(step.config.init).is_file() and \
            Path(step.config.init).stat().st_mtime_ns > (run / "checkpoint.pt").stat().st_mtime_ns and \
            is_complete(step, out):
        raise UserError(f"{run} fine-tuned an older {step.config.init} (the arm was trained further since); "
                        "move the run away to fine-tune the new one")


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
    from .loop import RunStopped

    try:
        if step.kind in ("search", "retrain", "finetune"):  # they checkpoint and stop; derive and eval just end
            with StopSignal() as stop:
                _dispatch(step, out, events, lambda: stop.received or 0)
        else:
            _dispatch(step, out, events, lambda: 0)
        events.send("done")
    except RunStopped as stopped:
        events.send("stopped", stopped.signum)
    except (*USER_ERRORS, TrainingDiverged) as err:
        events.send("failed", str(err).splitlines()[0] if str(err) else type(err).__name__)
    except Exception as err:  # noqa: BLE001 - any crash of a step is reported, and the independent steps go on
        events.send("failed", f"{type(err).__name__}: {first_line(err, 300)}")


def _started(run: Path) -> bool:
    return (run / "config.yaml").is_file() or (run / "checkpoint.pt").is_file()


def _resumed_config(config, run: Path):
    """As ``rnas ... --resume`` does: the run's own resolved settings, with the study's explicit values on top
    (a default the run resolved, e.g. milestones from the epochs, stays what it was)."""
    import dataclasses

    from .config import read_run_config

    if not (run / "config.yaml").is_file():
        return config
    base = read_run_config(type(config), run / "config.yaml")
    return type(config)(**{**base, **{k: v for k, v in dataclasses.asdict(config).items() if v is not None}})


def _dispatch(step: Step, out: Path, events: _Events, should_stop) -> None:
    run = out / step.path
    if step.kind == "search":
        from .search import run_search

        run_search(_resumed_config(step.config, run), run, resume=_started(run), callbacks=[events],
                   should_stop=should_stop)
    elif step.kind in ("retrain", "finetune"):
        from .retrain import run_retrain

        run_retrain(_resumed_config(step.config, run), run, resume=_started(run), callbacks=[events],
                    should_stop=should_stop)
    elif step.kind == "derive":
        from .derivation import write_archs

        write_archs(run, step.extra["budgets"])
    elif step.kind == "eval":
        import dataclasses

        from .evaluate import run_eval

        eps = step.config.eps_values()
        rows = sum(1 if a == "clean" else len(eps) for a in step.config.attack_list())
        done = []

        def row(result: dict) -> None:
            done.append(result)
            events.send("epoch", len(done) / rows, f"{result['attack']} eps {result['eps']:.4g}: "
                                                   f"{result['accuracy']:.2f} %")
        result = run_eval(dataclasses.replace(step.config, json=None), out=lambda line: None, progress=row)
        partial = run.with_name(run.name + ".partial")  # the JSON appears whole, or not at all
        partial.write_text(json.dumps({**result, "requested": eval_request(step.config)}, indent=1) + "\n")
        os.replace(partial, run)
    else:
        raise AssertionError(step.kind)


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
    state = {"format": FORMAT, "name": study.name, "spec": "study.yaml", "steps": steps, "models": study.models}
    tmp = study.out / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, study.out / STATE_FILE)


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
    number = {s.name: i + 1 for i, s in enumerate(steps)}
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
        _loop(study, steps, records, number, jobs, threads, console, should_stop)
    return {name: r["state"] for name, r in records.items()}


def _block(study: Study, records: dict, name: str) -> None:
    for later in nx.descendants(study.graph, name):
        if records[later]["state"] == "pending":
            records[later].update(state="blocked", error=f"needs {name}")


def _loop(study, steps, records, number, jobs, threads, console, should_stop) -> None:
    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    running: dict[str, tuple] = {}  # name -> (process, start time)
    by_name = {s.name: s for s in steps}
    stopping = 0

    def finish(name: str, kind: str, value=None) -> None:
        step = by_name[name]
        process, started = running.pop(name)
        process.join(timeout=30)
        record = records[name]
        record["seconds"] = record.get("seconds", 0.0) + time.monotonic() - started
        if kind == "done" and is_complete(step, study.out):
            record.update(state="done", error=None)
        elif kind == "stopped":
            record.update(state="pending", error=None)
        else:
            record.update(state="failed", error=value if kind == "failed" else "finished without completing its output")
            _block(study, records, name)
        console.end(number[name], step, "stopped" if kind == "stopped" else record["state"], record.get("error"))
        write_state(study, records)

    def handle(message: tuple) -> None:
        name, kind, *values = message
        if name not in running:
            return
        if kind in ("progress", "epoch"):
            console.progress(number[name], by_name[name], values[0], values[1] if kind == "epoch" else None)
        else:
            finish(name, kind, values[0] if values else None)

    try:
        while True:
            signum = int(should_stop() or 0)
            if signum:  # first signal: the steps checkpoint and stop; a second one kills them
                for process, _ in running.values():
                    if process.is_alive():
                        os.kill(process.pid, signal.SIGKILL if stopping else signal.SIGTERM)
                stopping = stopping or signum
            if not stopping:
                _start_ready(study, steps, records, number, jobs, threads, console, running, context, channel)
            if not running:
                break
            try:
                handle(channel.get(timeout=0.2))  # a signal is acted on within 0.2 s
            except queue.Empty:
                pass
            for name, (process, _) in list(running.items()):
                if process.exitcode is not None:  # ended: read what it said last, else it died silently
                    _drain(channel, handle)
                    if name in running:
                        finish(name, "stopped" if stopping else "failed",
                               f"its process exited with code {process.exitcode}")
    finally:
        for process, _ in running.values():  # the study itself failed: leave no step running behind it
            process.kill()
            process.join(timeout=10)
    if stopping:
        raise StudyStopped(stopping, study.again)


def _drain(channel, handle) -> None:
    """Handle every message already sent (a process's last one is in the pipe before it exits)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            handle(channel.get(timeout=0.2))
        except queue.Empty:
            return


def _start_ready(study, steps, records, number, jobs, threads, console, running, context, channel) -> None:
    """Start pending steps whose inputs are done, up to ``jobs`` at once, in the plan's order."""
    for step in steps:
        if len(running) >= jobs:
            return
        if records[step.name]["state"] != "pending" or not all(
                records[p]["state"] == "done" for p in study.graph.predecessors(step.name)):
            continue
        process = context.Process(target=_run_step, args=(step, study.out, threads, channel), daemon=False)
        process.start()
        running[step.name] = (process, time.monotonic())
        records[step.name]["state"] = "running"
        target = target_epochs(step, study.out) if step.kind in ("search", "retrain", "finetune") else None
        fraction = min(1.0, _epochs_done(study.out / step.path) / target) if target else 0.0
        console.begin(number[step.name], step, fraction)
        write_state(study, records)


def summary(study: Study, states: dict) -> tuple[str, int]:
    """(last lines, exit code): 0 when every step is done, 1 when some failed or are blocked."""
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "failed", "blocked", "pending")}
    text = (f"study {study.name}: {counts['done']}/{len(states)} steps done"
            + "".join(f", {counts[s]} {s}" for s in ("failed", "blocked", "pending") if counts[s])
            + f"; {study.out / STATE_FILE} (next: rnas report {study.out} -o {study.out / 'report'})")
    return text, 0 if counts["done"] == len(states) else 1
