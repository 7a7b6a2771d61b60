"""Markdown table of a CIFAR-10 study directory (tools/cifar10_study.py) as far as it has got: one row
per retrain run with its epochs, last-epoch loss terms and attention gradient share, and every
evaluation found beside it (eval.json: clean / PGD-20; eval-aa.json: AutoAttack).

    python tools/study_table.py OUT_DIR
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

LABELS = {"ce": "CE only", "kd": "logit KD only", "fixed": "fixed uniform mapping",
          "cl-control": "RNAS-CL, non-robust control teacher"}


def row(run: Path) -> str | None:
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    last = records[-1]
    results = {}
    for name in ("eval.json", "eval-aa.json"):
        if (run / name).exists():
            data = json.loads((run / name).read_text())
            results.update({r["attack"]: (r["accuracy"], r["n"]) for r in data["results"]})
    label = LABELS.get(run.name, run.name.replace("cl-gamma", "RNAS-CL, γ_t = "))

    def cell(key: str) -> str:
        return f"{results[key][0]:.1f} (n={results[key][1]})" if key in results else "–"

    share = last.get("attn_grad_share")
    attn = "–" if "attn" not in last else f"{last['attn']:.4f}"
    return (f"| {label} | {len(records)}/{cfg['epochs']} | {last.get('ce', last['base']):.3f} | "
            f"{attn} | {'–' if share is None else f'{share:.2f}'} | "
            f"{last['val_acc']:.2f} | {cell('clean')} | {cell('pgd20')} | {cell('autoattack')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print("| run | epochs | CE (last epoch) | L_attn | attention share of weight grad | val acc, 5,000 (%) | "
          "clean (%) | PGD-20 (%) | AutoAttack (%) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in sorted(p for p in args.out.iterdir() if p.is_dir() and (p / "config.yaml").exists()
                      and yaml.safe_load((p / "config.yaml").read_text()).get("arch")):
        line = row(run)
        if line:
            print(line)


if __name__ == "__main__":
    main()
