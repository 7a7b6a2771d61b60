"""The `rnas` command line: the parser is built from one table of commands (rnas/commands/, one module each);
user errors print one line and exit 2. `rnas --help` builds only the table, so it does not load torch."""
from __future__ import annotations

import os
import signal
import sys
from importlib import import_module

from rnas import __version__
from rnas.commands.args import Parser
from rnas.errors import USER_ERRORS, TrainingDiverged

COMMANDS = (  # name, module (add_arguments(parser), run(args) -> exit code), one-line help
    ("spaces", "spaces", "list the search spaces with min/max derived-net params and MACs"),
    ("search", "search", "search a supernet with cross-layer distillation from a teacher"),
    ("derive", "derive", "write RUN/arch.json from a search run and print it"),
    ("retrain", "retrain", "train a derived architecture from scratch with Eq. 3 (or a baseline, TRADES, MBN)"),
    ("teacher", "teacher", "teacher utilities (teacher train: adversarially train a robust teacher)"),
    ("eval", "evaluate", "accuracy under attacks (table + optional JSON)"),
    ("scale", "scale", "RobustScaling: a WRN-A or RobustResNet-A layout for a MAC budget (--flops), or a derived "
                       "net grown to a budget (ARCH --macs)"),
    ("teachers", "teachers", "list the teacher zoo (name, input size, classes, mean/std)"),
    ("study", "study", "a declarative study (searches, arms, fine-tuning, evaluation), resumable"),
    ("quickstart", "quickstart", "the whole pipeline on the embedded digits data, in minutes"),
    ("report", "report", "an HTML page with figures (+ CSV/JSON) of search, retrain and study dirs"),
    ("compare", "compare", "two rnas eval results on the same images, image by image: paired interval, McNemar"),
    ("export", "export", "the retrained net as one ONNX / TorchScript / .pt2 file, verified"),
)


def chosen_command(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word that is not an option), if it names one."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return first if any(first == name for name, _, _ in COMMANDS) else None


def build_parser(argv: list[str] | None = None) -> Parser:
    """The parser; only the command that ``argv`` names gets its flags (each command's module, and so torch, is
    imported only when it runs or shows its --help). ``argv=None``: every command's flags."""
    chosen = None if argv is None else chosen_command(argv)
    parser = Parser(prog="rnas", description="Robust neural architecture search by cross-layer distillation.")
    parser.add_argument("--version", action="version", version=f"rnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, module_name, help_text in COMMANDS:
        command = sub.add_parser(name, help=help_text)
        if argv is None or name == chosen:
            module = import_module(f"rnas.commands.{module_name}")
            module.add_arguments(command)
            command.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn the engine's exceptions into one line and an exit code (2: bad input,
    3: training diverged, 128+N: stopped by signal N). Under torchrun only rank 0 speaks."""
    import logging

    from rnas.runtime.world import environment_place

    main_rank = environment_place()[0] == 0
    logging.basicConfig(format="rnas: %(message)s", level=logging.WARNING if main_rank else logging.ERROR)
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            args = build_parser(argv).parse_args(argv)
            code = args.func(args)
        except SystemExit:  # --help, --version
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # a reader gone early fails here, inside the guard, not at the interpreter's exit
        return code
    except USER_ERRORS as err:
        if main_rank:
            print(f"rnas: error: {err}", file=sys.stderr)
        else:  # rank 0 says it; torchrun stops every rank once one exits, so give rank 0 the time to
            import time

            time.sleep(5)
        return 2
    except TrainingDiverged as err:
        if main_rank:
            print(f"rnas: error: {err}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # stdout closed early (rnas ... | head): a normal end, as for any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handler (export, report, derive ...)
        if main_rank:
            print("rnas: stopped (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as err:  # a bug: one line and the traceback in a file, never a raw traceback
        if (full := _disk_full(err)) is not None:
            if main_rank:
                print(f"rnas: error: {full}", file=sys.stderr)
            return 2
        if os.environ.get("RNAS_DEBUG"):  # the tests set it: a case that reaches here fails them
            raise
        from rnas.runtime.rundir import first_line

        if main_rank:
            print(f"rnas: internal error: {type(err).__name__}: {first_line(err)} (traceback in "
                  f"{write_traceback(err)}; please report it)", file=sys.stderr)
        return 1
    finally:
        if "torch.distributed" in sys.modules:  # a process group exists only once torch.distributed is loaded
            from rnas.runtime.distributed import shutdown

            shutdown()


def _disk_full(err: Exception):
    """A full disk met by a write outside rnas's own checked writes (a library's log file, say) as the
    DiskFull rnas's writes raise, else None. Every checkpoint is written to a temp file and renamed, so the
    last one written is whole."""
    if not isinstance(err, OSError):
        return None
    from pathlib import Path

    from rnas.runtime.rundir import NO_SPACE, DiskFull

    return DiskFull(Path(err.filename or "a file"), err, "every checkpoint already written is intact") \
        if err.errno in NO_SPACE else None


def write_traceback(err: BaseException) -> str:
    """Write ``err``'s traceback to a new file in the temporary directory; its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="rnas-internal-error-", suffix=".txt")
    with os.fdopen(fd, "w", errors="backslashreplace") as fh:  # argv may hold non-UTF-8 bytes
        fh.write(f"rnas {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exception(err, file=fh)
    return path


if __name__ == "__main__":
    sys.exit(main())
