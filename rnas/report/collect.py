"""`rnas report RUN_OR_STUDY_DIR... -o DIR`: what a set of runs found, as one shareable page.

DIR/index.html holds the arms' table, the Pareto and eps-sweep plots, each search's and retrain's
curves and a study's steps, with every PNG embedded as a data: URI (the page alone can be sent) and
also written beside it; models.csv / models.json / searches.json hold the same numbers. Inputs are
search run dirs, retrain run dirs and study dirs (``study.json``, format ``rnas-study-1``) in any mix.
This module reads the inputs and writes DIR; the numbers live in ``rnas/report/tables.py``, the page in
``rnas/report/html.py``, its figures (matplotlib, the optional extra ``.[report]``) in ``rnas/report/figures.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from rnas.errors import UserError
from rnas.evaluation.results import is_number, read_eval
from rnas.method.baselines import BASELINES
from rnas.report.runs import Inputs, Model, Run
from rnas.report.tables import adversarial_training, model_table, search_summary, write_models_csv, write_paired_csv
from rnas.runtime.rundir import STUDY_STATE, read_json, read_text

MANIFEST = ".rnas-report"  # names of the files a report wrote: only those may be replaced by the next one


# ---- reading ---------------------------------------------------------------------------------------
def _rows_of_numbers(value) -> bool:
    return isinstance(value, list) and all(isinstance(row, list) and all(map(is_number, row)) for row in value)


TUTOR_FIELDS = ("student_layers", "teacher_layers", "tutors", "tutor_probabilities")  # the last is optional


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _arch_problem(arch: dict, required: tuple[str, ...]) -> str | None:
    """What is wrong with the fields of an arch.json that a report reads (None: nothing); ``required``: the
    fields it must have (a search's figures need them; a hand-written arch a retrain ran on may leave them out)."""
    missing = [key for key in required if key not in arch]
    if missing:
        return f"no {', '.join(missing)}"
    for key in ("macs", "params"):
        if key in arch and not (is_number(arch[key]) and arch[key] >= 0):
            return f"{key}: expected a number >= 0, got {arch[key]!r}"
    widths, choices = arch.get("widths", [1]), arch.get("width_choices")
    if not (isinstance(widths, list) and widths and all(_whole(w) and w > 0 for w in widths)):
        return f"widths: expected a list of positive whole numbers, got {widths!r}"
    if choices is not None and not (_rows_of_numbers(choices) and all(choices)):
        return "width_choices: expected a list of lists of widths"
    if choices is not None and "widths" in arch and len(choices) != len(widths):
        return f"width_choices: {len(choices)} blocks but widths has {len(widths)}"
    present = [key for key in TUTOR_FIELDS if key in arch]
    if not present:
        return None
    if missing := [k for k in TUTOR_FIELDS[:3] if k not in present]:  # a scaled net has no tutor_probabilities
        return f"no {', '.join(missing)} beside {', '.join(present)}"
    students, teachers, tutors = (arch[key] for key in TUTOR_FIELDS[:3])
    for key, layers in (("student_layers", students), ("teacher_layers", teachers)):
        if not (isinstance(layers, list) and layers and all(isinstance(name, str) for name in layers)):
            return f"{key}: expected a list of layer names"
    probs = arch.get("tutor_probabilities")
    if probs is not None and not (_rows_of_numbers(probs) and len(probs) == len(students)
                                  and all(len(r) == len(teachers) for r in probs)):
        return (f"tutor_probabilities: expected {len(students)} rows (student_layers) of {len(teachers)} numbers "
                "(teacher_layers)")
    if not (isinstance(tutors, list) and len(tutors) == len(students)
            and all(_whole(j) and 0 <= j < len(teachers) for j in tutors)):
        return f"tutors: expected {len(students)} teacher layer indices in 0..{len(teachers) - 1}"
    return None


SEARCH_ARCH_FIELDS = ("params", "macs", "widths", "width_choices")  # what rnas derive writes and a search page draws


def read_arch_file(path: Path, required: tuple[str, ...] = SEARCH_ARCH_FIELDS) -> dict:
    """An arch*.json of rnas derive, with the fields a report reads checked (a one-line UserError naming the
    field otherwise); ``required``: the fields it must have."""
    arch = read_json(path)
    if not isinstance(arch, dict):
        raise UserError(f"{path}: expected a JSON object (an arch.json of rnas derive), got {type(arch).__name__}")
    problem = _arch_problem(arch, required)
    if problem:
        raise UserError(f"{path}: {problem} (a damaged or edited arch.json: write it again with rnas derive)"[:300])
    return arch


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl records; a last line without its newline is being written and is skipped."""
    if not path.exists():
        return []
    text = read_text(path)
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(text.splitlines()) and not text.endswith("\n"):
                break
            raise UserError(f"{path}:{number}: unreadable JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise UserError(f"{path}:{number}: not a metrics record (a JSON object with an integer epoch)")
        if "width_probs" in record and not _rows_of_numbers(record["width_probs"]):
            raise UserError(f"{path}:{number}: width_probs is not a list of probability rows")
        records.append(record)
    return records


def read_config(run: Path) -> dict:
    """RUN/config.yaml as a mapping, or a one-line UserError naming it."""
    try:
        config = yaml.safe_load(read_text(run / "config.yaml"))
    except yaml.YAMLError as err:
        raise UserError(f"{run}/config.yaml: unreadable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise UserError(f"{run}/config.yaml: not a mapping of config fields")
    return config


def _run_kind_or_none(path: Path) -> str | None:
    """search or retrain, or None for another run (a teacher's)."""
    config = read_config(path)
    if "baseline" in config and "arch" in config:
        return "retrain"
    if "space" in config and "gamma_s" in config:
        return "search"
    return None


def run_kind(path: Path, runs_inside: bool = False) -> str:
    """study, search or retrain (or with ``runs_inside``, runs: a folder whose subfolders hold search or retrain
    runs); a one-line UserError for anything else."""
    if (path / "study.json").is_file():
        return "study"
    if runs_inside and not (path / "config.yaml").is_file() and any(
            (child / "config.yaml").is_file() and _run_kind_or_none(child) for child in path.iterdir()
            if child.is_dir()):
        return "runs"
    if (path / "config.yaml").is_file():
        if (kind := _run_kind_or_none(path)) is None:
            raise UserError(f"{path}: config.yaml is neither a search nor a retrain run's (teacher runs are not "
                            "reported)")
        return kind
    raise UserError(f"{path}: not a run directory (no config.yaml), a study directory (no study.json) nor a folder "
                    "of run directories")


def _read_run(path: Path, name: str, kind: str) -> Run:
    """A search or retrain run dir: config, metrics.jsonl and, for a search, its arch*.json (arch.json first)."""
    archs, records = {}, read_metrics(path / "metrics.jsonl")
    if kind == "search":
        archs = {p.name: read_arch_file(p) for p in sorted(path.glob("arch*.json"))}
        archs = dict(sorted(archs.items(), key=lambda item: item[0] != "arch.json"))
        if archs and not all("width_probs" in r for r in records):
            records = width_probs_from_tensorboard(path / "tb", records, next(iter(archs.values()))["width_choices"])
    return Run(name, path, read_config(path), records, archs)


def width_probs_from_tensorboard(tb: Path, records: list[dict], width_choices: list[list[int]]) -> list[dict]:
    """A search written before metrics.jsonl carried ``width_probs``: the same numbers from its TensorBoard
    scalars ``width/blockNN/W`` (NN: the searched block, W: the width; step: the epoch), in each searched
    block's choice order. Records are returned unchanged where the event files lack an epoch or a width."""
    if not tb.is_dir():
        return records
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb), size_guidance={"scalars": 0}).Reload()
    by_epoch: dict[int, dict[tuple[int, int], float]] = {}
    for tag in events.Tags()["scalars"]:
        if tag.startswith("width/block"):
            _, block, width = tag.split("/")
            for event in events.Scalars(tag):
                by_epoch.setdefault(event.step, {})[int(block.removeprefix("block")), int(width)] = event.value
    searched = [choices for choices in width_choices if len(choices) > 1]
    filled = []
    for record in records:
        probs = by_epoch.get(record.get("epoch"), {})
        if "width_probs" not in record and all((b, w) in probs for b, c in enumerate(searched) for w in c):
            record = {**record, "width_probs": [[round(probs[b, w], 4) for w in c] for b, c in enumerate(searched)]}
        filled.append(record)
    return filled


