"""The figures and defaults that README.md and docs/ state, checked against the code and the measurements in
the repository. Every "`--flag X` (the default)", "`--flag` (default X)" and "`--a`, `--b` (both X)" in prose
against the --help of the commands it speaks of (the command the span names, else those its section's heading
names, else every command with the flag); the README's quickstart table and its run times against the
committed 5-seed measurement (rnas/resources/quickstart_reference.json); the README's time of the fast suite.

    python tools/check_docs.py                   # the static checks (tests/test_docs.py runs the same)
    python tools/check_docs.py --run-quickstart  # also run rnas quickstart: its figures in the ranges, its time
    python tools/check_docs.py --time-tests      # also time pytest -n 2 -m "not slow" against the README's figure

Prints one line per mismatch and exits 1 if there is any, 0 if none.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# `[rnas CMD] --flag [value]` followed by "(the default", "(default VALUE" or "(both VALUE"
FLAG_SPAN = re.compile(r"`(?:rnas ([a-z][a-z ]*?) )?(--[a-z][\w-]*)(?: ([^`]*))?`")
SUITE_TIME = re.compile(r"`-m \"not slow\"`.*?finishes in under (\d+) minutes on 2 idle cores")
QUICKSTART_TIME = re.compile(r"`rnas quickstart` takes under (\d+) minutes on 2 CPU cores")
IDLE_TIMES = re.compile(r"on 2 idle cores about (\d+)[–-](\d+) s")
STATED = re.compile(r"\s*\((?:the default|default(?=[;:,)])|default:? `?([^`;:,)\s]+)|both ([^;:,)\s]+))")


def command_defaults() -> dict[str, dict[str, str]]:
    """'search' / 'teacher train' / ... -> {flag: its default as --help shows it} (flags without one left out)."""
    from rnas.cli import build_parser

    found: dict[str, dict[str, str]] = {}

    def walk(parser, path: list[str]) -> None:
        flags = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            default = shown_default(action)
            if default is not None:
                flags.update(dict.fromkeys(action.option_strings, default))
        if path:
            found[" ".join(path)] = flags
    walk(build_parser(None), [])
    return found


def shown_default(action) -> str | None:
    """The default that an action's --help states: argparse's own, else a config flag's '(default: X; ...)'."""
    if not action.option_strings or isinstance(action.default, bool):
        return None
    if action.default not in (None, argparse.SUPPRESS):
        return str(action.default)
    notes = re.findall(r" \(default: ([^;()]+)[;)]", action.help or "")  # the config flags' notes come last
    return notes[-1].strip() if notes else None


def same_value(stated: str, actual: str) -> bool:
    """'1000' is 1000.0, '8/255' is 0.0313..., '5,000' is 5000; words compare as words."""
    def number(text: str):
        try:
            return Fraction(text.replace(",", ""))
        except (ValueError, ZeroDivisionError):
            return None
    a, b = number(stated), number(actual)
    if a is not None and b is not None:
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return stated.strip().lower() == actual.strip().lower()


def paragraphs(page: Path):
    """(first line number, text, the commands its section's heading names) of each prose paragraph."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_docs import split_fences

    prose = split_fences(page)[0]
    heading_commands: list[str] = []
    lines: list[tuple[int, str]] = []
    for number, line in [*prose, (0, "")]:
        if re.match(r"^ {0,3}#{1,6}\s", line) or not line.strip():
            if lines:
                yield lines[0][0], " ".join(text.strip() for _, text in lines), heading_commands
            lines = []
            if line.strip():
                heading_commands = re.findall(r"`rnas ([a-z][a-z ]*?)`", line)
        else:
            lines.append((number, line))


def default_statements(pages=PAGES):
    """(where, commands in scope or None for all, flag, stated value) of every default stated in prose."""
    for page in pages:
        for number, text, heading_commands in paragraphs(page):
            previous_end, run = -1, []  # the spans of a "`--a`, `--b` (both X)" list
            for span in FLAG_SPAN.finditer(text):
                run = run if text[previous_end:span.start()].strip() in (",", "and", ", and") else []
                run.append(span)
                previous_end = span.end()
                stated = STATED.match(text, span.end())
                if not stated:
                    continue
                where = f"{page.relative_to(ROOT).as_posix()}:{number}"
                if stated[2]:  # both X: every span of the list
                    for item in run:
                        yield where, scope(item, heading_commands), item[2], stated[2]
                    continue
                value = stated[1] or first_choice(span[3])
                if value:
                    yield where, scope(span, heading_commands), span[2], value


def first_choice(text: str | None) -> str | None:
    """'balanced|argmax' -> 'balanced'; 'cpu' -> 'cpu'; None or '' -> None."""
    words = (text or "").split("|")[0].split()
    return words[0] if words else None


def scope(span, heading_commands: list[str]) -> list[str] | None:
    """The commands a flag span speaks of: the one it names, else its section heading's, else every command."""
    if span[1]:
        return [span[1]]
    return heading_commands or None


