"""Check and time rnas on a GPU with one command; prints one JSON report (and writes it with --out).

    python tools/gpu_check.py [--device cuda] [--out gpu-report.json] [--budget 470] [--quick] [--only SECTIONS]

Sections, in this order, each recorded with its seconds and its error if it failed (a failing section does
not stop the others; a section that no longer fits in --budget seconds is recorded as skipped):

  facts   torch, CUDA, cuDNN and NCCL versions; the device, its memory, bf16 support
  tests   the tests marked ``cuda`` (tests/test_cuda.py) on --device: passed / failed / skipped, failures named
  wrt34   the paper's setting: S5 supernet + WRN-34-10 teacher (random weights), search step at batch 128 and
          256 (tools/bench.py): step ms and images/s, the teacher forward alone, peak allocated memory, the
          step's ratio to (teacher forward + max-width student step) (goal <= 1.10), and what that makes of
          the paper's CIFAR-10 search (100 epochs of 50,000 images) and of one retrain epoch
  resume  a 30-step search (3 epochs of 10; synthetic CIFAR-shaped data, random teacher) stopped by SIGTERM
          in its second epoch and resumed, against the uninterrupted run: the largest difference of any
          tensor in the two final checkpoints (torch.use_deterministic_algorithms on, warn-only)
  captured tools/bench.py --launch: search and retrain steps eager and captured (--graphs on) side by side:
          images/s, (f) / ((d) + (a)) timed and in operator calls, host syncs, graph breaks, compile seconds;
          fp32 and bf16 with WRN-16-2, fp32 with WRN-34-10, batch 128
  bench   tools/bench.py (S5, WRN-16-2 teacher with random weights) in fp32, --amp bf16 and --amp fp16,
          eager and --compile: its ratios and absolute times

Nothing is downloaded. --quick is the CPU smoke run: small batches, few repeats, WRN-16-2 for the WRN-34-10,
S3 for S5 in the bench rows, the argmax test on one space, no --compile rows.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER_SEARCH_EPOCHS, CIFAR_TRAIN = 100, 50_000
DETERMINISTIC = ("import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
                 "from rnas.cli import main; sys.exit(main(sys.argv[1:]))")


def facts(device: torch.device) -> dict:
    out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, capability=f"{props.major}.{props.minor}", memory_bytes=props.total_memory,
                   multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                   nccl=".".join(map(str, torch.cuda.nccl.version())) if torch.distributed.is_nccl_available()
                   else None, device_count=torch.cuda.device_count())
    else:
        out.update(threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return out


def run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout), cwd=ROOT,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{' '.join(cmd[1:4])} ... exit {result.returncode}: {tail[0]}")
    return result


def cuda_tests(device: torch.device, quick: bool, timeout: float) -> dict:
    subset = ["-k", "not argmax or s3"] if quick else []  # quick: the argmax test on one space
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rf", "-p", "no:cacheprovider",
                             "tests/test_cuda.py", *subset], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            env={**os.environ, "RNAS_TEST_DEVICE": str(device)})
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", result.stdout)}
    failed = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    return {"passed": counts.get("passed", 0), "failed": counts.get("failed", 0) + counts.get("error", 0)
            + counts.get("errors", 0), "skipped": counts.get("skipped", 0), "failures": failed,
            "exit_code": result.returncode}


def bench(device: torch.device, timeout: float, *flags) -> dict:
    cmd = [sys.executable, "tools/bench.py", "--device", str(device), "--json", *map(str, flags)]
    return json.loads(run(cmd, timeout).stdout)


def paper_setting(device: torch.device, quick: bool, deadline: float) -> dict:
    teacher = "wrn-16-2" if quick else "wrt34"  # quick: the smoke run's stand-in for the WRN-34-10
    out = {"teacher": teacher}
    for batch in ((16,) if quick else (128, 256)):
        row = bench(device, deadline - time.time(), "--space", "S5", "--teachers", teacher, "--batch-size", batch,
                    "--repeats", 3 if quick else 15, "--warmup", 1)
        times = row["per_teacher"][teacher]["median_ms"]
        steps = -(-CIFAR_TRAIN // batch)
        out[f"batch_{batch}"] = {
            "search_step_ms": times["f"], "teacher_forward_ms": times["d"], "standalone_step_ms": times["a"],
            "search_images_per_s": row["per_teacher"][teacher]["search_images_per_s"],
            "search_over_limit": row["search_over_limit"], "goal": "<= 1.10",
            "peak_bytes": row["per_teacher"][teacher]["peak_bytes"],
            "paper_search_hours": round(PAPER_SEARCH_EPOCHS * steps * times["f"] / 3.6e6, 2),
            "retrain_epoch_minutes_at_most": round(steps * (times["d"] + times["a"]) / 6e4, 2)}
    return out


def write_cifar_shaped(root: Path, images: int) -> Path:
    """Random images in torchvision's cifar-10-batches-py layout (timing and resume need no real data)."""
    rng, base = np.random.default_rng(0), root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    per = -(-images // 5)
    for i in range(1, 6):
        with open(base / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, per).tolist()}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, fh)
    return root


def tensors(obj, prefix: str = ""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}/{i}")


