"""Reading `rnas eval --json` results back: the checks a reader (rnas report, rnas compare) makes of a file."""
from __future__ import annotations

from pathlib import Path

from rnas.errors import UserError
from rnas.runtime.rundir import read_json


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_eval(data) -> bool:
    """An `rnas eval --json` file: a mapping with a "results" list."""
    return isinstance(data, dict) and isinstance(data.get("results"), list)


def read_eval(path: Path) -> dict | None:
    """An `rnas eval --json` file with its rows checked, or None for a JSON file that is not one."""
    data = read_json(path)
    if not is_eval(data):
        return None
    for number, row in enumerate(data["results"]):
        problem = ("not an object" if not isinstance(row, dict) else
                   "attack is not a name" if not isinstance(row.get("attack"), str) else
                   "accuracy is not a number" if not is_number(row.get("accuracy")) else
                   "eps is not a number" if "eps" in row and not is_number(row["eps"]) else
                   "n is not a whole number" if "n" in row and not isinstance(row["n"], int) else None)
        if problem:
            raise UserError(f"{path}: results[{number}]: {problem} (a damaged or edited eval JSON)")
    return data


def row_label(row: dict) -> str:
    """A result row's attack as the tables print it: cw40 for CW with its steps, else the attack's name."""
    return f"cw{row['steps']}" if row["attack"] == "cw" else row["attack"]


def eps_text(eps: float, normalized: bool = False) -> str:
    """'8/255', or '8/255 n' for a budget on normalised inputs; '-' for none."""
    if eps == 0:
        return "-"
    scaled = eps * 255
    text = f"{round(scaled)}/255" if abs(scaled - round(scaled)) < 1e-6 else f"{eps:g}"
    return f"{text} n" if normalized else text
