"""The tutor study of docs/experiments/cifar10-tutors.md: which tutor search and derivation teaches the student
best, resumable.

    python tools/tutor_study.py SHARED_DIR OUT_DIR [--defaults studies/results/cifar10-defaults] [--lanes 2]
    python tools/tutor_study.py --table OUT_DIR [--defaults ...]      # the docs' table, as far as it has got

The net is the one of "CIFAR-10: the study of the defaults" (its arch.json in --defaults): every arm keeps
its widths (equal MACs) and changes only the tutors. For each tutor objective an S3 search at the defaults
(10 epochs on the first 20,000 images) with ``--tutor-objective``, derived with ``--widths-from`` that net and
``--tutor-derive``. The paper objective's argmax row is the defaults study's own run; its other derivations
come from a search of their own (search-s3-paper: the derivations need the tutor logits, which the defaults
study's arch.json keeps only as rounded probabilities, most of them 0.0, so a balanced assignment from those
would break ties at random). An arm whose derived tutors equal its objective's argmax tutors is not trained
again: its row is that run's. Each arm is retrained as that study's arms were (15 epochs on 45,000 images,
gamma_t 1000) and evaluated on the first 1,000 validation images: clean, PGD-20 and AutoAttack (standard) at
8/255. Every step skips when its output is complete and resumes an interrupted run directory; runs go
``--lanes`` at a time, one thread each.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_study import evaluate, prepare, run, train  # noqa: E402

from rnas.config.defaults import UNRECORDED_TUTOR_DERIVE  # noqa: E402
from rnas.nets.derivation import arch_filename  # noqa: E402

OBJECTIVES = ("paper", "standardised", "robust", "robust-standardised")
# arm -> (tutor objective, derivation); the paper objective's argmax arm is the defaults study's run
ARMS = {"standardised": ("standardised", "argmax"), "robust": ("robust", "argmax"),
        "standardised-balanced": ("standardised", "balanced"), "standardised-monotone": ("standardised", "monotone"),
        "paper-balanced": ("paper", "balanced"), "paper-monotone": ("paper", "monotone"),
        "robust-monotone": ("robust", "monotone"), "robust-standardised": ("robust-standardised", "argmax")}
REFERENCE = {"paper": "cl-gamma1000", "fixed": "fixed"}


def search_seconds(run_dir: Path) -> float:
    return sum(json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())


def accuracies(run_dir: Path) -> dict:
    out = {}
    for name in ("eval.json", "eval-aa.json"):
        if (run_dir / name).exists():
            out.update({r["attack"]: r["accuracy"] for r in json.loads((run_dir / name).read_text())["results"]})
    return out


def arch_path(out: Path, objective: str, how: str) -> Path:
    search = out / f"search-s3-{objective}"
    return search / arch_filename(None, how, widths_from=True)


def tutors_of(path: Path) -> list[int] | None:
    return json.loads(path.read_text())["tutors"] if path.exists() else None


def argmax_arm(out: Path, defaults: Path, objective: str) -> tuple[list[int] | None, Path]:
    """The objective's argmax tutors and the run trained with them (the paper's: the defaults study's)."""
    if objective == "paper":
        return tutors_of(defaults / "search-s3" / "arch.json"), defaults / REFERENCE["paper"]
    return tutors_of(arch_path(out, objective, "argmax")), out / objective


def run_dir_of(out: Path, defaults: Path, arm: str) -> Path:
    """Where the arm's numbers are: its own run, or the argmax run when its tutors are the argmax's."""
    objective, how = ARMS[arm]
    tutors, argmax_run = argmax_arm(out, defaults, objective)
    if how == "argmax" or (tutors is not None and tutors_of(arch_path(out, objective, how)) == tutors):
        return argmax_run
    return out / arm