def _read_arch(path: Path | None) -> dict | None:
    """The arch.json at ``path`` when one is named and written, else None."""
    return read_arch_file(path, required=()) if path is not None and path.is_file() else None


def training_cost(run_dir: Path | None) -> dict | None:
    """What a run's training cost, from its metrics.jsonl: CE-epoch equivalents, MACs, MAC-epochs, student /
    teacher images (its last epoch's totals), wall-clock seconds (summed) and the device they were measured on;
    None for runs written before the meter."""
    records = read_metrics(run_dir / "metrics.jsonl") if run_dir is not None and (run_dir / "metrics.jsonl").is_file() \
        else []
    last = records[-1] if records else {}
    if "cost/ce_epochs" not in last:
        return None
    from rnas.engine.cost import mac_epochs

    try:  # cost.json knows the training images (MAC-epochs: training MACs per training image)
        summary = json.loads((run_dir / "cost.json").read_text())
    except (OSError, ValueError):
        summary = None
    images = summary.get("train_images") if isinstance(summary, dict) else None
    return {"ce_epochs": last["cost/ce_epochs"], "train_macs": last["cost/total_train_macs"],
            "mac_epochs": mac_epochs(last["cost/total_train_macs"], images) if isinstance(images, int) else None,
            **{k.removeprefix("cost/total_"): last[k] for k in last if k.startswith("cost/total_") and "images" in k},
            "seconds": round(sum(r.get("seconds", 0.0) for r in records), 1), "epochs": len(records),
            "device": read_config(run_dir).get("device") if (run_dir / "config.yaml").is_file() else None}


