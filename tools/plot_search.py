"""Width-probability curves of search runs: one panel per searched block (probability of each width
choice per epoch) and one with the argmax and expected MACs, as a PNG.

    python tools/plot_search.py RUN [RUN ...] -o widths.png

Reads each run's metrics.jsonl (`width_probs`, `argmax_macs`, `expected_macs`); for runs written before
`width_probs` was logged, the per-block probabilities come from the TensorBoard scalars `width/blockNN/W`
(`rnas.report.collect.width_probs_from_tensorboard`, as `rnas report` reads them).
Needs matplotlib (not a dependency of rnas).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def read_run(run: Path) -> dict:
    """{"macs": [(epoch, argmax, expected)], "probs": {block: {width: [p per epoch]}}} of one run."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    macs = [(r["epoch"], r["argmax_macs"], r["expected_macs"]) for r in records]
    probs: dict[int, dict[int, list[float]]] = {}
    choices = json.loads((run / "arch.json").read_text())["width_choices"] if (run / "arch.json").exists() else None
    if choices and not all("width_probs" in r for r in records):
        from rnas.report.collect import width_probs_from_tensorboard

        records = width_probs_from_tensorboard(run / "tb", records, choices)
    searched = [c for c in choices if len(c) > 1] if choices else None
    for r in records:
        for b, row in enumerate(r.get("width_probs", [])):
            widths = searched[b] if searched else list(range(len(row)))
            for w, p in zip(widths, row, strict=True):
                probs.setdefault(b, {}).setdefault(w, []).append(p)
    return {"macs": macs, "probs": probs}


def plot(runs: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [read_run(r) for r in runs]
    nblocks = max(len(d["probs"]) for d in data)
    cols = 5
    rows = 1 + math.ceil(nblocks / cols)
    fig, axes = plt.subplots(rows * len(runs), cols, figsize=(3.2 * cols, 2.3 * rows * len(runs)), squeeze=False)
    for i, (run, d) in enumerate(zip(runs, data, strict=True)):
        top = axes[i * rows]
        for ax in top[1:]:
            ax.axis("off")
        epochs = [e + 1 for e, _, _ in d["macs"]]
        top[0].plot(epochs, [m / 1e6 for _, m, _ in d["macs"]], "o-", label="argmax net")
        top[0].plot(epochs, [m / 1e6 for _, _, m in d["macs"]], "s--", label="E[MACs]")
        top[0].set_title(f"{run.name}: MACs (M)", fontsize=9)
        top[0].legend(fontsize=7)
        for b in range((rows - 1) * cols):
            ax = axes[i * rows + 1 + b // cols][b % cols]
            if b not in d["probs"]:
                ax.axis("off")
                continue
            for width, series in sorted(d["probs"][b].items(), reverse=True):
                ax.plot(range(1, len(series) + 1), series, ".-", label=str(width))
            ax.set_ylim(0, 1)
            ax.set_title(f"{run.name} block {b}", fontsize=8)
            ax.legend(fontsize=6, title="width", title_fontsize=6)
    fig.supxlabel("search epoch")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("widths.png"))
    args = parser.parse_args()
    plot(args.runs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
