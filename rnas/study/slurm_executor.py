"""``--executor slurm``: each step a SLURM job through submitit (partition / account / time / GPUs from the
study file's ``slurm`` section and the step kind's resources), its pickles and logs in
``OUT/.executor/submitit``. A job preempted or timed out is requeued by submitit's checkpointing hook
(``StepJob.checkpoint``: the same step again) and resumes from its run directory's checkpoint; a job that ends
without a result (killed, node lost) is resubmitted up to ``retries`` times, and resumes the same way.
``slurm: {cluster: local}`` runs the jobs as local subprocesses (submitit's local executor), for testing."""
from __future__ import annotations

import os
from pathlib import Path

import submitit

from rnas.runtime.rundir import first_line
from rnas.study.executors import FileExecutor
from rnas.study.plan import Step
from rnas.study.steps import STEP_KINDS
from rnas.study.worker import EXECUTOR_DIR, FileChannel, StopFile, execute, step_dir

DEFAULT_TIME = 24 * 60  # minutes, when neither the step kind nor the slurm section says


class StepJob(submitit.helpers.Checkpointable):
    """The job: the step's engine call. ``checkpoint`` (submitit's default for a Checkpointable, called on
    preemption or time-out) resubmits the same call, which resumes from the run directory's checkpoint."""

    def __call__(self, step: Step, out: str, threads: int) -> tuple:
        here = step_dir(Path(out), step.name)
        (here / "pid").write_text(f"{os.getpid()}\n")
        return execute(step, Path(out), threads, FileChannel(here / "events.jsonl"), StopFile(here / "stop"))


def submitit_folder(out: Path) -> Path:
    return Path(out) / EXECUTOR_DIR / "submitit"


def job_parameters(step: Step, slurm: dict, name: str) -> dict:
    """submitit's parameters for ``step``: its kind's resources over the slurm section's defaults."""
    resources = step.resources
    params = {"timeout_min": int(resources.get("time", slurm.get("time", DEFAULT_TIME))),
              "gpus_per_node": int(resources.get("gpus", slurm.get("gpus_per_node", 0))),
              "cpus_per_task": int(resources.get("cpus", slurm.get("cpus_per_task", 1))),
              "nodes": 1, "tasks_per_node": 1, "name": name}
    if "mem_gb" in resources or "mem_gb" in slurm:
        params["mem_gb"] = resources.get("mem_gb", slurm.get("mem_gb"))
    for key in ("partition", "account", "qos", "constraint", "setup"):
        if slurm.get(key):
            params[f"slurm_{key}"] = slurm[key]
    if slurm.get("additional"):
        params["slurm_additional_parameters"] = dict(slurm["additional"])
    return params


class SlurmExecutor(FileExecutor):
    kind = "slurm"

    def __init__(self, study, threads):
        super().__init__(study, threads)
        self.jobs: dict[str, tuple] = {}  # name -> (job, step, resubmissions)
        self.stopping = False

    def open(self) -> None:
        cluster = "local" if self.settings.slurm.get("cluster") == "local" else "slurm"
        self.executor = submitit.AutoExecutor(folder=submitit_folder(self.out), cluster=cluster)

    def _submit(self, step: Step):
        params = job_parameters(step, self.settings.slurm, f"rnas-{self.study.name}-{step.kind}-{step.path}")
        if self.executor.cluster == "local":  # submitit's local executor knows no cpus or memory
            params = {k: v for k, v in params.items() if k not in ("cpus_per_task", "mem_gb", "nodes")}
        self.executor.update_parameters(**params)
        return self.executor.submit(StepJob(), step, str(self.out), self.step_threads(step))

    def launch(self, step: Step) -> str | None:
        self.watch(step)
        job = self._submit(step)
        self.jobs[step.name] = (job, step, 0)
        return str(job.job_id)

    def poll(self, timeout: float) -> list[tuple]:
        import time

        time.sleep(timeout)
        messages = self.events()
        for name, (job, step, resubmitted) in list(self.jobs.items()):
            if not job.done():
                continue
            try:
                messages.append((name, *job.result()))
            except Exception as err:  # noqa: BLE001 - killed, cancelled, node lost: submitit says so in its way
                why = first_line(err, 200)
                if not self.stopping and resubmitted < self.settings.retries:
                    job = self._submit(step)
                    self.jobs[name] = (job, step, resubmitted + 1)
                    messages.append((name, "note", f"job ended without a result ({why}); resubmitted as job "
                                                   f"{job.job_id} ({resubmitted + 1}/{self.settings.retries}), "
                                                   "resuming from its checkpoint"))
                    continue
                messages.append((name, "lost", f"job {job.job_id} ended without a result: {why}"))
            del self.jobs[name]
            self.readers.pop(name, None)
        return messages

    def job_id(self, name: str) -> str | None:
        return str(self.jobs[name][0].job_id) if name in self.jobs else None

    def stop(self, kill: bool) -> None:
        self.stopping = True
        self.request_stop(self.jobs)
        for job, step, _ in self.jobs.values():
            if kill or not STEP_KINDS[step.kind].trains:
                job.cancel(check=False)

    def close(self) -> None:
        for job, _, _ in self.jobs.values():
            job.cancel(check=False)
        self.jobs.clear()


def job_states(out: Path, ids: dict[str, str]) -> dict[str, str]:
    """{step name: SLURM job state} of the recorded job ids (sacct, through submitit)."""
    states = {}
    for name, job_id in ids.items():
        try:
            states[name] = submitit.SlurmJob(submitit_folder(out), job_id).state
        except Exception as err:  # noqa: BLE001 - no sacct here, or the job is unknown to it
            states[name] = f"unknown ({first_line(err, 80)})"
    return states
