"""`rnas compare A.json B.json`: two evaluations of the same images compared image by image. Per (attack, eps)
row both ran: the accuracies, their difference with a 95 % interval from the paired per-image differences,
how many images only A and only B got right, and McNemar's exact test of "A and B are equally robust". Two
nets at 13 % and 11 % AutoAttack on 1,000 images are ~1.4 standard errors apart when each number is read on
its own; on the same images most of that noise is shared, and the paired interval says how much is left."""
from __future__ import annotations

import math
import re
from pathlib import Path

from rnas.errors import UserError
from rnas.evaluation.eval_state import unpack_hits
from rnas.evaluation.results import eps_text, read_eval, row_label

# the fields of an eval JSON that say which images it attacked (a file written before the held-out splits has
# none of the last four: None in both)
SAME_IMAGES = ("data", "split", "val_size", "n", "val_select", "val_report", "split_seed", "split_pool")


def mcnemar_p(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value: with ``only_a + only_b`` images right in one evaluation only, each as
    likely to be A's as B's, the chance of a split at least as uneven as this one."""
    k = only_a + only_b
    if k == 0:
        return 1.0
    tail = sum(math.comb(k, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2 ** k)


def paired_interval(only_a: int, only_b: int, n: int) -> tuple[float, float]:
    """95 % normal interval (percentage points) of accuracy A minus accuracy B from the n per-image
    differences (+1 only A right, -1 only B right, 0 otherwise)."""
    diff = (only_a - only_b) / n
    var = ((only_a + only_b) - n * diff * diff) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(max(var, 0.0) / n)
    return 100 * (diff - half), 100 * (diff + half)


def compare_rows(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> list[dict]:
    """The rows both eval JSONs hold, compared; a one-line UserError when they attacked different images or
    have no row in common, or when a row's ``hits`` do not add up to its accuracy."""
    for key in SAME_IMAGES:
        there, here = _images_field(a, key), _images_field(b, key)
        if there != here:
            raise UserError(f"{name_a} and {name_b} evaluated different images ({key} {there!r} in A, "
                            f"{here!r} in B): compare evaluations of the same split, --val-size and --n")
    if (space := a.get("eps_space", "pixel")) != b.get("eps_space", "pixel"):
        raise UserError(f"{name_a} and {name_b} measured eps differently (--eps-space {space} in A, "
                        f"{b.get('eps_space', 'pixel')} in B): their attacks are not the same")
    rows_b = {_key(r): r for r in b["results"]}
    out = []
    for row_a in a["results"]:
        row_b = rows_b.get(_key(row_a))
        if row_b is None:
            continue
        row = {"attack": row_a["attack"], "eps": row_a.get("eps", 0.0),
               **{k: row_a[k] for k in ("steps", "pixel_eps") if k in row_a}, "n": a["n"],
               "a": row_a["accuracy"], "b": row_b["accuracy"],
               "difference": round(row_a["accuracy"] - row_b["accuracy"], 2)}
        if "hits" in row_a and "hits" in row_b:
            right_a, right_b = _hits(row_a, a["n"], name_a), _hits(row_b, a["n"], name_b)
            only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
            low, high = paired_interval(only_a, only_b, a["n"])
            row.update(only_a=only_a, only_b=only_b, interval=[round(low, 2), round(high, 2)],
                       p=mcnemar_p(only_a, only_b))
        out.append(row)
    if not out:
        raise UserError(f"{name_a} and {name_b} have no attack at the same eps in common")
    return out


def _key(row: dict) -> tuple:
    """What makes two rows the same attack: its name, eps, steps and per-channel pixel budget."""
    pixel = tuple(round(float(e), 8) for e in row.get("pixel_eps") or ())
    return row["attack"], round(float(row.get("eps", 0.0)), 8), row.get("steps"), pixel


def _images_field(data: dict, key: str):
    """``data[key]``; for val_size, in a file written before rnas recorded it, the N of its split_source's
    "last N training images"."""
    if key == "val_size" and data.get("val_size") is None and data.get("split") == "val":
        found = re.search(r"last (\d+) training images", str(data.get("split_source", "")))
        return int(found.group(1)) if found else None
    return data.get(key)


def _hits(row: dict, n: int, name: str):
    try:
        right = unpack_hits(row["hits"], n)
    except ValueError as err:
        raise UserError(f"{name}: {row['attack']}: {err} (a damaged or edited eval JSON)") from None
    if abs(100.0 * int(right.sum()) / n - row["accuracy"]) > 0.006:
        raise UserError(f"{name}: {row['attack']}: its hits give {100.0 * int(right.sum()) / n:.2f} %, its accuracy "
                        f"says {row['accuracy']} (a damaged or edited eval JSON)")
    return right


def read_eval_to_compare(path: str) -> dict:
    """An `rnas eval --json` file, or a one-line UserError naming it."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file (an rnas eval --json result)")
    data = read_eval(Path(path))
    if data is None or not isinstance(data.get("n"), int) or isinstance(data["n"], bool):
        raise UserError(f"{path}: not an rnas eval --json result")
    if data["n"] < 1:
        raise UserError(f"{path}: n {data['n']}: no images evaluated, nothing to compare")
    return data


def format_comparison(rows: list[dict], name_a: str, name_b: str) -> str:
    """The table `rnas compare` prints."""
    lines = [f"A: {name_a}", f"B: {name_b}", f"on the same {rows[0]['n']:,} images",
             f"{'attack':14s} {'eps':>9s} {'A %':>7s} {'B %':>7s} {'A-B':>7s} {'95 % interval':>16s} "
             f"{'only A':>7s} {'only B':>7s} {'McNemar p':>10s}"]
    for r in rows:
        eps = eps_text(r["eps"], "pixel_eps" in r)
        if "p" in r:
            low, high = r["interval"]
            interval = f"[{low:+.2f}, {high:+.2f}]"
            paired = f"{interval:>16s} {r['only_a']:7d} {r['only_b']:7d} {r['p']:10.3g}"
        else:
            paired = f"{'-':>16s} {'-':>7s} {'-':>7s} {'-':>10s}"
        lines.append(f"{row_label(r):14s} {eps:>9s} {r['a']:7.2f} {r['b']:7.2f} {r['difference']:+7.2f} {paired}")
    if any("p" not in r for r in rows):
        lines.append("rows with '-': one of the files has no per-image results for them (evaluated before rnas "
                     "kept them); evaluate it again for the paired numbers")
    return "\n".join(lines)
