"""`rnas report RUN_OR_STUDY_DIR... -o DIR`: what a set of runs found, as one shareable page.

DIR/index.html holds the arms' table, the Pareto and eps-sweep plots, each search's and retrain's
curves and a study's steps, with every PNG embedded as a data: URI (the page alone can be sent) and
also written beside it; models.csv / models.json / searches.json hold the same numbers. Inputs are
search run dirs, retrain run dirs and study dirs (``study.json``, format ``rnas-study-1``) in any mix.
The figures (matplotlib, the optional extra ``.[report]``) live in ``rnas/report_figures.py``.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError

STUDY_FORMAT = "rnas-study-1"
MAIN_EPS = 8 / 255  # the table's budget when the pixel evals have it (pixel units)
TABLE_ATTACKS = {"clean": "clean", "fgsm": "FGSM", "pgd20": "PGD-20", "mifgsm": "MI-FGSM", "cw": "CW",
                 "autoattack": "AutoAttack"}
ARM_OF_BASELINE = {"cl": "rnas-cl", "ce": "ce", "kd": "kd", "fixed": "fixed"}  # a retrain run's --baseline
MANIFEST = ".rnas-report"  # names of the files a report wrote: only those may be replaced by the next one


@dataclass
class Model:
    """One trained net (an arm of a study, or a retrain run given directly): what it is and its eval files."""
    name: str
    arm: str | None = None
    finetune: str | None = None
    space: str | None = None
    budget: int | None = None
    teacher: str | None = None
    run: Path | None = None
    evals: dict[str, dict] = field(default_factory=dict)  # file label -> eval JSON
    missing: list[str] = field(default_factory=list)  # eval files listed by a study but not written yet
    arch: dict | None = None

    def params_macs(self) -> tuple[int | None, int | None]:
        """Params and MACs from its evals (pixel first), else from its arch.json."""
        for data in sorted(self.evals.values(), key=lambda d: protocol(d) != "pixel"):
            if data.get("params") is not None:
                return data["params"], data.get("macs")
        return (self.arch or {}).get("params"), (self.arch or {}).get("macs")


@dataclass
class Run:
    """A search or retrain run directory: its config and metrics.jsonl records."""
    name: str
    dir: Path
    config: dict
    records: list[dict]
    archs: dict[str, dict] = field(default_factory=dict)  # arch file name -> derived arch (search runs)


@dataclass
class Inputs:
    models: list[Model] = field(default_factory=list)
    searches: list[Run] = field(default_factory=list)
    retrains: list[Run] = field(default_factory=list)
    studies: list[tuple[Path, dict]] = field(default_factory=list)


# ---- reading ---------------------------------------------------------------------------------------
def read_json(path: Path) -> dict | list:
    """A JSON file, or a one-line UserError naming it."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: unreadable JSON ({err.msg} at line {err.lineno})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl records; a last line without its newline is being written and is skipped."""
    if not path.exists():
        return []
    text = path.read_text()
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(text.splitlines()) and not text.endswith("\n"):
                break
            raise UserError(f"{path}:{number}: unreadable JSON ({err.msg})") from None
    return records


