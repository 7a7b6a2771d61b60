"""`rnas compare A.json B.json`: two `rnas eval --json` results on the same images, compared image by image."""


def add_arguments(parser) -> None:
    parser.add_argument("first", metavar="A.json", help="an rnas eval --json result")
    parser.add_argument("second", metavar="B.json", help="another, of the same images (data, split, --n)")
    parser.add_argument("--json", metavar="OUT", help="also write the comparison to this JSON file")


def run(args) -> int:
    from pathlib import Path

    from rnas.errors import UserError
    from rnas.evaluation.paired import compare_rows, format_comparison, read_eval_to_compare
    from rnas.runtime.rundir import atomic_write_json, check_output_file

    if args.json and Path(args.json).resolve() in (Path(args.first).resolve(), Path(args.second).resolve()):
        raise UserError(f"--json {args.json}: is one of the files compared (choose another name; nothing was changed)")
    if args.json:
        check_output_file(args.json, "--json", _earlier_comparison, "an earlier rnas compare result")
    first, second = read_eval_to_compare(args.first), read_eval_to_compare(args.second)
    rows = compare_rows(first, second, args.first, args.second)
    print(format_comparison(rows, args.first, args.second))
    if args.json:
        atomic_write_json(Path(args.json), {"a": args.first, "b": args.second,
                                            "eps_space": first.get("eps_space", "pixel"), "rows": rows})
    return 0


def _earlier_comparison(path) -> bool:
    """Whether ``path`` is what ``rnas compare --json`` wrote (which it may replace; anything else it must not)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"a", "b", "rows"} <= set(data) <= {"a", "b", "eps_space", "rows"}
