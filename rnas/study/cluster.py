"""Where a study's steps run: the ``executor`` and ``slurm`` sections of a study file, and the per-step
resources (per step kind, overridable per arm), each problem a one-line ``UserError`` naming the field.

.. code-block:: yaml

    executor:
      kind: ray              # local (default) | ray | slurm; --executor replaces it
      address: auto          # ray: a running cluster (--ray-address); default: start a local one
      retries: 2             # a step whose worker, node or job is lost is retried from its checkpoint
      resources:             # per step kind: cpus, gpus, nproc (torchrun ranks), time (min), mem_gb
        search: {cpus: 8, gpus: 1}
        retrain: {cpus: 8, gpus: 1, time: 720}
        eval: {cpus: 4, gpus: 1}
    slurm: {partition: gpu, account: proj, time: 1440, setup: ["module load cuda"]}
    arms:
      - {arm: rnas-cl, resources: {retrain: {gpus: 4, nproc: 4}}}
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field

from rnas.errors import UserError

EXECUTORS = ("local", "ray", "slurm")
EXECUTOR_KEYS = ("kind", "address", "retries", "resources")
STEP_KIND_NAMES = ("search", "derive", "grow", "retrain", "finetune", "eval")
ARM_KINDS = ("retrain", "finetune", "eval")  # the steps of an arm, which its ``resources`` may override
SLURM_KEYS = ("partition", "account", "qos", "constraint", "time", "mem_gb", "cpus_per_task", "gpus_per_node",
              "setup", "additional", "cluster")
SLURM_CLUSTERS = ("slurm", "local")  # local: submitit's local executor (real subprocesses, for testing)
EXTRAS = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}  # kind -> (module, extra)


def _whole(low: int):
    def check(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= low
    return check, f"a whole number >= {low}"


def _number(positive: bool):
    def check(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
            and value != float("inf") and (value > 0 if positive else value >= 0)
    return check, "a number > 0" if positive else "a number >= 0"


# resource -> (check, what it must be)
RESOURCES = {"cpus": _whole(1), "gpus": _number(False), "nproc": _whole(1), "time": _whole(1), "mem_gb": _number(True)}


@dataclass
class ExecutorSettings:
    """How the study's steps are launched; ``resources`` maps a step kind to its resources."""

    kind: str = "local"
    address: str | None = None
    retries: int = 2
    resources: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)


def fail(where: str, message: str) -> UserError:
    return UserError(f"{where}: {message}")


def mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(where, f"expected a mapping, got {type(value).__name__}")
    return value


def check_kind(kind, where: str) -> str:
    if kind not in EXECUTORS:
        raise fail(where, f"{kind!r}: one of {', '.join(EXECUTORS)}")
    return kind


def resources(value, where: str, kinds=STEP_KIND_NAMES) -> dict:
    """``{kind: {cpus: 8, gpus: 1, ...}}`` checked: known kinds, known resources, values of the right type."""
    out = {}
    for kind, values in mapping(value, where).items():
        if kind not in kinds:
            raise fail(f"{where}.{kind}", f"not a step kind (one of {', '.join(kinds)})")
        out[kind] = {}
        for key, amount in mapping(values, f"{where}.{kind}").items():
            if key not in RESOURCES:
                raise fail(f"{where}.{kind}.{key}", f"unknown resource (one of {', '.join(RESOURCES)})")
            check, what = RESOURCES[key]
            if not check(amount):
                raise fail(f"{where}.{kind}.{key}", f"{amount!r}: {what}")
            out[kind][key] = amount
        if kind in ("derive", "grow") and out[kind].get("nproc", 1) > 1:
            raise fail(f"{where}.{kind}.nproc", f"{kind} runs in one process")
    return out


def read_settings(data: dict, where: str, kind: str | None = None, address: str | None = None) -> ExecutorSettings:
    """The file's ``executor`` and ``slurm`` sections; ``kind`` / ``address`` (the command line) replace the
    file's."""
    section = mapping(data.get("executor"), f"{where}: executor")
    for key in section:
        if key not in EXECUTOR_KEYS:
            raise fail(f"{where}: executor.{key}", f"unknown key (one of {', '.join(EXECUTOR_KEYS)})")
    kind = check_kind(kind or section.get("kind", "local"), f"{where}: executor.kind" if not kind else "--executor")
    retries = section.get("retries", 2)
    if not _whole(0)[0](retries):
        raise fail(f"{where}: executor.retries", f"{retries!r}: a whole number >= 0")
    address = address or section.get("address")
    if address is not None and (not isinstance(address, str) or not address):
        raise fail(f"{where}: executor.address", f"{address!r}: a Ray address (auto, HOST:PORT, ray://HOST:PORT)")
    slurm = dict(mapping(data.get("slurm"), f"{where}: slurm"))
    for key, value in slurm.items():
        here = f"{where}: slurm.{key}"
        if key not in SLURM_KEYS:
            raise fail(here, f"unknown key (one of {', '.join(SLURM_KEYS)})")
        if key in ("partition", "account", "qos", "constraint") and (not isinstance(value, str) or not value):
            raise fail(here, f"{value!r}: a name")
        if key in ("time", "cpus_per_task") and not _whole(1)[0](value):
            raise fail(here, f"{value!r}: a whole number >= 1" + (" (minutes)" if key == "time" else ""))
        if key == "gpus_per_node" and not _whole(0)[0](value):
            raise fail(here, f"{value!r}: a whole number >= 0")
        if key == "mem_gb" and not _number(True)[0](value):
            raise fail(here, f"{value!r}: a number > 0")
        if key == "setup" and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise fail(here, "a list of shell lines")
        if key == "additional":
            mapping(value, here)
        if key == "cluster" and value not in SLURM_CLUSTERS:
            raise fail(here, f"{value!r}: one of {', '.join(SLURM_CLUSTERS)}")
    settings = ExecutorSettings(kind, address, retries, resources(section.get("resources"),
                                                                  f"{where}: executor.resources"), slurm)
    for step_kind, values in settings.resources.items():
        if kind == "slurm" and not float(values.get("gpus", 0)).is_integer():
            raise fail(f"{where}: executor.resources.{step_kind}.gpus", "whole GPUs on SLURM")
    return settings


def step_resources(settings: ExecutorSettings, kind: str, arm: dict | None = None) -> dict:
    """A step's resources: its kind's, with its arm's on top."""
    return {**settings.resources.get(kind, {}), **(arm or {}).get(kind, {})}


def check_available(settings: ExecutorSettings) -> None:
    """``--executor ray`` / ``slurm`` without its extra installed, or slurm where there is no SLURM: one line,
    before anything is written."""
    kind = settings.kind
    if kind in EXTRAS:
        module, extra = EXTRAS[kind]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"--executor {kind} needs {module}, which is not installed: pip install -e '.[{extra}]' "
                            f"(or pip install {module})")
    if kind == "slurm" and settings.slurm.get("cluster") != "local" and shutil.which("sbatch") is None:
        raise UserError("--executor slurm: no SLURM here (sbatch not found); run rnas study on a login node of "
                        "the cluster")