def check_defaults(pages=PAGES, defaults=None) -> tuple[list[str], int]:
    """(mismatches, number of statements checked) of the defaults stated in ``pages``."""
    defaults = command_defaults() if defaults is None else defaults
    problems, checked = [], 0
    for where, commands, flag, value in default_statements(pages):
        names = commands if commands is not None else [c for c, flags in defaults.items() if flag in flags]
        unknown = [c for c in names if c not in defaults]
        if unknown:
            problems.append(f"{where}: `rnas {unknown[0]}` is not a command")
            continue
        having = [c for c in names if flag in defaults[c]]
        if not having:
            problems.append(f"{where}: {flag} states a default, but no command of {names or 'rnas'} has one")
            continue
        checked += 1
        for command in having:
            if not same_value(value, defaults[command][flag]):
                problems.append(f"{where}: {flag} is stated to default to {value}; `rnas {command} --help` "
                                f"says {defaults[command][flag]}")
    return problems, checked


def readme_claims(text: str) -> dict:
    """The README's checked figures: the quickstart table block, its time claims, the fast suite's minutes."""
    block = re.search(r"```\n(S3 on digits, eps .*?)```", text, re.S)
    found = {"table": block[1].rstrip("\n") if block else None}
    for name, pattern in (("suite_minutes", SUITE_TIME), ("quickstart_minutes", QUICKSTART_TIME),
                          ("idle_times", IDLE_TIMES)):
        match = pattern.search(" ".join(text.split()))
        found[name] = tuple(int(g) for g in match.groups()) if match else None
    return found


def check_quickstart_claims(text: str, reference: dict | None) -> list[str]:
    """The README's quickstart table is the reference's seed 0 with the reference's ranges; the idle times it
    states are those the reference's CPU times give (none where no seed ran whole) and inside its minutes."""
    from rnas.commands.quickstart import idle_seconds
    from rnas.commands.quickstart_table import format_table

    claims = readme_claims(text)
    if reference is None:
        return ["rnas/resources/quickstart_reference.json: absent, of another setting or of fewer than 5 seeds"]
    problems = []
    expected = format_table(reference["seeds"]["0"]["rows"], reference)
    if claims["table"] != expected:
        problems.append("README.md: the quickstart table is not the reference's seed 0; it should read:\n" + expected)
    idle = [idle_seconds(run["cpu_seconds"]) for run in reference["seeds"].values() if "cpu_seconds" in run]
    estimated = (round(min(idle)), round(max(idle))) if idle else None
    if claims["idle_times"] != estimated:
        problems.append(f"README.md: the quickstart's times on 2 idle cores read {claims['idle_times']}; the "
                        f"reference's CPU times give {estimated}")
    if claims["quickstart_minutes"] is None:
        problems.append("README.md: no '`rnas quickstart` takes under N minutes on 2 CPU cores'")
    elif estimated is not None and estimated[1] > 60 * claims["quickstart_minutes"][0]:
        problems.append(f"README.md: the quickstart is said to take under {claims['quickstart_minutes'][0]} minutes; "
                        f"on 2 idle cores the reference's CPU times give {estimated} s")
    if claims["suite_minutes"] is None:
        problems.append('README.md: no \'`-m "not slow"` ... finishes in under N minutes on 2 idle cores\'')
    return problems


def run_quickstart_against(reference: dict, minutes: int) -> list[str]:
    """Run `rnas quickstart` (seed 0) in a temporary directory: the figures outside the ranges, a time over."""
    from rnas.commands.quickstart_table import outside, ranges

    with tempfile.TemporaryDirectory(prefix="rnas-check-docs-") as work:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rnas", "quickstart", "--out", f"{work}/qs"], check=True, cwd=ROOT)
        seconds = time.perf_counter() - started
        rows = json.loads(Path(work, "qs", "summary.json").read_text())["rows"]
    found, problems = ranges(reference), []
    for row in rows:
        off = outside(row, found.get(row["model"], {}))
        if off:
            problems.append(f"quickstart: {row['model']}: {', '.join(f'{c} {row[c]}' for c in off)} outside the "
                            "range of the reference's seeds")
    print(f"quickstart: {seconds:.0f} s (the README: under {minutes} minutes)")
    return problems + ([f"quickstart: {seconds:.0f} s, over the README's {minutes} minutes"]
                       if seconds > 60 * minutes else [])


def time_tests(minutes: int) -> list[str]:
    """Run the fast suite as the README says; its wall time over the README's minutes is a problem."""
    import resource

    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-m", "not slow", "-q"], cwd=ROOT)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"fast suite: {seconds:.0f} s, {cpu:.0f} CPU-seconds, exit {done.returncode} (the README: under {minutes} "
          f"minutes; the load average was {os.getloadavg()[0]:.1f})")
    return ([f"fast suite: exit {done.returncode}"] if done.returncode else []) + \
        ([f"fast suite: {seconds:.0f} s, over the README's {minutes} minutes"] if seconds > 60 * minutes else [])


def main(argv: list[str] | None = None) -> int:
    from rnas.commands.quickstart_table import load_reference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-quickstart", action="store_true", help="run rnas quickstart and compare it too")
    parser.add_argument("--time-tests", action="store_true", help='time pytest -n 2 -m "not slow" too')
    args = parser.parse_args(argv)
    problems, checked = check_defaults()
    print(f"defaults: {checked} statements checked against --help", flush=True)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    reference = load_reference()
    problems += check_quickstart_claims(text, reference)
    claims = readme_claims(text)
    if args.run_quickstart and reference and claims["quickstart_minutes"]:
        problems += run_quickstart_against(reference, claims["quickstart_minutes"][0])
    if args.time_tests and claims["suite_minutes"]:
        problems += time_tests(claims["suite_minutes"][0])
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
