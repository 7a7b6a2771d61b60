"""The numbers of `rnas report`: the arms' table at the main eps (models.json / models.csv), the Pareto
front, accuracy-vs-eps series and each search's summary (searches.json), as plain data from the inputs
that ``rnas/report/collect.py`` gathers."""
from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

from rnas.config.defaults import UNRECORDED_TUTOR_DERIVE
from rnas.report.runs import Model, Run, protocol
from rnas.report.stats import paired_arms

MAIN_EPS = 8 / 255  # the table's budget when the pixel evals have it (pixel units)
TABLE_ATTACKS = {"clean": "clean", "fgsm": "FGSM", "pgd20": "PGD-20", "mifgsm": "MI-FGSM", "cw": "CW",
                 "autoattack": "AutoAttack"}


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
                    here[row["attack"]] = {**row, "file": label, "split": data.get("split")}
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
                                             "file": row["file"], "split": row["split"],
                                             **({"steps": row["steps"]} if "steps" in row else {})}
        entries.append({"name": model.name, "arm": model.arm, "finetune": model.finetune, "space": model.space,
                        "budget": model.budget, "teacher": model.teacher, "seed": model.seed, "params": params,
                        "macs": macs, "accuracy": accuracy, "missing_evals": model.missing, "cost": model.cost})
    keys = [_column_key(c) for c in cols]
    groups = over_seeds(entries, keys, [m.setting for m in models])
    by_name = {m.name: {_column_key(c): r[c[0]][c[1]] for c in cols if c[1] in r.get(c[0], {})}
               for m, r in zip(models, rows, strict=True)}
    return {"main_eps": eps, "columns": [{"key": _column_key(c), "title": _column_title(c), "protocol": c[0],
                                          "attack": c[1]} for c in cols], "models": entries, "over_seeds": groups,
            "paired": paired_arms(groups, by_name, keys)}


def unseeded_name(name: str, seed: int | None) -> str:
    """s3/rnas-cl-s1-trades -> s3/rnas-cl-trades: a model's name without the ``-s<seed>`` a study gives the
    runs of an arm's other seeds (``seeds:``), so that the runs of one arm under several seeds share it."""
    if seed is None:
        return name
    head, _, tail = name.rpartition("/")
    tail = re.sub(rf"-s{seed}(?=$|-|@)", "", tail, count=1)
    return f"{head}/{tail}" if head else tail


def _agree(first: dict, second: dict) -> bool:
    """Whether two configs (run directories only; {} otherwise) agree on every field both have."""
    return all(first[k] == second[k] for k in first.keys() & second.keys())


def _agreeing(members: list[tuple[dict, dict]]) -> list[list[dict]]:
    """(entry, config) pairs split into sets of entries whose configs agree pairwise (each joins the first
    set it agrees with)."""
    sets: list[list[tuple[dict, dict]]] = []
    for m in members:
        home = next((s for s in sets if all(_agree(m[1], other[1]) for other in s)), None)
        if home is None:
            sets.append([m])
        else:
            home.append(m)
    return [[entry for entry, _ in same] for same in sets]


def over_seeds(entries: list[dict], keys: list[str], settings: list[tuple | None] | None = None) -> list[dict]:
    """The models that differ only in their seed (same name once ``-s<seed>`` is dropped, same arm,
    fine-tune, net, teacher and setting: one study, or run directories of one folder whose configs agree
    but for the seed; two or more seeds), each group's accuracy per column as the mean and the sample
    standard deviation over the seeds that have it. ``settings``: per entry, None or (folder, config) of a
    run directory."""
    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for m, setting in zip(entries, [None] * len(entries) if settings is None else settings, strict=True):
        folder, config = setting or (None, {})
        key = (unseeded_name(m["name"], m["seed"]), m["arm"], m["finetune"], m["space"], m["budget"], m["teacher"],
               folder)
        groups.setdefault(key, []).append((m, config))
    out = []
    for key, members in [(key, same) for key, group in groups.items() for same in _agreeing(group)]:
        seeds = [m["seed"] for m in members]
        if len(members) < 2 or None in seeds or len(set(seeds)) != len(seeds):
            continue
        accuracy = {}
        for column in keys:
            values = [m["accuracy"][column]["accuracy"] for m in members if column in m["accuracy"]]
            if values:
                sd = round(statistics.stdev(values), 2) if len(values) > 1 else None  # the sample sd (n - 1)
                accuracy[column] = {"mean": round(statistics.fmean(values), 2), "sd": sd, "seeds": len(values)}
        out.append({"name": key[0], "arm": key[1], "finetune": key[2], "space": key[3], "budget": key[4],
                    "seeds": sorted(seeds),
                    "models": [m["name"] for m in sorted(members, key=lambda m: m["seed"])], "accuracy": accuracy})
    return out


