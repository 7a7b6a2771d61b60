"""`rnas teachers`: the teacher zoo (name, input size, classes, mean/std, cost), or the RobustBench entries it
loads by name (--robustbench)."""


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (a list of objects) instead of a table")
    parser.add_argument("--robustbench", action="store_true",
                        help="list the RobustBench leaderboard entries --teacher robustbench:NAME loads (offline, "
                             "from MODEL_DIR/<dataset>/<threat>/NAME.pt)")


def run(args) -> int:
    import json

    if args.robustbench:
        from rnas.teachers.robustbench import entry_table, format_entries

        print(json.dumps(entry_table(), indent=1) if args.json else format_entries())
        return 0
    from rnas.teachers import format_teacher_table, teacher_table

    print(json.dumps(teacher_table(), indent=1) if args.json else format_teacher_table())
    return 0
