"""The defaults that README.md and docs/ state, checked against the code: every "`--flag X` (the default)",
"`--flag` (default X)" and "`--a`, `--b` (both X)" in prose against the --help of the commands it speaks of
(the command the span names, else those its section's heading names, else every command with the flag).

    python tools/check_docs.py                   # tests/test_docs.py runs the same checks

Prints one line per mismatch and exits 1 if there is any, 0 if none.
"""
from __future__ import annotations

import argparse
import re
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# `[rnas CMD] --flag [value]` followed by "(the default", "(default VALUE" or "(both VALUE"
FLAG_SPAN = re.compile(r"`(?:rnas ([a-z][a-z ]*?) )?(--[a-z][\w-]*)(?: ([^`]*))?`")
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


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    problems, checked = check_defaults()
    print(f"defaults: {checked} statements checked against --help", flush=True)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
