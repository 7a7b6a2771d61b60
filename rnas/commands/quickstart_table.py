"""The quickstart's setting, its table and the expected ranges beside each figure: the lowest and highest value
that 5 seeds of the same run gave (rnas/resources/quickstart_reference.json, written by
tools/quickstart_reference.py), and whether a result lies inside them."""
from __future__ import annotations

import json
from importlib import resources

EPS_255 = 24  # the l_inf budget in /255 of teacher training and evaluation: plain CE is near 0 % under PGD-20 here
TEACHER_EPOCHS = 8
TEACHER_BATCH = 32  # N-FGSM at this budget learns in 8 epochs of batches of 32, not of 64
SEARCH_EPOCHS = 3
RETRAIN_EPOCHS = 6
AUTOATTACK_N = 10  # AutoAttack standard is thorough and slow on a CPU: a subset of the students, as the table says
REFERENCE_FILE = "quickstart_reference.json"
COLUMNS = ("params", "macs", "clean", "pgd20", "pgd20_subset", "autoattack_subset")  # the figures a row may hold


def setting() -> dict:
    """What a quickstart run depends on besides its seed (a reference measured for another setting is not used)."""
    return {"eps_255": EPS_255, "teacher_epochs": TEACHER_EPOCHS, "teacher_batch": TEACHER_BATCH,
            "search_epochs": SEARCH_EPOCHS, "retrain_epochs": RETRAIN_EPOCHS, "autoattack_n": AUTOATTACK_N}


def load_reference(text: str | None = None) -> dict | None:
    """The committed 5-seed measurement if it was measured in this setting, else None."""
    if text is None:
        path = resources.files("rnas.resources") / REFERENCE_FILE
        if not path.is_file():
            return None
        text = path.read_text()
    reference = json.loads(text)
    return reference if reference.get("setting") == setting() and len(reference.get("seeds", {})) >= 5 else None


def ranges(reference: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """model -> column -> (lowest, highest) over the reference's seeds."""
    found: dict[str, dict[str, list[float]]] = {}
    for run in reference["seeds"].values():
        for row in run["rows"]:
            columns = found.setdefault(row["model"], {})
            for column in COLUMNS:
                if column in row:
                    columns.setdefault(column, []).append(row[column])
    return {model: {c: (min(v), max(v)) for c, v in columns.items()} for model, columns in found.items()}


def outside(row: dict, model_ranges: dict[str, tuple[float, float]]) -> list[str]:
    """The columns of ``row`` that lie outside their range (rounded as printed); every column without one too."""
    missing = [c for c in COLUMNS if c in row and c not in model_ranges]
    return missing + [c for c in COLUMNS if c in row and c in model_ranges
                      and not model_ranges[c][0] - 0.05 <= row[c] <= model_ranges[c][1] + 0.05]


def _cells(row: dict) -> list[str]:
    return [f"{row['params'] / 1e6:.3f}M" if "params" in row else "-",
            f"{row['macs'] / 1e6:.2f}M" if "macs" in row else "-",
            *(f"{row[c]:.1f}" if c in row else "-" for c in COLUMNS[2:])]


def _range_cells(model_ranges: dict) -> list[str]:
    scale = {"params": (1e6, 3, "M"), "macs": (1e6, 2, "M")}
    cells = []
    for column in COLUMNS:
        if column not in model_ranges:
            cells.append("-")
            continue
        div, digits, unit = scale.get(column, (1, 1, ""))
        low, high = model_ranges[column]
        cells.append(f"{low / div:.{digits}f}-{high / div:.{digits}f}{unit}")
    return cells


def format_table(rows: list[dict], reference: dict | None) -> str:
    """Accuracies in % at eps EPS_255/255; under each row the range of the reference's seeds and the verdict."""
    n, k = rows[0]["n"], AUTOATTACK_N
    widths = (30, 13, 13, 11, 12, 11, 15)
    head = [f"S3 on digits, eps {EPS_255}/255", "params", "MACs", f"clean n={n}", f"PGD-20 n={n}", f"PGD-20 n={k}",
            f"AutoAttack n={k}"]

    def line(cells: list[str]) -> str:
        return " ".join(f"{c:{w}s}" if i == 0 else f"{c:>{w}s}" for i, (c, w) in enumerate(zip(cells, widths,
                                                                                                 strict=True)))
    lines = [line(head)]
    lines.append("-" * len(lines[0]))
    found = ranges(reference) if reference else {}
    seeds = len(reference["seeds"]) if reference else 0
    for row in rows:
        lines.append(line([row["model"], *_cells(row)]))
        if row["model"] in found:
            off = outside(row, found[row["model"]])
            verdict = "yes" if not off else "no (" + ", ".join(off) + ")"
            lines.append(line([f"  range of {seeds} seeds", *_range_cells(found[row["model"]])])
                         + f"  within: {verdict}")
    if not reference:
        lines.append("(no reference measurement for this setting: rnas/resources/quickstart_reference.json)")
    return "\n".join(lines)
