"""`rnas quickstart`: the whole pipeline on the embedded digits data (nothing to download), sized to
finish in well under 10 minutes on two CPU cores: robust teacher -> search -> derive -> retrain with
cross-layer distillation and the three baselines -> clean / PGD-20 / AutoAttack comparison."""
from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rnas.engine.retrain import RetrainConfig, run_retrain
from rnas.engine.search import SearchConfig, run_search
from rnas.engine.teacher_train import TeacherTrainConfig, run_teacher_training
from rnas.errors import UserError
from rnas.evaluation.evaluate import eval_batches, evaluate, load_model
from rnas.method.baselines import BASELINES
from rnas.nets.derivation import format_arch, write_arch
from rnas.runtime.rundir import atomic_write_json

AUTOATTACK_N = 10  # AutoAttack standard is thorough and slow on a CPU: a subset, as the table says


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="rnas-quickstart", help="directory for the run dirs (must not exist)")


def run(args) -> int:
    run_quickstart(args.out)
    return 0


def _stage(title: str, start: float) -> None:
    print(f"\n== {title}  (t = {time.perf_counter() - start:.0f} s)", flush=True)


def run_quickstart(out: str | Path, seed: int = 0) -> dict:
    """Teacher, search, derive, four retrains and their evaluation under ``out`` (absolute paths in every config)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: already exists and is not empty; remove it or pass another --out")
    out = out.resolve()  # every path below goes into a config or arch.json: absolute, usable from anywhere
    start = time.perf_counter()
    common = {"data": "digits", "batch_size": 64, "seed": seed, "log_every": 0}

    _stage("1/5 adversarially train a small robust teacher (WRN-16-1, N-FGSM, eps 8/255)", start)
    teacher_ckpt = run_teacher_training(TeacherTrainConfig(arch="wrn-16-1", at="nfgsm", epochs=4,
                                                           out=str(out / "teacher"), **common), out / "teacher")
    teacher_ckpt = Path(teacher_ckpt).resolve()
    teacher = {"teacher": "wrn-16-1", "teacher_ckpt": str(teacher_ckpt)}
    print(f"teacher: {json.loads(teacher_ckpt.with_suffix('.json').read_text())['val']}")

    _stage("2/5 search S3 with cross-layer distillation (3 epochs)", start)
    run_search(SearchConfig(space="s3", epochs=3, arch_lr=0.05, out=str(out / "search"), **teacher, **common),
               out / "search")

    _stage("3/5 derive the architecture and its tutors", start)
    arch_path, arch = write_arch(out / "search")
    arch_path = Path(arch_path).resolve()
    print(format_arch(arch))

    rows = []
    for i, baseline in enumerate(BASELINES):
        _stage(f"4/5 retrain ({i + 1}/{len(BASELINES)}): {BASELINES[baseline].title}", start)
        run = out / f"retrain-{baseline}"
        run_retrain(RetrainConfig(arch=str(arch_path), baseline=baseline, epochs=6, out=str(run), **teacher,
                                  **common), run)
        rows.append({"model": BASELINES[baseline].title, "run": str(run)})

    _stage(f"5/5 evaluate: clean and PGD-20 on the 297 validation digits, PGD-20 and AutoAttack on the first "
           f"{AUTOATTACK_N} (4 models, 2 processes)", start)
    # small nets on small batches are bound by per-op overhead, not FLOPs: two single-threaded
    # processes evaluate about twice as fast as one process with two threads
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for row, result in zip(rows, pool.map(evaluate_run, [r["run"] for r in rows]), strict=True):
            row.update(result, params=arch["params"], macs=arch["macs"])
            print(f"{row['model']}: clean {row['clean']:.1f} %, PGD-20 {row['pgd20']:.1f} %; on the first "
                  f"{row['n_subset']}: PGD-20 {row['pgd20_subset']:.1f} %, AutoAttack {row['autoattack_subset']:.1f} %"
                  f"  (t = {time.perf_counter() - start:.0f} s)", flush=True)

    table = format_table(rows)
    print("\n" + table)
    summary = {"rows": rows, "seconds": round(time.perf_counter() - start, 1), "arch": str(arch_path)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nrun directories (each with its eval JSON) and summary.json are in {out}/ ({summary['seconds']:.0f} s)"
          f"\nthe report with figures: {report_command(out)}")
    return summary


def report_command(out: Path) -> str:
    """`rnas report` of the quickstart's runs, with the extra it needs when matplotlib is not installed."""
    import importlib.util

    command = f"rnas report {out} -o {out / 'report'}"
    return command if importlib.util.find_spec("matplotlib") else f"pip install -e '.[report]' && {command}"


def evaluate_run(run: str) -> dict:
    """Clean / PGD-20 on the validation digits and PGD-20 / AutoAttack on its first AUTOATTACK_N images."""
    import torch

    torch.set_num_threads(1)
    model = load_model(Path(run) / "checkpoint.pt")
    full, n, _ = eval_batches("digits", None, "val", None, None, 500, "cpu")
    subset, n_subset, _ = eval_batches("digits", None, "val", None, AUTOATTACK_N, 500, "cpu")
    rows = evaluate(model, full, ["clean", "pgd20"], [8 / 255])
    subset_rows = evaluate(model, subset, ["pgd20", "autoattack"], [8 / 255])
    # the same files `rnas eval --json` writes, so that `rnas report` shows them
    for name, found, size in (("eval.json", rows, n), (f"eval-autoattack-n{n_subset}.json", subset_rows, n_subset)):
        atomic_write_json(Path(run) / name, {
            "checkpoint": str(Path(run) / "checkpoint.pt"), "params": model.rnas_checkpoint["arch"]["params"],
            "macs": model.rnas_checkpoint["arch"]["macs"], "data": "digits", "split": "val",
            "split_source": "validation split: the digits' last 297 images", "n": size, "seed": 0,
            "eps_space": "pixel", "results": found})
    result = {r["attack"]: r["accuracy"] for r in rows}
    result.update({f"{r['attack']}_subset": r["accuracy"] for r in subset_rows})
    return {**result, "n": n, "n_subset": n_subset}


def format_table(rows: list[dict]) -> str:
    """Accuracies in %, eps 8/255; the last two columns are on the AutoAttack subset."""
    n, k = rows[0]["n"], rows[0]["n_subset"]
    head = (f"{'student (S3, digits, eps 8/255)':30s} {'params':>7s} {'MACs':>6s} {f'clean n={n}':>11s} "
            f"{f'PGD-20 n={n}':>12s} {f'PGD-20 n={k}':>11s} {f'AutoAttack n={k}':>15s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:30s} {r['params'] / 1e6:6.3f}M {r['macs'] / 1e6:5.2f}M {r['clean']:11.1f} "
                     f"{r['pgd20']:12.1f} {r['pgd20_subset']:11.1f} {r['autoattack_subset']:15.1f}")
    return "\n".join(lines)