def _model_of_run(run: Run) -> Model:
    """A retrain run given directly: its arm from --baseline, every eval JSON in the run dir."""
    cfg = run.config
    arch = _read_arch(Path(cfg["arch"]) if cfg.get("arch") else None)
    evals = {}
    for path in sorted(run.dir.glob("*.json")):
        if (data := read_eval(path)) is not None:
            evals[path.name] = data
    at = adversarial_training(cfg)
    finetune = (f"{at}+mbn" if cfg.get("mbn") else at) if at != "none" else None
    arch_of = arch or {}
    baseline = BASELINES.get(cfg.get("baseline"))
    return Model(run.name, baseline.arm if baseline else cfg.get("baseline"), finetune,
                 arch_of.get("space"), arch_of.get("mac_target"), run.teacher,
                 run.dir, evals, [], arch, seed=cfg.get("seed"), setting=_setting(run))


RUN_OWN = ("seed", "out", "init", "device", "workers", "data_dir", "model_dir", "download", "checkpoint_every",
           "log_every")  # config fields that do not change what a run trains (besides its seed)


def _setting(run: Run) -> tuple[str, dict]:
    """A run's folder and its config without its seed and own paths: runs of one folder whose configs agree
    (on the fields both record: an older rnas wrote fewer) differ only in the seed."""
    return str(run.dir.parent.resolve()), {k: v for k, v in run.config.items() if k not in RUN_OWN}


def _field(entry, key: str, where: str, kind: type | None = None):
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object, got {type(entry).__name__} (see the rnas-study-1 contract)")
    if key not in entry:
        raise UserError(f"{where}: missing field {key!r} (see the rnas-study-1 contract)")
    if kind is not None and entry[key] is not None and not isinstance(entry[key], kind):
        raise UserError(f"{where}: field {key!r} is a {type(entry[key]).__name__}, expected a {kind.__name__}")
    return entry[key]


def _inside(study: Path, rel, where: str) -> Path:
    """``study``/``rel`` when ``rel`` is a relative path that stays inside the study directory; a path out of
    it (``../x``, ``/etc/passwd``, a symlink that leads out) is a one-line UserError, never read."""
    if not isinstance(rel, str) or not rel:
        raise UserError(f"{where}: a path inside the study directory expected, got {rel!r}")
    target = (study / rel).resolve()
    if Path(rel).is_absolute() or not target.is_relative_to(study.resolve()):
        raise UserError(f"{where}: {rel!r} points outside the study directory {study}; not read")
    return study / rel


def read_study(path: Path) -> tuple[dict, list[Model], list[Path], list[tuple[str, Path]]]:
    """(study.json, its models, its search dirs, its (model name, run dir) pairs) with every path resolved."""
    study = read_json(path / "study.json")
    where = f"{path}/study.json"
    if not isinstance(study, dict) or study.get("format") != STUDY_STATE:
        found = study.get("format") if isinstance(study, dict) else type(study).__name__
        raise UserError(f"{where}: format {found!r}, expected {STUDY_STATE!r}")
    models, searches, runs = [], [], []
    for i, step in enumerate(_field(study, "steps", where, list)):
        for key in ("name", "kind", "state"):
            _field(step, key, f"{where}:steps[{i}]", str)
        if step["kind"] == "search" and step.get("dir"):
            searches.append(_inside(path, step["dir"], f"{where}:steps[{i}].dir"))
    for i, entry in enumerate(_field(study, "models", where, list)):
        here = f"{where}:models[{i}]"
        evals, missing = {}, []
        for label, rel in (_field(entry, "evals", here, dict) or {}).items():
            file = _inside(path, rel, f"{here}.evals.{label}")
            if file.is_file():
                if (data := read_eval(file)) is None:
                    raise UserError(f"{file}: not an rnas eval JSON (no \"results\" list)")
                evals[label] = data
            else:
                missing.append(rel)
        arch = _read_arch(_inside(path, entry["arch"], f"{here}.arch") if entry.get("arch") else None)
        run = _inside(path, entry["run"], f"{here}.run") if entry.get("run") else None
        models.append(Model(_field(entry, "name", here, str), entry.get("arm"), entry.get("finetune"),
                            entry.get("space"), entry.get("budget"), entry.get("teacher"), run, evals, missing, arch,
                            seed=_field(entry, "seed", here, int) if "seed" in entry else None,
                            setting=(str(path.resolve()), {})))
        if entry.get("search"):
            searches.append(_inside(path, entry["search"], f"{here}.search"))
        if run is not None:
            runs.append((entry["name"], run))
    return study, models, searches, runs


