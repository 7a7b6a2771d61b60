"""``--executor ray``: each step a Ray task with the resources of its kind (``num_cpus`` / ``num_gpus``) on a
running cluster (``--ray-address``) or a local one started for the study. A task whose worker process or node
is lost is retried by Ray (``max_retries``: the study's ``retries``) and resumes from its run directory's
checkpoint; the step's own errors are not retried. Results are written where the local executor writes
them: the study directory must be on a filesystem every node sees."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from rnas.runtime.rundir import first_line
from rnas.study.executors import FileExecutor
from rnas.study.plan import Step
from rnas.study.steps import STEP_KINDS
from rnas.study.worker import FileChannel, StopFile, execute, step_dir


def ray_step(step: Step, out: str, threads: int) -> tuple:
    """The task: the step's engine call in this worker (its pid written for whoever must find it)."""
    here = step_dir(Path(out), step.name)
    (here / "pid").write_text(f"{os.getpid()}\n")
    return execute(step, Path(out), threads, FileChannel(here / "events.jsonl"), StopFile(here / "stop"))


class RayExecutor(FileExecutor):
    kind = "ray"

    def __init__(self, study, threads):
        super().__init__(study, threads)
        self.refs: dict[str, object] = {}
        self.kinds: dict[str, str] = {}
        self.started = False

    def open(self) -> None:
        import ray

        kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        if not ray.is_initialized():
            ray.init(address=self.settings.address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
            self.started = True
        for sig, handler in kept.items():  # the study's stop handlers, not Ray's (which exit at once)
            signal.signal(sig, handler)
        self.task = ray.remote(ray_step)

    def launch(self, step: Step) -> str | None:
        self.watch(step)
        resources = step.resources
        ref = self.task.options(num_cpus=resources.get("cpus", 1), num_gpus=resources.get("gpus", 0),
                                max_retries=self.settings.retries, retry_exceptions=False,
                                name=f"rnas {step.kind} {step.path}").remote(step, str(self.out),
                                                                            self.step_threads(step))
        self.refs[step.name], self.kinds[step.name] = ref, step.kind
        return ref.task_id().hex()

    def poll(self, timeout: float) -> list[tuple]:
        import ray

        messages = []
        by_ref = {ref: name for name, ref in self.refs.items()}
        ready = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)[0] if by_ref else []
        messages.extend(self.events())
        for ref in ready:
            name = by_ref[ref]
            del self.refs[name]
            self.readers.pop(name, None)
            try:
                messages.append((name, *ray.get(ref)))
            except ray.exceptions.RayError as err:  # the worker or node was lost more often than retried
                messages.append((name, "lost", f"{type(err).__name__}: {first_line(err, 200)}"))
        return messages

    def stop(self, kill: bool) -> None:
        import ray

        self.request_stop(self.refs)
        for name, ref in self.refs.items():
            if kill or not STEP_KINDS[self.kinds[name]].trains:  # derive and eval end; they have no checkpoint
                ray.cancel(ref, force=True)

    def close(self) -> None:
        import ray

        for ref in self.refs.values():
            ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started:
            ray.shutdown()
