"""`rnas report RUN_OR_STUDY_DIR... -o DIR`: an HTML page with figures (+ CSV/JSON) of search, retrain and
study dirs."""


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="RUN_OR_STUDY_DIR", help="search / retrain run dirs, study dirs")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="new or empty directory, or an earlier report's (replaced): index.html, PNGs, CSV, JSON")


def run(args) -> int:
    from rnas.report.collect import write_report

    print(f"wrote {write_report(args.inputs, args.out)}")
    return 0
