"""The `rnas` command line. Each subcommand is a small function; user errors print one line, exit 2."""
from __future__ import annotations

import argparse
import sys

from .errors import USER_ERRORS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_spaces(args) -> int:
    from .spaces_report import run

    print(run(args.spaces, args.json))
    return 0


def _cmd_search(args) -> int:
    from pathlib import Path

    from .config import check_resume_overrides, read_run_config, resolve_config
    from .rundir import prepare_run_dir
    from .search import SearchConfig, run_search

    if args.resume:
        run = prepare_run_dir(args.resume, resume=True)
        base = read_run_config(SearchConfig, Path(run) / "config.yaml")
        cfg = resolve_config(SearchConfig, args, base)
        cfg.out = str(run)
        check_resume_overrides(base, cfg)
    else:
        cfg = resolve_config(SearchConfig, args)
        run = prepare_run_dir(cfg.out, resume=False)
    run_search(cfg, run, resume=bool(args.resume))
    print(f"search finished: {run}  (next: rnas derive {run})")
    return 0


def _cmd_derive(args) -> int:
    from .derive_run import format_arch, write_arch

    path, arch = write_arch(args.run)
    print(format_arch(arch))
    print(f"\nwrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnas", description="Robust neural architecture search by cross-layer distillation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    spaces = sub.add_parser("spaces", help="list the search spaces with min/max derived-net params and MACs")
    spaces.add_argument("spaces", nargs="*", metavar="SPACE", help="space names or YAML paths (default: all built-in)")
    spaces.add_argument("--json", action="store_true", help="print JSON instead of a table")
    spaces.set_defaults(func=_cmd_spaces)

    from .config import add_config_flags
    from .search import SearchConfig

    search = sub.add_parser("search", help="search a supernet with cross-layer distillation from a teacher")
    add_config_flags(search, SearchConfig)
    search.add_argument("--config", metavar="FILE", help="YAML file whose keys are flag names; flags override it")
    search.add_argument("--resume", metavar="RUN", help="resume the run in RUN exactly where it stopped")
    search.set_defaults(func=_cmd_search)

    derive = sub.add_parser("derive", help="write RUN/arch.json from a search run and print it")
    derive.add_argument("run", metavar="RUN", help="search run directory")
    derive.set_defaults(func=_cmd_derive)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"rnas: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
