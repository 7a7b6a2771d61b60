"""The `rnas` command line. Each subcommand is a small function; user errors print one line, exit 2."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .errors import USER_ERRORS, TrainingDiverged, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_spaces(args) -> int:
    from .spaces_report import run

    print(run(args.spaces, args.json))
    return 0


def _training_command(args, config_cls, runner, command: str, positional: str | None = None) -> Path:
    """Shared by search / retrain / teacher train: resolve the config (defaults < --config < flags, or
    the resumed run's config < flags), check the run directory, then run."""
    from .config import check_resume_overrides, read_run_config, resolve_config
    from .rundir import prepare_run_dir

    if args.resume:
        if getattr(args, "out", None) is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise UserError(f"--out {args.out}: a resumed run continues in its own directory {args.resume}; "
                            "drop --out (or start a new run there without --resume)")
        run = prepare_run_dir(args.resume, resume=True)
        base = read_run_config(config_cls, run / "config.yaml", command)
        cfg = resolve_config(config_cls, args, base)
        cfg.out = str(run)
        check_resume_overrides(base, cfg)
    else:
        cfg = resolve_config(config_cls, args)
        if positional and not getattr(cfg, positional):
            raise UserError(f"rnas {command}: give {positional.upper()} (or --resume RUN)")
        run = prepare_run_dir(cfg.out, resume=False)
    from .distributed import from_environment
    from .loop import RunStopped
    from .rundir import StopSignal

    main_rank = from_environment().main
    with StopSignal() as stop:
        try:
            return runner(cfg, run, resume=bool(args.resume), callbacks=[ConsoleProgress()] if main_rank else [],
                          should_stop=lambda: stop.received or 0) or run
        except RunStopped as stopped:
            if main_rank:
                print(f"rnas: {stopped}", file=sys.stderr)
            raise SystemExit(128 + stopped.signum) from None
        except RuntimeError as err:  # a collective failed: another rank died or the network broke
            if from_environment().world == 1 or isinstance(err, TrainingDiverged):
                raise
            from .rundir import first_line

            print(f"rnas: error: rank {from_environment().rank}: lost the other ranks ({first_line(err, 100)}); "
                  f"the last checkpoint {run / 'checkpoint.pt'} is intact: rnas {command} --resume {run}",
                  file=sys.stderr)
            raise SystemExit(1) from None


class ConsoleProgress:
    """What the CLI shows of a run: a progress bar per epoch on a terminal, one line per epoch otherwise."""

    def __init__(self):
        self.quiet = not sys.stderr.isatty()
        self.bar = None

    def on_step(self, job, terms) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=len(job.loader), initial=job.step - 1, leave=False,
                            desc=f"{job.command} {job.epoch + 1}/{job.cfg.epochs}")
        self.bar.update(1)

    def on_epoch(self, job, record: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.quiet:
            shown = {k: record[k] for k in ("val_acc", "expected_macs", "tau") if record.get(k) is not None}
            loss = next((record[k] for k in ("weight/total", "total") if k in record), float("nan"))
            print(f"{job.command} epoch {record['epoch'] + 1}/{job.cfg.epochs}: loss {loss:.4f} "
                  + " ".join(f"{k} {v:.4g}" for k, v in shown.items()) + f" ({record['images_per_s']} img/s)",
                  flush=True)


def _main_rank() -> bool:
    from .distributed import from_environment

    return from_environment().main


def _cmd_search(args) -> int:
    from .search import SearchConfig, run_search

    run = _training_command(args, SearchConfig, run_search, "search")
    if _main_rank():
        print(f"search finished: {run}  (next: rnas derive {run})")
    return 0


def _cmd_derive(args) -> int:
    from .config import parse_macs
    from .derivation import format_arch, write_archs

    targets = [parse_macs(t) for t in args.mac_target.split(",")] if args.mac_target else [None]
    if args.widths_from and args.mac_target:
        raise UserError("--widths-from and --mac-target both choose the widths: give one")
    for path, arch in write_archs(args.run, targets, graph=args.graph, tutor_derive=args.tutor_derive,
                                  widths_from=args.widths_from):
        print(format_arch(arch))
        print(f"\nwrote {path}" + (f"\nwrote {path.with_suffix('.graphml')}" if args.graph else "") + "\n")
    return 0


def _cmd_retrain(args) -> int:
    from .retrain import RetrainConfig, run_retrain

    run = _training_command(args, RetrainConfig, run_retrain, "retrain", positional="arch")
    if _main_rank():
        print(f"retrain finished: {run}  (next: rnas eval {Path(run) / 'checkpoint.pt'})")
    return 0


def _cmd_teacher_train(args) -> int:
    from .teacher_train import TeacherTrainConfig, run_teacher_training

    path = _training_command(args, TeacherTrainConfig, run_teacher_training, "teacher train")
    if _main_rank():
        print(f"teacher written: {path}")
    return 0


def _cmd_eval(args) -> int:
    from .config import resolve_config
    from .evaluate import EvalConfig, run_eval

    if args.list_attacks:
        from .attacks import format_attack_table

        print(format_attack_table())
        return 0
    if not getattr(args, "checkpoint", None):
        raise UserError("rnas eval: give CKPT, the checkpoint to evaluate (or --list-attacks to list the attacks)")
    try:
        run_eval(resolve_config(EvalConfig, args), resume=args.resume)
    except KeyboardInterrupt:  # run_eval has said where its progress is kept for --resume
        import signal

        raise SystemExit(128 + signal.SIGINT) from None
    return 0


def _cmd_study(args) -> int:
    from .study import plan_study
    from .study_runner import StudyStopped, check_settings, is_complete, run_study, summary

    source = Path(args.study)
    if not source.is_file():
        raise UserError(f"{source}: no such study file")
    from .study import read_study

    name = read_study(source).get("name") or source.stem
    out = Path(args.out or Path("runs") / str(name))
    study = plan_study(source, out, {"data_dir": args.data_dir, "model_dir": args.model_dir})
    if args.dry_run:
        for i, step in enumerate(study.steps(), 1):
            try:  # what the run itself would refuse, the dry run says
                check_settings(step, study.out)
                state = "done" if is_complete(step, study.out) else "to run"
            except UserError as err:
                state = f"refused: {err}"
            print(f"{i:3d}. {step.kind:8s} {step.path:40s} {state}")
        return 0
    from .rundir import StopSignal, check_can_create

    check_can_create(study.out, f"--out {study.out}")
    study.again = " ".join(["rnas study", str(source), "--out", str(study.out)]
                           + [f"--{k.replace('_', '-')} {v}" for k, v in (("data_dir", args.data_dir),
                                                                      ("model_dir", args.model_dir)) if v])
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


def _cmd_scale(args) -> int:
    import json

    from .config import parse_macs
    from .rundir import atomic_write_json
    from .scaling import format_scale_report, scale_report

    layout = args.arch is None and args.flops is not None and args.macs is None
    grow = args.arch is not None and args.macs is not None and args.flops is None
    if not (layout or grow):
        raise UserError("rnas scale: give --flops BUDGET (a WRN-A layout), or ARCH --macs BUDGET (grow a derived net)")
    flag, text = ("--flops", args.flops) if args.arch is None else ("--macs", args.macs)
    if args.output:
        out = Path(args.output)
        if args.arch is not None and out.resolve() == Path(args.arch).resolve():
            raise UserError(f"-o {out}: the input arch file; write the grown net elsewhere")
        if out.exists() and not {"scaled_from", "target_macs"} & _json_keys(out):
            raise UserError(f"-o {out}: exists and is not an earlier rnas scale output; choose another file")
    try:
        target = parse_macs(text)
    except UserError as err:
        raise UserError(f"{flag}: {err}") from None
    if args.arch is None:
        if target < 1e6:
            raise UserError(f"--flops {args.flops}: a budget in MACs, e.g. 5G (the smallest WRN-A costs ~0.1G)")
        report = scale_report(target, base=args.base)
        print(json.dumps(report, indent=1) if args.json else format_scale_report(report))
    else:
        from supernets import read_arch

        from .scaling import scale_arch

        arch, source = read_arch(args.arch)
        report = scale_arch(arch, target, source, args.width_only)
        stages = "-".join(str(s["depth"]) for s in report["spec"]["stages"])
        print(f"{source}: {arch['macs'] / 1e6:.4g}M MACs -> {report['macs'] / 1e6:.4g}M MACs, "
              f"{report['params'] / 1e6:.3f}M params ({report['scaled_from']['rule']}; depths {stages}; widths "
              f"{' '.join(map(str, report['widths']))})")
        if not args.output:
            print("(give -o FILE to write the arch file for rnas retrain)")
    if args.output:
        atomic_write_json(Path(args.output), report)
        print(f"wrote {args.output}")
    return 0


def _json_keys(path: Path) -> set:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def _cmd_teachers(args) -> int:
    from .teachers import format_teacher_table, teacher_table

    if args.json:
        import json

        print(json.dumps(teacher_table(), indent=1))
    else:
        print(format_teacher_table())
    return 0


def _cmd_report(args) -> int:
    from .report import write_report

    print(f"wrote {write_report(args.inputs, args.out)}")
    return 0


def _cmd_quickstart(args) -> int:
    from .quickstart import run_quickstart

    run_quickstart(args.out)
    return 0


def _cmd_export(args) -> int:
    from .export import ExportMismatch, export, format_result

    try:
        result = export(args.checkpoint, args.format, args.out, input_size=args.input_size, batch=args.batch)
    except ExportMismatch as err:  # the exporter changed the numbers: not bad input, so exit 1, not 2
        print(f"rnas: error: {err}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0


def _add_training(sub, name: str, config_cls, func, help: str, positional: tuple[str, str] | None = None):
    from .config import add_config_flags

    parser = sub.add_parser(name, help=help)
    if positional:
        parser.add_argument(positional[0], nargs="?", default=argparse.SUPPRESS, help=positional[1])
    add_config_flags(parser, config_cls, skip=(positional[0],) if positional else ())
    parser.add_argument("--config", metavar="FILE", help="YAML file whose keys are flag names; flags override it")
    parser.add_argument("--resume", metavar="RUN", help="resume the run in RUN exactly where it stopped")
    parser.set_defaults(func=func)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .config import add_config_flags
    from .evaluate import EvalConfig
    from .retrain import RetrainConfig
    from .search import SearchConfig
    from .teacher_train import TeacherTrainConfig

    parser = _Parser(prog="rnas", description="Robust neural architecture search by cross-layer distillation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    spaces = sub.add_parser("spaces", help="list the search spaces with min/max derived-net params and MACs")
    spaces.add_argument("spaces", nargs="*", metavar="SPACE", help="space names or YAML paths (default: all built-in)")
    spaces.add_argument("--json", action="store_true", help="print JSON instead of a table")
    spaces.set_defaults(func=_cmd_spaces)

    _add_training(sub, "search", SearchConfig, _cmd_search,
                  "search a supernet with cross-layer distillation from a teacher")
    derive = sub.add_parser("derive", help="write RUN/arch.json from a search run and print it")
    derive.add_argument("run", metavar="RUN", help="search run directory")
    derive.add_argument("--mac-target", metavar="MACS",
                        help="budgets, e.g. 5M,6M,7M: one RUN/arch-<budget>.json each, the most probable net "
                             "that fills each budget (greedy by width probabilities)")
    derive.add_argument("--graph", action="store_true",
                        help="also write each arch file's net and tutors as GraphML beside it (RUN/arch.graphml)")
    derive.add_argument("--tutor-derive", choices=("argmax", "balanced", "monotone"), default="argmax",
                        help="tutors from the searched tutor logits: argmax per student layer (the paper), "
                             "balanced (each teacher layer used at most ceil(n_s/n_t) times, Hungarian) or "
                             "monotone (tutor depth never decreases with student depth, dynamic programming); "
                             "a derivation other than argmax adds its name to the file (arch-balanced.json)")
    derive.add_argument("--widths-from", metavar="ARCH",
                        help="take the widths of this arch.json of the same space (e.g. to compare tutor "
                             "searches on one net); writes RUN/arch-widths.json")
    derive.set_defaults(func=_cmd_derive)
    _add_training(sub, "retrain", RetrainConfig, _cmd_retrain,
                  "train a derived architecture from scratch with Eq. 3 (or a baseline, TRADES, MBN)",
                  positional=("arch", "arch.json written by rnas derive"))

    teacher = sub.add_parser("teacher", help="teacher utilities").add_subparsers(
        dest="teacher_command", required=True, parser_class=_Parser)
    _add_training(teacher, "train", TeacherTrainConfig, _cmd_teacher_train,
                  "adversarially train a robust teacher (RobustBench layout + accuracy json)")

    evaluate = sub.add_parser("eval", help="accuracy under attacks (table + optional JSON)")
    evaluate.add_argument("checkpoint", metavar="CKPT", nargs="?", default=argparse.SUPPRESS,
                          help="checkpoint of rnas retrain / teacher train (not needed with --list-attacks)")
    evaluate.add_argument("--list-attacks", action="store_true",
                          help="print the registered attacks (name, threat model, default eps, steps) and exit")
    add_config_flags(evaluate, EvalConfig, skip=("checkpoint",))
    evaluate.add_argument("--resume", action="store_true",
                          help="continue the interrupted evaluation whose progress --json OUT keeps in OUT.state.json "
                               "(same checkpoint and flags), without redoing its finished batches")
    evaluate.set_defaults(func=_cmd_eval)

    scale = sub.add_parser("scale", help="RobustScaling: a WRN-A or RobustResNet-A layout for a MAC budget "
                           "(--flops), or a derived net grown to a budget (ARCH --macs)")
    scale.add_argument("arch", nargs="?", metavar="ARCH", help="an arch.json to grow (with --macs)")
    scale.add_argument("--flops", metavar="MACS",
                       help="the budget in multiply-accumulates, e.g. 5G, 10G (the paper's A1-A4: 5G/10G/20G/40G)")
    scale.add_argument("--macs", metavar="MACS", help="with ARCH: the budget to grow it to, e.g. 20M")
    scale.add_argument("--base", choices=["wrn", "robust_res"], default="wrn",
                       help="with --flops: the block the layout is built from: wrn (WRN-A, basic blocks) or "
                            "robust_res (RobustResNet-A, RobustResBlocks); default wrn")
    scale.add_argument("--width-only", action="store_true", help="with ARCH: reach the budget by widening alone")
    scale.add_argument("--json", action="store_true", help="print JSON instead of a table")
    scale.add_argument("-o", "--output", metavar="FILE", help="also write the JSON to FILE")
    scale.set_defaults(func=_cmd_scale)
    teachers = sub.add_parser("teachers", help="list the teacher zoo (name, input size, classes, mean/std)")
    teachers.add_argument("--json", action="store_true", help="print JSON (a list of objects) instead of a table")
    teachers.set_defaults(func=_cmd_teachers)

    study = sub.add_parser("study", help="a declarative study (searches, arms, fine-tuning, evaluation), resumable")
    study.add_argument("study", metavar="STUDY.yaml", help="the study file (see studies/)")
    study.add_argument("--out", help="study directory (default: runs/<study name>); rerun to continue")
    study.add_argument("--jobs", type=_positive, help="steps run at once (default: the file's jobs, else 1)")
    study.add_argument("--threads", type=_positive, help="torch threads per step (default: cores / jobs)")
    study.add_argument("--data-dir", help="replaces the file's data.data_dir")
    study.add_argument("--model-dir", help="replaces the model_dir of the file's teachers")
    study.add_argument("--dry-run", action="store_true", help="list the steps and which are done; run nothing")
    study.set_defaults(func=_cmd_study)

    quick = sub.add_parser("quickstart", help="the whole pipeline on the embedded digits data, in minutes")
    quick.add_argument("--out", default="rnas-quickstart", help="directory for the run dirs (must not exist)")
    quick.set_defaults(func=_cmd_quickstart)

    report = sub.add_parser("report", help="an HTML page with figures (+ CSV/JSON) of search, retrain and study dirs")
    report.add_argument("inputs", nargs="+", metavar="RUN_OR_STUDY_DIR", help="search / retrain run dirs, study dirs")
    report.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="new or empty directory, or an earlier report's (replaced): index.html, PNGs, CSV, JSON")
    report.set_defaults(func=_cmd_report)

    from .export import FORMATS

    export = sub.add_parser("export", help="the retrained net as one ONNX / TorchScript / .pt2 file, verified")
    export.add_argument("checkpoint", metavar="CKPT", help="RUN/checkpoint.pt of rnas retrain")
    export.add_argument("--format", required=True, choices=tuple(FORMATS),
                        help="; ".join(f"{name}: {f.use}" for name, f in FORMATS.items()))
    export.add_argument("-o", "--out", required=True, metavar="FILE", help="file to write (must not exist)")
    export.add_argument("--input-size", type=_positive, metavar="N",
                        help="image side in pixels (default: the architecture's input size)")
    export.add_argument("--batch", type=_positive, metavar="N",
                        help="fix the batch size to N (default: a dynamic batch dimension)")
    export.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn the engine's exceptions into one line and an exit code (2: bad input,
    3: training diverged, 128+N: stopped by signal N). Under torchrun only rank 0 speaks."""
    import logging

    from .distributed import from_environment, shutdown

    main_rank = from_environment().main
    logging.basicConfig(format="rnas: %(message)s", level=logging.WARNING if main_rank else logging.ERROR)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except USER_ERRORS as err:
        if main_rank:
            print(f"rnas: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        if main_rank:
            print(f"rnas: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handler (export, report, derive ...)
        if main_rank:
            print("rnas: stopped (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as err:  # a bug: one line and the traceback in a file, never a raw traceback
        if os.environ.get("RNAS_DEBUG"):  # the tests set it: a case that reaches here fails them
            raise
        from .rundir import first_line

        if main_rank:
            print(f"rnas: internal error: {type(err).__name__}: {first_line(err)} (traceback in "
                  f"{write_traceback(err)}; please report it)", file=sys.stderr)
        return 1
    finally:
        shutdown()


def write_traceback(err: BaseException) -> str:
    """Write ``err``'s traceback to a new file in the temporary directory; its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="rnas-internal-error-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"rnas {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exception(err, file=fh)
    return path


if __name__ == "__main__":
    sys.exit(main())
