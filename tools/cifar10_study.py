"""The CIFAR-10 study of docs/experiments/cifar10-defaults.md, resumable: S3 search at the defaults -> derive ->
gamma_t sweep -> the comparison arms -> evaluation. Every step skips when its output is complete and resumes an
interrupted run directory (`--resume`), so the script can be killed and started again at any point.

    python tools/cifar10_study.py SHARED_DIR OUT_DIR [--lanes 2] [--epochs 15]

SHARED_DIR holds data/cifar10-train/make_batches.py and teachers/cifar10/Linf/wrn-16-2-{nfgsm,standard}.pt.
Runs go two at a time (one thread each: these small nets are bound by per-op overhead, so two
single-threaded processes finish about twice as fast as one with two threads).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SWEEP = (10.0, 100.0, 1000.0, 10000.0)
EVAL_N = 1000


def run(args: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "a") as fh:
        fh.write(f"$ rnas {' '.join(args)}\n")
        fh.flush()
        with subprocess.Popen([sys.executable, "-m", "rnas", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env=env) as child:
            try:
                code = child.wait()
            except BaseException:  # the study is stopped: stop the run too (it checkpoints on SIGTERM)
                child.terminate()
                child.wait()
                raise
        if code:
            raise SystemExit(f"rnas {args[0]} failed (exit {code}); see {log}")


def epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for_other_process(run_dir: Path) -> None:
    """Block while another process holds the run's lock (e.g. a run left going by an earlier driver)."""
    import fcntl

    if (run_dir / ".lock").exists():
        with open(run_dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # granted when that process exits; closing releases it again


def train(command: list[str], run_dir: Path, epochs: int, log: Path) -> None:
    """Start, resume or skip one search/retrain run (checkpointed every 50 steps); a run another process is
    still training is waited for first."""
    wait_for_other_process(run_dir)
    if epochs_done(run_dir) >= epochs:
        return
    if (run_dir / "checkpoint.pt").exists():
        run([command[0], "--resume", str(run_dir)], log)
        return
    if run_dir.exists():  # killed before its first checkpoint: nothing to resume, start it again
        shutil.rmtree(run_dir)
    run([*command, "--checkpoint-every", "50", "--out", str(run_dir)], log)


def evaluate(run_dir: Path, attacks: str, name: str, log: Path) -> dict:
    out = run_dir / f"{name}.json"
    if not out.exists():
        run(["eval", str(run_dir / "checkpoint.pt"), "--attacks", attacks, "--n", str(EVAL_N), "--json", str(out)],
            log)
    return {r["attack"]: r["accuracy"] for r in json.loads(out.read_text())["results"]}


def knee(sweep: dict, rate: float = 0.5) -> float:
    """The default gamma_t: walk up the sweep from its smallest value and take each step while it buys at
    least ``rate`` PGD-20 points per clean point it costs (a step that costs nothing and gains is taken);
    stop at the first step that does not: robust accuracy is worth more than clean accuracy, not any price."""
    gammas = sorted(sweep)
    chosen = gammas[0]
    for g in gammas[1:]:
        gain = sweep[g]["pgd20"] - sweep[chosen]["pgd20"]
        cost = sweep[chosen]["clean"] - sweep[g]["clean"]
        if gain <= 0 or (cost > 0 and gain / cost < rate):
            break
        chosen = g
    return chosen


def prepare(shared: Path, out: Path) -> tuple[Path, Path, Path, list[str]]:
    """(out, its study.log, its data dir with the CIFAR-10 batches written there once, the robust teacher's flags)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if not (data / "cifar-10-batches-py" / "data_batch_5").exists():
        subprocess.run([sys.executable, str(shared / "data/cifar10-train/make_batches.py"), str(data)], check=True)
    models = str((shared / "teachers").resolve())
    return out, out / "study.log", data, ["--teacher", "wrn-16-2", "--teacher-ckpt", "wrn-16-2-nfgsm", "--model-dir",
                                          models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15, help="retrain epochs on 45,000 images")
    parser.add_argument("--search-epochs", type=int, default=10)
    parser.add_argument("--search-images", type=int, default=20000)
    parser.add_argument("--gamma-t", type=float, default=None,
                        help="train the arms at this gamma_t at once, alongside the sweep (the rule's choice is "
                             "still computed and reported)")
    args = parser.parse_args()
    out, log, data, robust = prepare(args.shared, args.out)

    # 1. search S3 at the defaults this study was run with (Eq. (1), the paper's argmax tutors), derive
    search = out / "search-s3"
    train(["search", "--space", "s3", *robust, "--data-dir", str(data), "--limit", str(args.search_images),
           "--epochs", str(args.search_epochs), "--tutor-objective", "paper"], search, args.search_epochs, log)
    arch = search / "arch.json"
    if not arch.exists():
        run(["derive", str(search), "--tutor-derive", "argmax"], log)

    def retrain(name: str, *flags: str) -> dict:
        run_dir = out / name
        train(["retrain", str(arch), "--data-dir", str(data), "--epochs", str(args.epochs), *flags], run_dir,
              args.epochs, log)
        return evaluate(run_dir, "clean,pgd20", "eval", log)

    # 2. gamma_t sweep and the arms that do not depend on it, 3. the arms at the chosen gamma_t: one queue
    # most likely winners and the baselines first: a study stopped early has the most useful runs done
    order = ("cl-gamma1000", "cl-gamma10000", "ce", "kd", "cl-gamma100", "cl-gamma10")
    jobs = {f"cl-gamma{g:g}": ("--gamma-t", str(g)) for g in SWEEP}
    jobs.update({"ce": ("--baseline", "ce"), "kd": ("--baseline", "kd")})
    jobs = {name: jobs[name] for name in order}
    control = ["--teacher-ckpt", "wrn-16-2-standard"]

    def arms(gamma: float) -> dict:
        return {"fixed": ("--baseline", "fixed", "--gamma-t", str(gamma)),
                "cl-control": ("--gamma-t", str(gamma), *control)}
    if args.gamma_t is not None:  # the arms need not wait for the last sweep value
        jobs.update(arms(args.gamma_t))
    with ThreadPoolExecutor(args.lanes) as pool:
        results = dict(zip(jobs, pool.map(lambda item: retrain(item[0], *item[1]), jobs.items()), strict=True))
    sweep = {g: results[f"cl-gamma{g:g}"] for g in SWEEP}
    # chosen on the same validation images the table reports (there is no other held-out split here)
    rule = knee(sweep)
    chosen = rule if args.gamma_t is None else args.gamma_t
    if chosen != rule:
        print(f"warning: the arms were trained at gamma_t {chosen:g}; the rule chooses {rule:g}", file=sys.stderr)
    (out / "sweep.json").write_text(json.dumps({"sweep": {f"{g:g}": r for g, r in sweep.items()},
                                                "rule_gamma_t": rule, "chosen_gamma_t": chosen}, indent=1) + "\n")
    if args.gamma_t is None:
        with ThreadPoolExecutor(args.lanes) as pool:
            list(pool.map(lambda item: retrain(item[0], *item[1]), arms(chosen).items()))

    # 4. AutoAttack on the final arms
    final = {"RNAS-CL (searched tutors)": f"cl-gamma{chosen:g}", "CE only": "ce", "logit KD only": "kd",
             "fixed uniform mapping": "fixed", "RNAS-CL, non-robust control teacher": "cl-control"}
    with ThreadPoolExecutor(args.lanes) as pool:
        robust_acc = list(pool.map(lambda name: evaluate(out / name, "autoattack", "eval-aa", log), final.values()))
    table = {label: {**evaluate(out / name, "clean,pgd20", "eval", log), **aa}
             for (label, name), aa in zip(final.items(), robust_acc, strict=True)}
    (out / "table.json").write_text(json.dumps({"arch": json.loads(arch.read_text())["widths"],
                                                "macs": json.loads(arch.read_text())["macs"],
                                                "chosen_gamma_t": chosen, "rows": table}, indent=1) + "\n")
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