def write_models_csv(table: dict, path: Path) -> None:
    """models.csv: the table's numbers, one accuracy and one n column per attack column."""
    keys = [c["key"] for c in table["columns"]]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "arm", "finetune", "space", "budget", "teacher", "seed", "params", "macs",
                         *[f"{k}{suffix}" for k in keys for suffix in ("", "_n")]])
        for m in table["models"]:
            cells = [m["accuracy"].get(k, {}) for k in keys]
            writer.writerow([m["name"], m["arm"] or "", m["finetune"] or "", m["space"] or "", m["budget"] or "",
                             m["teacher"] or "", "" if m["seed"] is None else m["seed"],
                             m["params"] if m["params"] is not None else "",
                             m["macs"] if m["macs"] is not None else "",
                             *[c.get(part, "") for c in cells for part in ("accuracy", "n")]])


def write_paired_csv(table: dict, path: Path) -> None:
    """paired.csv: per pair of arms and column, the difference over seeds (points), its 95 % interval, the
    verdict and the pooled McNemar test, and the split the numbers are on."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["a", "b", "column", "split", "n", "seeds", "differences", "mean", "sd", "low", "high",
                         "verdict", "only_a", "only_b", "mcnemar_p"])
        for pair in table["paired"]:
            for key, c in pair["columns"].items():
                low, high = c["interval"] or ("", "")
                pooled = c["mcnemar"] or {}
                writer.writerow([pair["a"], pair["b"], key, c["split"], " ".join(map(str, c["n"])),
                                 " ".join(map(str, c["seeds"])), " ".join(map(str, c["differences"])), c["mean"],
                                 "" if c["sd"] is None else c["sd"], low, high, c["verdict"],
                                 pooled.get("only_a", ""), pooled.get("only_b", ""), pooled.get("p", "")])


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


def adversarial_training(cfg: dict) -> str:
    """The --at of a retrain run's config (runs written before --at say trades: true/false)."""
    return cfg.get("at") or ("trades" if cfg.get("trades") else "none")


def search_summary(run: Run) -> dict:
    """searches.json entry: final metrics, argmax widths, and per arch file its widths, params, MACs, tutors."""
    last = run.records[-1] if run.records else {}
    archs = {}
    for name, arch in run.archs.items():
        students = arch.get("student_layers", [])
        probs = arch.get("tutor_probabilities") or [None] * len(students)  # a scaled net carries tutors only
        tutors = [{"student": s, "teacher": arch["teacher_layers"][j], "probability": None if row is None else row[j]}
                  for s, j, row in zip(students, arch.get("tutors", []), probs, strict=False)]
        archs[name] = {"widths": arch.get("widths"), "width_choices": arch.get("width_choices"),
                       "params": arch.get("params"), "macs": arch.get("macs"), "mac_target": arch.get("mac_target"),
                       "tutors": tutors, "tutor_objective": arch.get("tutor_objective", "paper"),
                       "tutor_derive": arch.get("tutor_derive", UNRECORDED_TUTOR_DERIVE),
                       "tutor_diversity": arch.get("tutor_diversity")}
    return {"name": run.name, "dir": str(run.dir), "space": run.config.get("space"),
            "teacher": run.teacher,
            "epochs_done": len(run.records), "epochs": run.config.get("epochs"),
            "final": {k: v for k, v in last.items() if not isinstance(v, list)},
            "argmax_widths": last.get("argmax_widths"), "archs": archs}


