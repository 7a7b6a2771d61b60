"""`rnas spaces`: every built-in space with its min/max-width derived nets beside the paper's figures."""
from __future__ import annotations

import json

from search_spaces import available_spaces, load_space
from supernets import Network


def space_summary(name: str) -> dict:
    """Depth, width choices and exact params/MACs of the min- and max-width derived nets of a space."""
    spec = load_space(name)
    net = Network(spec)
    largest = [0] * len(net.searched_blocks)
    smallest = [len(b.width_choices) - 1 for b in net.searched_blocks]
    (max_params, max_macs), (min_params, min_macs) = net.cost(largest), net.cost(smallest)
    return {"space": spec.name, "depth": "-".join(map(str, spec.depths)),
            "choices": [list(s.widths[0]) for s in spec.stages], "block": spec.stages[0].block.type,
            "input_size": spec.input_size, "min": {"params": min_params, "macs": min_macs},
            "max": {"params": max_params, "macs": max_macs},
            "paper": {k: spec.paper[k] for k in ("params", "macs") if k in spec.paper}}


def _placement(value: float | None, low: int, high: int) -> str:
    if value is None:
        return "-"
    if value < low:
        return f"{100 * (value / low - 1):+.1f}% below"
    if value > high:
        return f"{100 * (value / high - 1):+.1f}% above"
    return "inside"


def _millions(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x / 1e6:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    header = ("space", "depth", "block", "choices per stage", "params min-max (M)", "MACs min-max (M)",
              "paper params/MACs (M)", "paper params", "paper MACs")
    lines = [header]
    for r in rows:
        pp, pm = r["paper"].get("params"), r["paper"].get("macs")
        choices = " | ".join(",".join(map(str, c)) if len(c) <= 4 else f"{c[0]}..{c[-1]} ({len(c)})"
                             for c in r["choices"])
        lines.append((r["space"], r["depth"], r["block"], choices,
                      f"{r['min']['params'] / 1e6:.3f}-{r['max']['params'] / 1e6:.3f}",
                      f"{r['min']['macs'] / 1e6:.2f}-{r['max']['macs'] / 1e6:.2f}",
                      f"{_millions(pp, 2)} / {_millions(pm, 2)}",
                      _placement(pp, r["min"]["params"], r["max"]["params"]),
                      _placement(pm, r["min"]["macs"], r["max"]["macs"])))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines)


def run(spaces: list[str], as_json: bool) -> str:
    """The report for ``spaces`` (names or YAML paths; default: every built-in space)."""
    rows = [space_summary(name) for name in spaces or available_spaces()]
    return json.dumps(rows, indent=2) if as_json else format_table(rows)
