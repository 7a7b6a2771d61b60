"""`rnas study --status STUDY_DIR_OR_YAML`: each step's state as study.json records it, with its job id and,
for SLURM jobs, the job's state now (sacct, through submitit)."""
from __future__ import annotations

import json
from pathlib import Path

from rnas.errors import UserError

STATE_FILE = "study.json"


def study_dir(target: Path, out: str | None) -> Path:
    """The study directory of ``target``: itself, or for a study file ``--out`` (default runs/<name>)."""
    if target.is_dir():
        return target
    if not target.is_file():
        raise UserError(f"{target}: no such study file or directory")
    if out:
        return Path(out)
    from rnas.study.plan import read_study

    return Path("runs") / str(read_study(target).get("name") or target.stem)


def status_lines(target: Path, out: str | None = None) -> list[str]:
    directory = study_dir(Path(target), out)
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        steps = state["steps"]
    except FileNotFoundError:
        raise UserError(f"{directory}: no {STATE_FILE} (the study has not run there)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{directory / STATE_FILE}: not a study state rnas can read") from None
    executor = state.get("executor", "local")
    live = {}
    if executor == "slurm":
        running = {s["name"]: s["job"] for s in steps if s.get("job") and s.get("state") == "running"}
        if running:
            try:
                from rnas.study.slurm_executor import job_states
            except ImportError:
                live = {name: "unknown (submitit not installed)" for name in running}
            else:
                live = job_states(directory, running)
    lines = [f"study {state.get('name')} in {directory} (executor {executor})"]
    for i, step in enumerate(steps, 1):
        job = f" job {step['job']}" if step.get("job") else ""
        now = f" [{live[step['name']]}]" if step["name"] in live else ""
        error = f": {step['error']}" if step.get("error") else ""
        lines.append(f"{i:3d}. {step['kind']:8s} {step['dir']:40s} {step['state']}{job}{now}{error}")
    counts = {}
    for step in steps:
        counts[step["state"]] = counts.get(step["state"], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return lines
