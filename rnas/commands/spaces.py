"""`rnas spaces`: every built-in space with its min/max-width derived nets beside the paper's figures."""


def add_arguments(parser) -> None:
    parser.add_argument("spaces", nargs="*", metavar="SPACE", help="space names or YAML paths (default: all built-in)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from rnas.report.spaces import run as spaces_report

    print(spaces_report(args.spaces, args.json))
    return 0