def read_config(run: Path) -> dict:
    """RUN/config.yaml as a mapping, or a one-line UserError naming it."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{run}/config.yaml: unreadable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise UserError(f"{run}/config.yaml: not a mapping of config fields")
    return config


def is_eval(data) -> bool:
    """An `rnas eval --json` file: a mapping with a "results" list."""
    return isinstance(data, dict) and isinstance(data.get("results"), list)


def protocol(data: dict) -> str:
    """pixel (eps in [0, 1] pixel units, the default) or normalized (eps in the model's normalized space)."""
    return data.get("eps_space", "pixel")


def run_kind(path: Path) -> str:
    """study, search or retrain; a one-line UserError for anything else."""
    if (path / "study.json").is_file():
        return "study"
    if (path / "config.yaml").is_file():
        config = read_config(path)
        if "baseline" in config and "arch" in config:
            return "retrain"
        if "space" in config and "gamma_s" in config:
            return "search"
        raise UserError(f"{path}: config.yaml is neither a search nor a retrain run's (teacher runs are not reported)")
    raise UserError(f"{path}: not a run directory (no config.yaml) nor a study directory (no study.json)")


def _read_search(path: Path, name: str) -> Run:
    archs = {p.name: read_json(p) for p in sorted(path.glob("arch*.json"))}
    archs = dict(sorted(archs.items(), key=lambda item: item[0] != "arch.json"))  # arch.json first
    return Run(name, path, read_config(path), read_metrics(path / "metrics.jsonl"), archs)


def _read_retrain(path: Path, name: str) -> Run:
    return Run(name, path, read_config(path), read_metrics(path / "metrics.jsonl"))


def _model_of_run(run: Run) -> Model:
    """A retrain run given directly: its arm from --baseline, every eval JSON in the run dir."""
    cfg = run.config
    arch_path = Path(cfg["arch"]) if cfg.get("arch") else None
    arch = read_json(arch_path) if arch_path and arch_path.is_file() else None
    evals = {}
    for path in sorted(run.dir.glob("*.json")):
        data = read_json(path)
        if is_eval(data):
            evals[path.name] = data
    finetune = ("trades+mbn" if cfg.get("mbn") else "trades") if cfg.get("trades") else None
    arch_of = arch or {}
    return Model(run.name, ARM_OF_BASELINE.get(cfg.get("baseline"), cfg.get("baseline")), finetune,
                 arch_of.get("space"), arch_of.get("mac_target"), cfg.get("teacher_ckpt") or cfg.get("teacher"),
                 run.dir, evals, [], arch)


def _field(entry: dict, key: str, where: str):
    if key not in entry:
        raise UserError(f"{where}: missing field {key!r} (see the rnas-study-1 contract)")
    return entry[key]


def read_study(path: Path) -> tuple[dict, list[Model], list[Path], list[tuple[str, Path]]]:
    """(study.json, its models, its search dirs, its (model name, run dir) pairs) with every path resolved."""
    study = read_json(path / "study.json")
    where = f"{path}/study.json"
    if not isinstance(study, dict) or study.get("format") != STUDY_FORMAT:
        found = study.get("format") if isinstance(study, dict) else type(study).__name__
        raise UserError(f"{where}: format {found!r}, expected {STUDY_FORMAT!r}")
    models, searches, runs = [], [], []
    for i, step in enumerate(_field(study, "steps", where)):
        for key in ("name", "kind", "state"):
            _field(step, key, f"{where}:steps[{i}]")
        if step["kind"] == "search" and step.get("dir"):
            searches.append(path / step["dir"])
    for i, entry in enumerate(_field(study, "models", where)):
        here = f"{where}:models[{i}]"
        evals, missing = {}, []
        for label, rel in (_field(entry, "evals", here) or {}).items():
            if (path / rel).is_file():
                data = read_json(path / rel)
                if not is_eval(data):
                    raise UserError(f"{path / rel}: not an rnas eval JSON (no \"results\" list)")
                evals[label] = data
            else:
                missing.append(rel)
        arch_path = path / entry["arch"] if entry.get("arch") else None
        arch = read_json(arch_path) if arch_path and arch_path.is_file() else None
        run = path / entry["run"] if entry.get("run") else None
        models.append(Model(_field(entry, "name", here), entry.get("arm"), entry.get("finetune"), entry.get("space"),
                            entry.get("budget"), entry.get("teacher"), run, evals, missing, arch))
        if entry.get("search"):
            searches.append(path / entry["search"])
        if run is not None:
            runs.append((entry["name"], run))
    return study, models, searches, runs


def gather(paths: list[str | Path]) -> Inputs:
    """Everything the report shows, read from search / retrain / study directories (each read once)."""
    inputs, seen = Inputs(), set()

    def add_search(path: Path, name: str) -> None:
        if path.resolve() not in seen and (path / "config.yaml").is_file():
            seen.add(path.resolve())
            inputs.searches.append(_read_search(path, name))

    def add_retrain(path: Path, name: str, model: bool) -> None:
        if path.resolve() not in seen and (path / "config.yaml").is_file():
            seen.add(path.resolve())
            run = _read_retrain(path, name)
            inputs.retrains.append(run)
            if model:
                inputs.models.append(_model_of_run(run))

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise UserError(f"{path}: no such directory (give search / retrain run dirs or study dirs)")
        kind = run_kind(path)
        if kind == "study":
            study, models, searches, runs = read_study(path)
            inputs.studies.append((path, study))
            inputs.models += models
            for search in searches:
                add_search(search, search.relative_to(path).as_posix())
            for name, run in runs:
                add_retrain(run, name, model=False)
        elif kind == "search":
            add_search(path, path.resolve().name)
        else:
            add_retrain(path, path.resolve().name, model=True)
    return inputs


# ---- the numbers ------------------------------------------------------------------------------------
def _same_eps(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def main_eps(models: list[Model]) -> float:
    """8/255 when a pixel eval has it, else the budget most pixel-eval rows of attacks use."""
    budgets = [r["eps"] for m in models for d in m.evals.values() if protocol(d) == "pixel"
               for r in d["results"] if r["attack"] != "clean" and r.get("eps")]
    if not budgets or any(_same_eps(e, MAIN_EPS) for e in budgets):
        return MAIN_EPS
    return max(set(budgets), key=budgets.count)


def table_rows(model: Model, eps: float) -> dict[str, dict[str, dict]]:
    """{protocol: {attack: row}} at ``eps`` (clean at 0); of two files with the same row the larger n wins."""
    found: dict[str, dict[str, dict]] = {}
    for label, data in model.evals.items():
        for row in data["results"]:
            if row["attack"] == "clean" or _same_eps(row["eps"], eps):
                here = found.setdefault(protocol(data), {})
                if row["attack"] not in here or row["n"] > here[row["attack"]]["n"]:
                    here[row["attack"]] = {**row, "file": label}
    return found


def attack_label(attack: str) -> str:
    """Display name of an attack: pgd20 -> PGD-20, autoattack -> AutoAttack."""
    match = re.fullmatch(r"pgd(\d+)", attack)
    return TABLE_ATTACKS.get(attack) or (f"PGD-{match[1]}" if match else attack)


def columns(rows: list[dict[str, dict[str, dict]]]) -> list[tuple[str, str]]:
    """(protocol, attack) columns: the six standard pixel attacks always, other attacks and the normalized
    protocol's attacks where some model has them."""
    present = {(p, a) for r in rows for p, attacks in r.items() for a in attacks}
    order = list(TABLE_ATTACKS) + sorted({a for _, a in present} - set(TABLE_ATTACKS))
    pixel = [("pixel", a) for a in order if a in TABLE_ATTACKS or ("pixel", a) in present]
    return pixel + [(p, a) for p in sorted({p for p, _ in present} - {"pixel"}) for a in order if (p, a) in present]


def _column_key(col: tuple[str, str]) -> str:
    """models.csv column of an accuracy: pgd20, pgd20_norm, ..."""
    proto, attack = col
    return attack if proto == "pixel" else f"{attack}_{proto[:4]}"


def _column_title(col: tuple[str, str]) -> str:
    proto, attack = col
    return attack_label(attack) + ("" if proto == "pixel" else f" ({proto[:4]}.)")


def model_table(models: list[Model]) -> dict:
    """The arms' table as data: main eps, columns and one dict per model (what models.json holds)."""
    eps = main_eps(models)
    rows = [table_rows(m, eps) for m in models]
    cols = columns(rows)
    entries = []
    for model, found in zip(models, rows, strict=True):
        params, macs = model.params_macs()
        accuracy = {}
        for col in cols:
            row = found.get(col[0], {}).get(col[1])
            if row is not None:
                accuracy[_column_key(col)] = {"accuracy": row["accuracy"], "n": row["n"], "eps": row["eps"],
                                             "file": row["file"], **({"steps": row["steps"]} if "steps" in row else {})}
        entries.append({"name": model.name, "arm": model.arm, "finetune": model.finetune, "space": model.space,
                        "budget": model.budget, "teacher": model.teacher, "params": params, "macs": macs,
                        "accuracy": accuracy, "missing_evals": model.missing})
    return {"main_eps": eps, "columns": [{"key": _column_key(c), "title": _column_title(c), "protocol": c[0],
                                          "attack": c[1]} for c in cols], "models": entries}


def write_models_csv(table: dict, path: Path) -> None:
    """models.csv: the table's numbers, one accuracy and one n column per attack column."""
    keys = [c["key"] for c in table["columns"]]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "arm", "finetune", "space", "budget", "teacher", "params", "macs",
                         *[f"{k}{suffix}" for k in keys for suffix in ("", "_n")]])
        for m in table["models"]:
            cells = [m["accuracy"].get(k, {}) for k in keys]
            writer.writerow([m["name"], m["arm"] or "", m["finetune"] or "", m["space"] or "", m["budget"] or "",
                             m["teacher"] or "", m["params"] if m["params"] is not None else "",
                             m["macs"] if m["macs"] is not None else "",
                             *[c.get(part, "") for c in cells for part in ("accuracy", "n")]])


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (MACs, accuracy) points no other point beats: none has fewer or equal MACs and higher or
    equal accuracy with one of them strict (equal points are all on the front)."""
    return [i for i, (m, a) in enumerate(points)
            if not any(m2 <= m and a2 >= a and (m2, a2) != (m, a) for m2, a2 in points)]


def sweeps(models: list[Model]) -> list[dict]:
    """Accuracy-vs-eps series: each (model, eval file, attack) with several budgets; eps 0 is the same file's
    clean row when it has one."""
    series = []
    for model in models:
        for label, data in model.evals.items():
            clean = next((r for r in data["results"] if r["attack"] == "clean"), None)
            by_attack: dict[str, list[dict]] = {}
            for row in data["results"]:
                if row["attack"] != "clean":
                    by_attack.setdefault(row["attack"], []).append(row)
            for attack, rows in by_attack.items():
                if len({round(r["eps"], 9) for r in rows}) < 2:
                    continue
                points = sorted((r["eps"], r["accuracy"]) for r in rows)
                if clean is not None:
                    points.insert(0, (0.0, clean["accuracy"]))
                series.append({"model": model.name, "file": label, "protocol": protocol(data), "attack": attack,
                               "points": points})
    return series


def search_summary(run: Run) -> dict:
    """searches.json entry: final metrics, argmax widths, and per arch file its widths, params, MACs, tutors."""
    last = run.records[-1] if run.records else {}
    archs = {}
    for name, arch in run.archs.items():
        tutors = [{"student": s, "teacher": arch["teacher_layers"][j], "probability": row[j]}
                  for s, j, row in zip(arch.get("student_layers", []), arch.get("tutors", []),
                                       arch.get("tutor_probabilities", []), strict=False)]
        archs[name] = {"widths": arch.get("widths"), "width_choices": arch.get("width_choices"),
                       "params": arch.get("params"), "macs": arch.get("macs"), "mac_target": arch.get("mac_target"),
                       "tutors": tutors}
    return {"name": run.name, "dir": str(run.dir), "space": run.config.get("space"),
            "teacher": run.config.get("teacher_ckpt") or run.config.get("teacher"),
            "epochs_done": len(run.records), "epochs": run.config.get("epochs"),
            "final": {k: v for k, v in last.items() if not isinstance(v, list)},
            "argmax_widths": last.get("argmax_widths"), "archs": archs}


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


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def escape(value) -> str:
    """HTML text of a value (None -> empty)."""
    return html.escape("" if value is None else str(value))


def slug(name: str) -> str:
    """A run or model name as part of a file name: s3/rnas-cl -> s3-rnas-cl."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _eps_text(eps: float) -> str:
    scaled = eps * 255
    return f"{round(scaled)}/255" if abs(scaled - round(scaled)) < 1e-6 else f"{eps:g}"


