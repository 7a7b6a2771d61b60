"""`rnas quickstart`: the whole pipeline on the embedded digits data (nothing to download), sized to
finish in under 8 minutes on two CPU cores: robust teacher -> search -> derive -> retrain with cross-layer
distillation and the three baselines -> clean / PGD-20 / AutoAttack comparison, each figure printed beside
the range that 5 seeds of the same run gave (rnas/resources/quickstart_reference.json)."""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rnas.commands.quickstart_table import (
    AUTOATTACK_N,
    EPS_255,
    RETRAIN_EPOCHS,
    SEARCH_EPOCHS,
    TEACHER_BATCH,
    TEACHER_EPOCHS,
    format_table,
    load_reference,
    setting,
)
from rnas.engine.retrain import RetrainConfig, run_retrain
from rnas.engine.search import SearchConfig, run_search
from rnas.engine.teacher_train import TeacherTrainConfig, run_teacher_training
from rnas.errors import UserError
from rnas.evaluation.evaluate import eval_batches, evaluate, load_model
from rnas.method.baselines import BASELINES
from rnas.nets.derivation import format_arch, write_arch
from rnas.runtime.rundir import atomic_write_json

TEACHER_TITLE = "robust teacher (WRN-16-1)"
THREADS = 1  # intra-op threads of every stage whatever the machine's cores: the same sums, so the same figures


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="rnas-quickstart", help="directory for the run dirs (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (the README's table is seed 0)")
    parser.add_argument("--resume", action="store_true", help="continue a quickstart stopped in --out: finished "
                        "stages are kept, the one in progress resumes, the evaluation runs again")


def run(args) -> int:
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: a whole number >= 0")
    run_quickstart(args.out, args.seed, resume=args.resume)
    return 0


def _stage(title: str, start: float) -> None:
    print(f"\n== {title}  (t = {time.perf_counter() - start:.0f} s)", flush=True)


@contextlib.contextmanager
def pinned_threads():
    """torch computes on THREADS intra-op threads inside, whatever OMP_NUM_THREADS and the cores say."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_quickstart(out: str | Path, seed: int = 0, resume: bool = False) -> dict:
    """Teacher, search, derive, four retrains and their evaluation under ``out`` (absolute paths in every config)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"--out {out}: already exists and is not empty; remove it or pass another --out")
    out = out.resolve()  # every path below goes into a config or arch.json: absolute, usable from anywhere
    reference = load_reference()
    start = time.perf_counter()
    with pinned_threads():
        rows, arch_path = _train_and_evaluate(out, seed, start, resume)
    table = format_table(rows, reference)
    print("\n" + table)
    summary = {"setting": setting(), "seed": seed, "rows": rows, "seconds": round(time.perf_counter() - start, 1),
               "cpu_seconds": cpu_seconds(), "arch": str(arch_path), "resumed": resume}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nrun directories (each with its eval JSON) and summary.json are in {out}/ ({summary['seconds']:.0f} s; "
          f"on 2 idle cores about {idle_seconds(summary['cpu_seconds']):.0f} s)\nthe report with figures: "
          f"{report_command(out)}")
    return summary


