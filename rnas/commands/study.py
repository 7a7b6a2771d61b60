"""`rnas study STUDY.yaml`: a declarative study (searches, arms, fine-tuning, evaluation), resumable."""
import sys
from pathlib import Path

from rnas.commands.args import positive
from rnas.errors import UserError


def add_arguments(parser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="the study file (see studies/); with --status also a "
                        "study directory")
    parser.add_argument("--out", help="study directory (default: runs/<study name>); rerun to continue")
    parser.add_argument("--jobs", type=positive, help="steps run at once (default: the file's jobs, else 1)")
    parser.add_argument("--threads", type=positive, help="torch threads per step (default: cores / jobs)")
    parser.add_argument("--data-dir", help="replaces the file's data.data_dir")
    parser.add_argument("--model-dir", help="replaces the model_dir of the file's teachers")
    parser.add_argument("--dry-run", action="store_true", help="list the steps and which are done; run nothing")
    parser.add_argument("--executor", choices=("local", "ray", "slurm"),
                        help="where steps run: local processes (default), Ray tasks, SLURM jobs (submitit); "
                             "replaces the file's executor.kind")
    parser.add_argument("--ray-address", help="a running Ray cluster (default: the file's, else start a local one)")
    parser.add_argument("--status", action="store_true",
                        help="print each step's state from study.json (and SLURM job states); run nothing")


def run(args) -> int:
    from rnas.study.plan import plan_study
    from rnas.study.runner import StudyStopped, run_study, summary
    from rnas.study.steps import check_settings, is_complete

    source = Path(args.study)
    if args.status:
        from rnas.study.status import status_lines

        print("\n".join(status_lines(source, args.out)))
        return 0
    if not source.is_file():
        raise UserError(f"{source}: no such study file")
    from rnas.study.plan import read_study

    name = read_study(source).get("name") or source.stem
    out = Path(args.out or Path("runs") / str(name))
    study = plan_study(source, out, {"data_dir": args.data_dir, "model_dir": args.model_dir,
                                     "executor": args.executor, "ray_address": args.ray_address})
    if args.dry_run:
        for i, step in enumerate(study.steps(), 1):
            try:  # what the run itself would refuse, the dry run says
                check_settings(step, study.out)
                state = "done" if is_complete(step, study.out) else "to run"
            except UserError as err:
                state = f"refused: {err}"
            print(f"{i:3d}. {step.kind:8s} {step.path:40s} {state}")
        return 0
    from rnas.runtime.rundir import StopSignal, check_can_create
    from rnas.study.cluster import check_available

    check_available(study.executor)

    check_can_create(study.out, "--out")
    study.again = " ".join(["rnas study", str(source), "--out", str(study.out)]
                           + [f"--{k.replace('_', '-')} {v}" for k, v in (("data_dir", args.data_dir),
                                                                      ("model_dir", args.model_dir),
                                                                      ("executor", args.executor),
                                                                      ("ray_address", args.ray_address)) if v])
    with StopSignal() as stop:
        def signals() -> int:  # each signal once: a second one kills the steps instead of stopping them
            received, stop.received = stop.received, None
            return received or 0

        try:
            states = run_study(study, args.jobs, args.threads, should_stop=signals)
        except StudyStopped as stopped:
            print(f"rnas: {stopped}", file=sys.stderr)
            raise SystemExit(128 + stopped.signum) from None
    text, code = summary(study, states)
    print(text)
    return code