def _number(value, digits: int | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if digits is None else f"{value:.{digits}f}"


def _html_table(headers: list[str], rows: list[list[str]], attrs: str = "") -> str:
    """A table from already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path | None, caption: str) -> str:
    """The PNG embedded as a data: URI, linked to its file in DIR."""
    if path is None:
        return ""
    return (f'<figure><a href="{escape(path.name)}"><img src="{_png_data_uri(path)}" alt="{escape(caption)}"></a>'
            f"<figcaption>{escape(caption)} <code>{escape(path.name)}</code></figcaption></figure>")


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _models_section(table: dict) -> str:
    """Section 1: one row per model at the main eps; n in the header when a column has one n, else per cell."""
    if not table["models"]:
        return _note("No models: give retrain run dirs or a study dir.")
    cols = table["columns"]
    ns = {c["key"]: {m["accuracy"][c["key"]]["n"] for m in table["models"] if c["key"] in m["accuracy"]}
          for c in cols}
    headers = ["model", "arm", "fine-tune", "params", "MACs"] + [
        escape(c["title"]) + (f" <br><small>n={next(iter(ns[c['key']]))}</small>" if len(ns[c["key"]]) == 1 else "")
        for c in cols]
    rows = []
    for m in table["models"]:
        cells = [escape(m["name"]), escape(m["arm"]), escape(m["finetune"] or "–"), _number(m["params"]),
                 _number(m["macs"])]
        for c in cols:
            got = m["accuracy"].get(c["key"])
            cells.append("–" if got is None else f"{got['accuracy']:.2f}"
                         + (f" <small>n={got['n']}</small>" if len(ns[c["key"]]) > 1 else ""))
        rows.append(cells)
    missing = [f for m in table["models"] for f in m["missing_evals"]]
    text = (f"<p>Accuracy (%) at eps = {_eps_text(table['main_eps'])} (l∞; clean at 0). "
            "Columns marked (norm.) come from evals whose eps is in the model's normalized input space. "
            "Params and MACs from the eval JSON (arch.json before any eval). Same numbers: "
            '<a href="models.csv">models.csv</a>, <a href="models.json">models.json</a>.</p>')
    return text + _html_table(headers, rows, 'id="models"') + (
        _note(f"Eval files listed but not written yet: {', '.join(missing)}") if missing else "")


def _robust_attack(table: dict) -> str | None:
    """AutoAttack when at least as many models have it as PGD-20, else PGD-20 (pixel protocol)."""
    count = {a: sum(a in m["accuracy"] for m in table["models"]) for a in ("autoattack", "pgd20")}
    if not any(count.values()):
        return None
    return "autoattack" if count["autoattack"] >= count["pgd20"] else "pgd20"


def _pareto_section(table: dict, out: Path) -> str:
    from . import report_figures as figures

    robust = _robust_attack(table)
    points = [{"name": m["name"], "arm": m["arm"], "macs": m["macs"],
               "clean": m["accuracy"].get("clean", {}).get("accuracy"),
               "robust": m["accuracy"].get(robust, {}).get("accuracy") if robust else None} for m in table["models"]]
    path = figures.pareto(points, robust and TABLE_ATTACKS[robust], out / "pareto.png")
    if path is None:
        return _note("No model has both MACs and an accuracy yet.")
    return _figure(path, f"MACs vs clean and {robust and TABLE_ATTACKS[robust]} accuracy at "
                         f"eps {_eps_text(table['main_eps'])}; stars: the Pareto front (fewer MACs, higher accuracy).")


def _sweep_section(series: list[dict], out: Path) -> str:
    from . import report_figures as figures

    path = figures.eps_sweep(series, out / "eps_sweep.png")
    if path is None:
        return _note("No eval has one attack at several eps (rnas eval --eps-sweep ...).")
    return _figure(path, "Robust accuracy vs eps (eps 0: the same eval's clean accuracy when it has one).")


def _search_section(run: Run, out: Path) -> str:
    """Section 4 for one search: loss terms, temperatures and MACs, width probabilities, tutors, derived net."""
    from . import report_figures as figures

    base = "search-" + slug(run.name).removeprefix("search-")
    last = run.records[-1] if run.records else {}
    parts = [f"<h3>{escape(run.name)}</h3><p><code>{escape(run.dir)}</code>: space {escape(run.config.get('space'))}, "
             f"teacher {escape(run.config.get('teacher_ckpt') or run.config.get('teacher'))}, "
             f"{len(run.records)}/{escape(run.config.get('epochs'))} epochs"
             + (f", last val acc {last['val_acc']:.2f} %" if last.get("val_acc") is not None else "") + "</p>"]
    if not run.records:
        return parts[0] + _note("No metrics.jsonl records yet.")
    parts.append(_figure(figures.curves(run.records, figures.SEARCH_LOSS_PANELS, f"{run.name}: loss terms per epoch",
                                        out / f"{base}-losses.png"), "Loss terms of the weight and arch steps."))
    parts.append(_figure(figures.curves(run.records, figures.SEARCH_SCHEDULE_PANELS,
                                        f"{run.name}: temperatures, MACs, accuracy", out / f"{base}-schedule.png"),
                         "Gumbel temperatures, expected and argmax MACs, val accuracy of the argmax net."))
    arch = run.archs.get("arch.json") or next(iter(run.archs.values()), None)
    choices = [c for c in arch["width_choices"] if len(c) > 1] if arch else None
    widths = figures.width_probs(run.records, choices, f"{run.name}: width probabilities per block",
                                 out / f"{base}-widths.png")
    parts.append(_figure(widths, "Probability of each width choice per epoch (width_probs of metrics.jsonl).")
                 if widths else _note("Width probabilities: not in this run's metrics.jsonl (an older run); "
                                      "see its TensorBoard scalars width/blockNN/W."))
    if arch is None:
        return "".join(parts) + _note(f"No arch.json: run rnas derive {run.dir} for tutors and the derived net.")
    parts.append(_figure(figures.tutor_heatmap(arch, f"{run.name}: tutor probabilities", out / f"{base}-tutors.png"),
                         "Tutor probability g_ij of each student tap (rows) over the teacher layers (columns)."))
    parts.append(_figure(figures.derived_widths(run.archs, f"{run.name}: derived widths", out / f"{base}-arch.png"),
                         "Derived architecture(s): width per block against the block's choices."))
    parts.append(_graph_figure(arch, out / f"{base}-graph.png"))
    return "".join(parts)


def _graph_figure(arch: dict, path: Path) -> str:
    """The student -> tutor graph of rnas/graph.py (``draw_arch_graph``), when that module is installed."""
    try:
        from .graph import draw_arch_graph
    except ImportError:
        return ""
    return _figure(draw_arch_graph(arch, path), "Student -> tutor graph of the derived net.")


def _retrain_section(run: Run, out: Path) -> str:
    from . import report_figures as figures

    last = run.records[-1] if run.records else {}
    head = (f"<h3>{escape(run.name)}</h3><p><code>{escape(run.dir)}</code>: baseline "
            f"{escape(run.config.get('baseline'))}{', TRADES' if run.config.get('trades') else ''}"
            f"{' + MBN' if run.config.get('mbn') else ''}, {len(run.records)}/{escape(run.config.get('epochs'))} "
            "epochs" + (f", last val acc {last['val_acc']:.2f} %" if last.get("val_acc") is not None else "") + "</p>")
    path = figures.curves(run.records, figures.RETRAIN_PANELS, f"{run.name}: training curves",
                          out / f"retrain-{slug(run.name)}-curves.png")
    return head + (_figure(path, "Loss terms, val accuracy, attention share of the weight gradient, lr per epoch.")
                   if path else _note("No metrics.jsonl records yet."))


def _steps_section(path: Path, study: dict) -> str:
    steps = study.get("steps", [])
    states = {}
    for step in steps:
        states[step["state"]] = states.get(step["state"], 0) + 1
    rows = [[escape(s["name"]), escape(s["kind"]), f'<span class="state-{escape(s["state"])}">{escape(s["state"])}'
             "</span>", _number(s.get("seconds"), 1), escape(s.get("error") or "")] for s in steps]
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return (f"<h3>{escape(study.get('name', path.name))}</h3><p><code>{escape(path)}</code>: {len(steps)} steps "
            f"({escape(summary)})</p>" + _html_table(["step", "kind", "state", "seconds", "error"], rows,
                                                       'class="steps"'))


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1250px;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2}td{text-align:right}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
.steps td{text-align:left}small{color:#666}.note{color:#777;font-style:italic}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.state-failed{color:#b00;font-weight:bold}.state-blocked{color:#b60}.state-done{color:#080}
h2{border-bottom:2px solid #ddd;margin-top:1.6em}code{font-size:.9em}"""


def render_page(inputs: Inputs, table: dict, out: Path, sources: list) -> str:
    """index.html: the six sections in order, each figure drawn into ``out`` and embedded."""
    sections = [("1. Models", _models_section(table)), ("2. MACs vs accuracy", _pareto_section(table, out)),
                ("3. Robust accuracy vs eps", _sweep_section(sweeps(inputs.models), out)),
                ("4. Search runs", "".join(_search_section(r, out) for r in inputs.searches)
                 or _note("No search run among the inputs.")),
                ("5. Retrain runs", "".join(_retrain_section(r, out) for r in inputs.retrains)
                 or _note("No retrain run with metrics among the inputs.")),
                ("6. Study steps", "".join(_steps_section(p, s) for p, s in inputs.studies)
                 or _note("No study among the inputs."))]
    title = ", ".join(s.get("name", str(p)) for p, s in inputs.studies) or ", ".join(Path(s).name for s in sources)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>rnas report: {escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>rnas report: {escape(title)}</h1>"
            f"<p>rnas {escape(_version())}; inputs: " + ", ".join(f"<code>{escape(s)}</code>" for s in sources)
            + '. Per search: <a href="searches.json">searches.json</a>.</p>'
            + "".join(f"<h2>{name}</h2>{body}" for name, body in sections) + "</body></html>\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnas")
    except PackageNotFoundError:
        return "(not installed)"


def write_report(paths: list[str | Path], out: str | Path) -> Path:
    """Read ``paths``, then write DIR/index.html, its PNGs, models.csv, models.json, searches.json; returns
    index.html. Nothing is written when an input is bad or ``out`` holds other files; a previous report in
    ``out`` is replaced."""
    require_matplotlib()
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
