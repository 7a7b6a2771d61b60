"""`rnas teachers`: the teacher zoo (name, input size, classes, mean/std, cost)."""


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (a list of objects) instead of a table")


def run(args) -> int:
    from rnas.teachers import format_teacher_table, teacher_table

    if args.json:
        import json

        print(json.dumps(teacher_table(), indent=1))
    else:
        print(format_teacher_table())
    return 0