def _train_and_evaluate(out: Path, seed: int, start: float, resume: bool) -> tuple[list[dict], Path]:
    """The five stages (with ``resume``: a finished teacher kept, each run resumed); the rows and arch.json."""
    common = {"data": "digits", "batch_size": 64, "seed": seed, "log_every": 0}
    eps = EPS_255 / 255

    _stage(f"1/5 adversarially train a small robust teacher (WRN-16-1, N-FGSM, eps {EPS_255}/255, "
           f"{TEACHER_EPOCHS} epochs)", start)
    teacher_ckpt = out / "teacher" / "models" / "digits" / "Linf" / "wrn-16-1-nfgsm.pt"
    if not (resume and teacher_ckpt.with_suffix(".json").exists()):
        teacher_ckpt = run_teacher_training(TeacherTrainConfig(
            arch="wrn-16-1", at="nfgsm", epochs=TEACHER_EPOCHS, eps=eps, out=str(out / "teacher"),
            **{**common, "batch_size": TEACHER_BATCH}), out / "teacher", resume and (out / "teacher").exists())
    teacher_ckpt = Path(teacher_ckpt).resolve()
    teacher = {"teacher": "wrn-16-1", "teacher_ckpt": str(teacher_ckpt)}
    print(f"teacher: {json.loads(teacher_ckpt.with_suffix('.json').read_text())['val']}")

    _stage(f"2/5 search S3 with cross-layer distillation ({SEARCH_EPOCHS} epochs)", start)
    run_search(SearchConfig(space="s3", epochs=SEARCH_EPOCHS, arch_lr=0.05, out=str(out / "search"), **teacher,
                            **common), out / "search", resume and (out / "search").exists())

    _stage("3/5 derive the architecture and its tutors", start)
    arch_path, arch = write_arch(out / "search")
    arch_path = Path(arch_path).resolve()
    print(format_arch(arch))

    teacher_row = {"model": TEACHER_TITLE, "run": str(out / "teacher")}
    rows = [teacher_row]
    for i, baseline in enumerate(BASELINES):
        _stage(f"4/5 retrain ({i + 1}/{len(BASELINES)}): {BASELINES[baseline].title} ({RETRAIN_EPOCHS} epochs)", start)
        run = out / f"retrain-{baseline}"
        run_retrain(RetrainConfig(arch=str(arch_path), baseline=baseline, epochs=RETRAIN_EPOCHS, out=str(run),
                                  **teacher, **common), run, resume and run.exists())
        rows.append({"model": BASELINES[baseline].title, "run": str(run), "params": arch["params"],
                     "macs": arch["macs"]})

    _stage(f"5/5 evaluate at eps {EPS_255}/255: clean and PGD-20 on the 297 validation digits, PGD-20 and AutoAttack "
           f"on the first {AUTOATTACK_N} (the students; {len(rows)} models, 2 processes)", start)
    # small nets on small batches are bound by per-op overhead, not FLOPs: two single-threaded
    # processes evaluate about twice as fast as one process with two threads
    jobs = [(r["run"], seed, r is not teacher_row) for r in rows]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for row, result in zip(rows, pool.map(evaluate_run, *zip(*jobs, strict=True)), strict=True):
            row.update(result)
            subset = (f"; on the first {row['n_subset']}: PGD-20 {row['pgd20_subset']:.1f} %, AutoAttack "
                      f"{row['autoattack_subset']:.1f} %" if "autoattack_subset" in row else "")
            print(f"{row['model']}: clean {row['clean']:.1f} %, PGD-20 {row['pgd20']:.1f} %{subset}"
                  f"  (t = {time.perf_counter() - start:.0f} s)", flush=True)
    return rows, arch_path


def cpu_seconds() -> dict:
    """CPU seconds (user + system) so far of this process (the training stages) and of its finished children
    (the evaluation's processes): what the run costs whatever else the machine runs."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"training": round(own.ru_utime + own.ru_stime, 1),
            "evaluation": round(children.ru_utime + children.ru_stime, 1)}


def idle_seconds(cpu: dict) -> float:
    """The wall time of a run of these CPU seconds on 2 idle cores: the training stages on one thread, the
    evaluation in two processes side by side."""
    return cpu["training"] + cpu["evaluation"] / 2


def report_command(out: Path) -> str:
    """`rnas report` of the quickstart's runs, with the extra it needs when matplotlib is not installed."""
    import importlib.util

    command = f"rnas report {out} -o {out / 'report'}"
    return command if importlib.util.find_spec("matplotlib") else f"pip install -e '.[report]' && {command}"


def evaluate_run(run: str, seed: int = 0, autoattack: bool = True) -> dict:
    """Clean / PGD-20 on the validation digits and PGD-20 / AutoAttack on its first AUTOATTACK_N images."""
    import torch

    torch.set_num_threads(1)
    model = load_model(Path(run) / "checkpoint.pt")
    info = model.rnas_checkpoint.get("arch") or {}
    full, n, _ = eval_batches("digits", None, "val", None, None, 500, "cpu")
    rows = evaluate(model, full, ["clean", "pgd20"], [EPS_255 / 255], seed=seed)
    found = [("eval.json", rows, n)]
    result = {r["attack"]: r["accuracy"] for r in rows}
    if autoattack:
        subset, n_subset, _ = eval_batches("digits", None, "val", None, AUTOATTACK_N, 500, "cpu")
        subset_rows = evaluate(model, subset, ["pgd20", "autoattack"], [EPS_255 / 255], seed=seed)
        found.append((f"eval-autoattack-n{n_subset}.json", subset_rows, n_subset))
        result.update({f"{r['attack']}_subset": r["accuracy"] for r in subset_rows}, n_subset=n_subset)
    if "params" not in info:  # the teacher: its size counted here
        from rnas.engine.cost import count_macs

        result.update(params=sum(p.numel() for p in model.parameters()), macs=count_macs(model, 32, "cpu"))
    # the same files `rnas eval --json` writes, so that `rnas report` shows them
    for name, rows_found, size in found:
        atomic_write_json(Path(run) / name, {
            "checkpoint": str(Path(run) / "checkpoint.pt"), "params": info.get("params", result.get("params")),
            "macs": info.get("macs", result.get("macs")), "data": "digits", "split": "val",
            "split_source": "validation split: the digits' last 297 images", "n": size, "seed": seed,
            "eps_space": "pixel", "results": rows_found})
    return {**result, "n": n}