def resume_check(device: torch.device, quick: bool, deadline: float) -> dict:
    batch = 16 if quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_cifar_shaped(tmp / "data", 10 * batch + 200)
        env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONHASHSEED": "0"}

        def search(out: Path, *extra) -> list[str]:
            return [sys.executable, "-c", DETERMINISTIC, "search", "--space", "s3", "--teacher", "wrn-16-2",
                    "--random-teacher", "--data-dir", str(data), "--val-size", "200", "--limit",
                    str(10 * batch), "--batch-size", str(batch), "--epochs", "3", "--workers", "0",
                    "--device", str(device), "--out", str(out), *extra]

        run(search(tmp / "reference"), deadline - time.time(), env)
        killed = tmp / "killed"
        proc = subprocess.Popen(search(killed), cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        metrics = killed / "metrics.jsonl"
        while proc.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            time.sleep(0.005)
        interrupted = proc.poll() is None
        if interrupted:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=max(1.0, deadline - time.time()))
        state = torch.load(killed / "checkpoint.pt", map_location="cpu", weights_only=False)
        stopped_at = {"epoch": state.get("epoch"), "step": state.get("step")}
        run([sys.executable, "-c", DETERMINISTIC, "search", "--resume", str(killed)], deadline - time.time(), env)
        ours = dict(tensors(torch.load(killed / "checkpoint.pt", map_location="cpu", weights_only=False)))
        theirs = dict(tensors(torch.load(tmp / "reference" / "checkpoint.pt", map_location="cpu", weights_only=False)))
    diffs = {k: (ours[k].double() - theirs[k].double()).abs().max().item() if ours[k].numel() else 0.0
             for k in theirs if k in ours and ours[k].shape == theirs[k].shape and ours[k].dtype.is_floating_point}
    exact = all(torch.equal(ours[k], theirs[k]) for k in theirs if k in ours and ours[k].shape == theirs[k].shape)
    worst = max(diffs, key=diffs.get) if diffs and max(diffs.values()) > 0 else None
    return {"steps": 30, "batch_size": batch, "interrupted_mid_run": interrupted, "signal_exit_code": code,
            "stopped_at": stopped_at, "same_tensor_names": sorted(ours) == sorted(theirs), "bit_exact": exact,
            "max_abs_difference": diffs.get(worst, 0.0), "worst_tensor": worst, "tolerance": 1e-5,
            "within_tolerance": sorted(ours) == sorted(theirs) and diffs.get(worst, 0.0) <= 1e-5}


def amp_rows(device: torch.device, quick: bool, deadline: float) -> dict:
    rows = {}
    compiles = (False,) if quick or device.type != "cuda" else (False, True)
    for compile_ in compiles:
        for amp in ("none", "bf16", "fp16"):
            name = ("fp32" if amp == "none" else amp) + (" + compile" if compile_ else "")
            if time.time() > deadline - 20:
                rows[name] = {"skipped": "out of time"}
                continue
            flags = ["--space", "S3" if quick else "S5", "--teachers", "wrn-16-2", "--amp", amp,
                     "--repeats", 3 if quick else 11, "--warmup", 1]
            flags += ["--batch-size", 16] if quick else []
            flags += ["--compile"] if compile_ else []
            try:
                rows[name] = bench(device, deadline - time.time(), *flags)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
                rows[name] = {"error": str(err)}
    return rows


def captured_rows(device: torch.device, quick: bool, deadline: float) -> dict:
    """tools/bench.py --launch: the search and retrain steps eager and captured (--graphs on) side by side, with
    images/s, (f) / ((d) + (a)) timed and in operator calls, host syncs and graph breaks; fp32 and bf16 with
    the WRN-16-2 teacher, fp32 with the paper's WRN-34-10, at batch 128 (--quick: S3, batch 16, WRN-16-2)."""
    rows = {}
    settings = [("fp32", "none", "wrn-16-2"), ("bf16", "bf16", "wrn-16-2")]
    settings += [] if quick else [("fp32 wrt34", "none", "wrt34")]
    for name, amp, teacher in settings:
        if time.time() > deadline - 30:
            rows[name] = {"skipped": "out of time"}
            continue
        flags = ["--launch", "--space", "S3" if quick else "S5", "--teachers", teacher, "--amp", amp,
                 "--batch-size", 16 if quick else 128]
        try:
            rows[name] = bench(device, deadline - time.time(), *flags)
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
            rows[name] = {"error": str(err)}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a smoke run")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all sections (default 470)")
    parser.add_argument("--quick", action="store_true", help="small batches and few repeats (the CPU smoke run)")
    parser.add_argument("--only", help="comma-separated sections to run (default: all): "
                        "facts,tests,wrt34,resume,captured,bench")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device}: no CUDA device here (give --device cpu for a smoke run)",
              file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists():
        print(f"gpu_check: --out {args.out}: exists; choose another file", file=sys.stderr)
        return 2
    start = time.time()
    deadline = start + args.budget
    sections = {"facts": lambda: facts(device),
                "tests": lambda: cuda_tests(device, args.quick, max(1.0, deadline - time.time())),
                "wrt34": lambda: paper_setting(device, args.quick, deadline),
                "resume": lambda: resume_check(device, args.quick, deadline),
                "captured": lambda: captured_rows(device, args.quick, deadline),
                "bench": lambda: amp_rows(device, args.quick, deadline)}
    only = args.only.split(",") if args.only else list(sections)
    if unknown := [name for name in only if name not in sections]:
        print(f"gpu_check: --only {unknown[0]}: not a section ({', '.join(sections)})", file=sys.stderr)
        return 2
    report = {"command": " ".join(sys.argv), "budget_s": args.budget}
    for name, section in ((n, s) for n, s in sections.items() if n in only):
        began = time.time()
        if began > deadline - 10:
            report[name] = {"skipped": "out of time"}
            continue
        try:
            report[name] = section()
        except (RuntimeError, OSError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError) as err:
            report[name] = {"error": f"{type(err).__name__}: {err}"}
        report[name] = {**report[name], "seconds": round(time.time() - began, 1)}
    report["seconds"] = round(time.time() - start, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