def gather(paths: list[str | Path]) -> Inputs:
    """Everything the report shows, read from search / retrain / study directories (each read once)."""
    inputs, seen = Inputs(), set()

    def add_run(path: Path, name: str, kind: str, model: bool = False) -> None:
        # a study's run dir without config.yaml has not started yet: left out
        if path.resolve() in seen or not (path / "config.yaml").is_file():
            return
        seen.add(path.resolve())
        run = _read_run(path, name, kind)
        (inputs.searches if kind == "search" else inputs.retrains).append(run)
        if model:
            inputs.models.append(_model_of_run(run))

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise UserError(f"{path}: no such directory (give search / retrain run dirs or study dirs)")
        kind = run_kind(path, runs_inside=True)
        if kind == "runs":  # a folder of run directories (rnas quickstart's, say): each search and retrain run
            for child in sorted(p for p in path.iterdir() if p.is_dir()):
                if (child / "config.yaml").is_file() and (found := _run_kind_or_none(child)) is not None:
                    add_run(child, child.name, found, model=found == "retrain")
        elif kind == "study":
            study, models, searches, runs = read_study(path)
            inputs.studies.append((path, study))
            inputs.models += models
            for search in searches:
                add_run(search, search.relative_to(path).as_posix(), "search")
            for name, run in runs:
                add_run(run, name, "retrain")
        else:
            add_run(path, path.resolve().name, kind, model=kind == "retrain")
    for model in inputs.models:
        model.cost = training_cost(model.run)
    return inputs


# ---- writing ----------------------------------------------------------------------------------------
def require_matplotlib() -> None:
    """A one-line UserError with the install command when the optional matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("rnas report needs matplotlib: pip install -e '.[report]' (or pip install matplotlib)") \
            from None


def check_out_dir(out: Path) -> None:
    """``out`` may be new, empty, or a report's own directory (every file listed in its manifest)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: is a file, not a directory")
    if not out.exists():
        return
    own = set((out / MANIFEST).read_text().split()) | {MANIFEST} if (out / MANIFEST).is_file() else set()
    foreign = sorted(p.name for p in out.iterdir() if p.name not in own or p.is_dir())
    if foreign:
        raise UserError(f"-o {out}: holds files that are not this report's ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}); give a new or empty directory")


def write_report(paths: list[str | Path], out: str | Path) -> Path:
    """Read ``paths``, then write DIR/index.html, its PNGs, models.csv, models.json, searches.json; returns
    index.html. Nothing is written when an input is bad or ``out`` holds other files; a previous report in
    ``out`` is replaced."""
    require_matplotlib()
    from rnas.report.html import render_page  # imports matplotlib: only once it is known to be installed

    out = Path(out).resolve()
    inputs = gather(paths)
    check_out_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise UserError(f"-o {out}: cannot create it ({err.strerror})") from None
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide a shared report from its readers
    try:
        table = model_table(inputs.models)
        (staging / "models.json").write_text(json.dumps(table, indent=1) + "\n")
        write_models_csv(table, staging / "models.csv")
        write_paired_csv(table, staging / "paired.csv")
        summaries = [search_summary(r) for r in inputs.searches]
        (staging / "searches.json").write_text(json.dumps(summaries, indent=1) + "\n")
        (staging / "index.html").write_text(render_page(inputs, table, staging, [str(p) for p in paths]))
        (staging / MANIFEST).write_text("\n".join(sorted(p.name for p in staging.iterdir())) + "\n")
        if out.exists():  # holds only a previous report's files (check_out_dir)
            for old in out.iterdir():
                old.unlink()
            out.rmdir()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out / "index.html"
