"""The paired comparisons of `rnas report`: for every two arms of one net that ran under the same seeds, per
accuracy column, the difference over seeds (A minus B, in points) with its 95 % t-interval (n_seeds - 1 degrees
of freedom), a verdict read off that interval, and McNemar's exact test on the per-image results within each
seed and pooled over the seeds.

Pooling: the discordant images of every seed are added up (A right and B wrong, and the other way round) and
the pooled split is tested with one exact binomial test (``scipy.stats.binomtest``, p = 1/2, two-sided), as if
each (image, seed) pair were its own pair of trials; the seeds' runs are independent, and a report split is the
same images under every seed, so this is a test of "A and B are equally often right" over all of them. The
interval over seeds is the one a claim rests on: it carries the spread between searches and trainings, which
the per-image test within one seed does not see."""
from __future__ import annotations

import math
import statistics

from rnas.evaluation.eval_state import unpack_hits

LEVEL = 0.95


def t_interval(differences: list[float], level: float = LEVEL) -> dict:
    """Mean, sample sd, the ``level`` t-interval of the mean (n - 1 dof; None with one value) and the t quantile."""
    from scipy import stats

    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return {"mean": mean, "sd": None, "interval": None, "t": None, "seeds": n}
    sd = statistics.stdev(differences)
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    half = t * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "interval": [mean - half, mean + half], "t": t, "seeds": n}


def verdict(interval: list[float] | None) -> str:
    """wins: the interval over seeds is above zero; loses: below it; tie otherwise (or without an interval)."""
    if interval is None:
        return "tie"
    low, high = interval
    return "wins" if low > 0 else "loses" if high < 0 else "tie"


def mcnemar(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value: the binomial test of ``only_a`` of the discordant images at p = 1/2."""
    from scipy import stats

    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def discordant(row_a: dict, row_b: dict) -> tuple[int, int] | None:
    """(images only A got right, only B) of two eval rows of the same images, None without both hit lists."""
    if "hits" not in row_a or "hits" not in row_b or row_a.get("n") != row_b.get("n"):
        return None
    try:
        right_a, right_b = unpack_hits(row_a["hits"], row_a["n"]), unpack_hits(row_b["hits"], row_b["n"])
    except ValueError:
        return None
    return int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())


def compare_pair(rows_a: dict[int, dict], rows_b: dict[int, dict]) -> dict | None:
    """One column of two arms: ``rows_*`` {seed: eval row (accuracy, n, split, hits)}; over the seeds both have,
    the differences, their t-interval and verdict, and McNemar per seed and pooled (None: no seed in common)."""
    seeds = sorted(rows_a.keys() & rows_b.keys())
    if not seeds:
        return None
    diffs = [rows_a[s]["accuracy"] - rows_b[s]["accuracy"] for s in seeds]
    summary = t_interval(diffs)
    per_seed = []
    for seed in seeds:
        same = rows_a[seed].get("split") == rows_b[seed].get("split")
        counts = discordant(rows_a[seed], rows_b[seed]) if same else None
        if counts is not None:
            per_seed.append({"seed": seed, "only_a": counts[0], "only_b": counts[1], "p": mcnemar(*counts)})
    pooled = None
    if per_seed and len(per_seed) == len(seeds):
        only_a, only_b = sum(s["only_a"] for s in per_seed), sum(s["only_b"] for s in per_seed)
        pooled = {"only_a": only_a, "only_b": only_b, "p": mcnemar(only_a, only_b), "per_seed": per_seed}
    splits = sorted({str(r.get("split")) for r in (*[rows_a[s] for s in seeds], *[rows_b[s] for s in seeds])})
    return {"seeds": seeds, "differences": [round(d, 4) for d in diffs], "mean": round(summary["mean"], 4),
            "sd": None if summary["sd"] is None else round(summary["sd"], 4),
            "interval": None if summary["interval"] is None else [round(v, 4) for v in summary["interval"]],
            "t": summary["t"], "level": LEVEL, "verdict": verdict(summary["interval"]), "mcnemar": pooled,
            "split": ", ".join(splits), "n": sorted({rows_a[s]["n"] for s in seeds})}


def paired_arms(groups: list[dict], rows: dict[str, dict[str, dict]], keys: list[str]) -> list[dict]:
    """Every pair of ``groups`` (``over_seeds``' groups) of one net (the folder of their name, space and budget)
    compared column by column; ``rows``: {model name: {column: its eval row}}."""
    out = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            if _net(a) != _net(b):
                continue
            columns = {}
            for key in keys:
                rows_a = {s: rows[m][key] for s, m in zip(a["seeds"], a["models"], strict=True) if key in rows[m]}
                rows_b = {s: rows[m][key] for s, m in zip(b["seeds"], b["models"], strict=True) if key in rows[m]}
                if (found := compare_pair(rows_a, rows_b)) is not None:
                    columns[key] = found
            if columns:
                out.append({"a": a["name"], "b": b["name"], "columns": columns})
    return out


def _net(group: dict) -> tuple:
    """What two arms must share to be compared: the net's folder in the name, its space and MAC budget."""
    return group["name"].rpartition("/")[0], group.get("space"), group.get("budget")