def print_table(out: Path, defaults: Path) -> None:
    """The docs' table from whatever runs and evaluations exist ('–' for what does not yet)."""
    def cell(value, fmt="{:.1f}"):
        return "–" if value is None else fmt.format(value)

    from rnas.method.distill import uniform_mapping
    from rnas.method.tutors import tutor_diversity

    base = json.loads((defaults / "search-s3" / "arch.json").read_text())
    fixed = uniform_mapping(len(base["student_layers"]), len(base["teacher_layers"]))
    rows = [("paper (Eq. 1), argmax", base["tutors"], defaults / REFERENCE["paper"], defaults / "search-s3"),
            ("fixed depth-proportional mapping", fixed, defaults / REFERENCE["fixed"], None)]
    for arm, (objective, how) in ARMS.items():
        if (objective, how) == ("paper", "argmax"):
            continue
        rows.append((f"{objective}, {how}", tutors_of(arch_path(out, objective, how)),
                     run_dir_of(out, defaults, arm), out / f"search-s3-{objective}"))
    print("| tutors | distinct taps | largest share | depth rank corr. | clean (%) | PGD-20 (%) | AutoAttack (%) "
          "| search (s) | run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, tutors, run_dir, search in rows:
        spread = ("–", "–", "–")
        if tutors is not None:
            div = tutor_diversity(tutors)
            spread = (f"{div['tutors_distinct']}", f"{round(div['tutors_largest_share'] * len(tutors))}/{len(tutors)}",
                      f"{div['tutors_depth_rank_corr']:.2f}")
        acc = accuracies(run_dir)
        seconds = search_seconds(search) if search is not None and (search / "metrics.jsonl").exists() else None
        print(f"| {label} | {' | '.join(spread)} | {cell(acc.get('clean'))} | {cell(acc.get('pgd20'))} | "
              f"{cell(acc.get('autoattack'))} | {cell(seconds, '{:.0f}')} | {run_dir.name} |")


def main() -> None:
    if "--table" in sys.argv:
        table = argparse.ArgumentParser()
        table.add_argument("--table", type=Path, required=True)
        table.add_argument("--defaults", type=Path, default=Path(__file__).resolve().parents[1]
                           / "studies/results/cifar10-defaults")
        targs = table.parse_args()
        return print_table(targs.table, targs.defaults)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--defaults", type=Path, default=Path(__file__).resolve().parents[1]
                        / "studies/results/cifar10-defaults")
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms, in the order to run them")
    args = parser.parse_args()
    out, log, data, robust = prepare(args.shared, args.out)
    base_arch = (args.defaults / "search-s3" / "arch.json").resolve()
    locks = {o: threading.Lock() for o in OBJECTIVES}

    def arch_file(objective: str, how: str) -> Path:
        search = out / f"search-s3-{objective}"
        with locks[objective]:  # one search per objective, whichever arm needs it first
            train(["search", "--space", "s3", *robust, "--data-dir", str(data), "--limit", "20000",
                   "--epochs", "10", "--tutor-objective", objective], search, 10, log)
            path = arch_path(out, objective, how)
            held = json.loads(path.read_text()).get("tutor_derive", UNRECORDED_TUTOR_DERIVE) if path.exists() else how
            if held != how:
                sys.exit(f"tutor_study: {path} holds {held} tutors, not {how} (an OUT written before balanced "
                         f"became rnas derive's default): rename it {arch_path(out, objective, held).name}")
            if not path.exists():
                run(["derive", str(search), "--widths-from", str(base_arch), "--tutor-derive", how], log)
        return path

    def arm(name: str) -> dict:
        objective, how = ARMS[name]
        arch = arch_file(objective, how)
        if objective != "paper" and how != "argmax":
            arch_file(objective, "argmax")  # to tell whether this derivation changed the tutors
        run_dir = run_dir_of(out, args.defaults, name)
        if run_dir == out / name:
            train(["retrain", str(arch), "--data-dir", str(data), "--epochs", str(args.epochs), "--gamma-t",
                   "1000"], run_dir, args.epochs, log)
        elif run_dir.parent == out:  # the objective's argmax run, trained by its own arm if listed
            return {"objective": objective, "derive": how, "same_tutors_as": run_dir.name}
        row = {**evaluate(run_dir, "clean,pgd20", "eval", log), **evaluate(run_dir, "autoattack", "eval-aa", log)}
        return {"objective": objective, "derive": how, "run": str(run_dir.relative_to(run_dir.parent.parent)),
                **json.loads(arch.read_text())["tutor_diversity"], **row}

    names = [n for n in args.arms.split(",") if n]
    with ThreadPoolExecutor(args.lanes) as pool:
        rows = dict(zip(names, pool.map(arm, names), strict=True))
    for name, run_name in REFERENCE.items():
        if not (scores := accuracies(args.defaults / run_name)):
            sys.exit(f"tutor_study: {args.defaults / run_name} has no eval.json or eval-aa.json (the defaults "
                     f"study's {name} run)")
        rows[f"{name} (defaults study)"] = scores
    rows["paper (defaults study)"]["objective"] = "paper"
    for objective in OBJECTIVES:
        search = out / f"search-s3-{objective}"
        if objective == "paper" and not search.exists():
            search = args.defaults / "search-s3"
        if (search / "metrics.jsonl").exists():
            for row in rows.values():
                if row.get("objective") == objective:
                    row["search_seconds"] = round(search_seconds(search), 1)
    (out / "table.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
