"""Measures the quickstart's expected ranges: runs `rnas quickstart --seed S` for each seed (--jobs at a time:
the quickstart computes on one thread, so runs side by side give the same figures, only later) and writes every
row it printed, its wall time and its CPU time (none for a run finished with --resume) to a JSON file. A seed
whose run already finished in --work (its summary.json of this setting) is read, not run again, so an
interrupted measurement goes on where it stopped. The quickstart prints the lowest and highest value of these
seeds beside each of its figures.

    python tools/quickstart_reference.py --seeds 0,1,2,3,4 --out rnas/resources/quickstart_reference.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = "python tools/quickstart_reference.py --seeds {seeds} --jobs {jobs} --out {out}"


def machine() -> dict:
    """The CPU, its cores and the torch build the measurement ran on."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def finished(run: Path) -> dict | None:
    """The summary of a quickstart run of this setting that finished in ``run``, else None."""
    from rnas.commands.quickstart_table import setting

    path = run / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else None
    return summary if summary and summary.get("setting", setting()) == setting() else None


def measure(seeds: list[int], jobs: int, out: Path, work: Path) -> dict:
    """Run the quickstart for every seed, ``jobs`` at a time, and write the reference to ``out`` after each."""
    from rnas.commands.quickstart_table import setting

    reference = {"setting": setting(), "command": COMMAND.format(seeds=",".join(map(str, seeds)), jobs=jobs,
                                                                  out=out.as_posix()),
                 "machine": machine(), "seeds": {}}

    def record(seed: int, summary: dict) -> None:
        timed = {} if summary.get("resumed") else {"seconds": summary["seconds"], "cpu_seconds": summary["cpu_seconds"]}
        reference["seeds"][str(seed)] = {**timed, "resumed": bool(summary.get("resumed")),
                                         "rows": [{k: v for k, v in r.items() if k != "run"} for r in summary["rows"]]}
        reference["seeds"] = dict(sorted(reference["seeds"].items(), key=lambda item: int(item[0])))
        out.write_text(json.dumps(reference, indent=1) + "\n")
        print(f"seed {seed}: {summary['seconds']:.0f} s{' (resumed)' * bool(summary.get('resumed'))}, written to "
              f"{out}", flush=True)

    waiting, running = [], {}
    for seed in seeds:
        summary = finished(work / f"seed-{seed}")
        if summary:
            record(seed, summary)
        elif (work / f"seed-{seed}").exists():
            raise SystemExit(f"quickstart_reference: {work / f'seed-{seed}'}: an unfinished run (or one of another "
                             "setting); remove it or wait for it")
        else:
            waiting.append(seed)
    while waiting or running:
        while waiting and len(running) < jobs:
            seed = waiting.pop(0)
            log = (work / f"seed-{seed}.log").open("w")
            running[seed] = (subprocess.Popen([sys.executable, "-m", "rnas", "quickstart", "--seed", str(seed), "--out",
                                               str(work / f"seed-{seed}")], stdout=log, stderr=subprocess.STDOUT), log)
        time.sleep(5)
        for seed, (process, log) in list(running.items()):
            if process.poll() is None:
                continue
            del running[seed]
            log.close()
            if process.returncode != 0:
                raise SystemExit(f"quickstart_reference: seed {seed} failed (exit {process.returncode}); see "
                                 f"{work / f'seed-{seed}.log'}")
            record(seed, json.loads((work / f"seed-{seed}" / "summary.json").read_text()))
    return reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (at least 5)")
    parser.add_argument("--jobs", type=int, default=1, help="quickstarts at a time (each computes on one thread)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--work", type=Path, help="where the run directories go (default: a temporary directory)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"quickstart_reference: error: --seeds {args.seeds}: comma-separated whole numbers", file=sys.stderr)
        return 2
    if len(set(seeds)) < 5 or min(seeds) < 0:
        print(f"quickstart_reference: error: --seeds {args.seeds}: at least 5 different seeds >= 0", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"quickstart_reference: error: --jobs {args.jobs}: a whole number >= 1", file=sys.stderr)
        return 2
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        measure(seeds, args.jobs, args.out, args.work)
        return 0
    with tempfile.TemporaryDirectory(prefix="rnas-quickstart-reference-") as work:
        measure(seeds, args.jobs, args.out, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
