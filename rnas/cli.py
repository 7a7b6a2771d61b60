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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnas", description="Robust neural architecture search by cross-layer distillation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    spaces = sub.add_parser("spaces", help="list the search spaces with min/max derived-net params and MACs")
    spaces.add_argument("spaces", nargs="*", metavar="SPACE", help="space names or YAML paths (default: all built-in)")
    spaces.add_argument("--json", action="store_true", help="print JSON instead of a table")
    spaces.set_defaults(func=_cmd_spaces)
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
