"""Why a tutor objective collapses or spreads: the arch-step gradient each objective gives the tutor logits
at one search checkpoint, split into the part every student row shares (each teacher column's mean over
the rows) and the rest.

    python tools/tutor_gradients.py RUN [--batches 8] [--objectives paper,standardised,robust] [--fresh]

Per objective, averaged over --batches training batches of the run's own data: ``shared`` = the share of
the gradient's squared norm in its column means (1: every row is pushed towards the same teacher taps, so
the assignment collapses; 0: no tap is preferred by everyone), the tap the shared part favours most, and
how many distinct taps a descent step would favour per row (argmin of each row of the gradient).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnas.config import read_run_config  # noqa: E402
from rnas.data import keyed_generator  # noqa: E402
from rnas.engine.search import SearchConfig, Searcher, frozen_bn_statistics  # noqa: E402
from rnas.method.tutor_robust import lookahead_tutor_gradient  # noqa: E402
from rnas.method.tutors import TUTOR_OBJECTIVES  # noqa: E402
from rnas.runtime.rundir import load_checkpoint  # noqa: E402


def tutor_gradient(searcher: Searcher, objective: str, x, y, step: int) -> torch.Tensor:
    """The arch step's gradient on the tutor logits under ``objective`` for one batch (nothing is updated)."""
    searcher.tutor_objective = TUTOR_OBJECTIVES[objective]
    q, maps = searcher.teacher_targets(x)
    n_w, n_a = searcher.parts(len(y))
    arch = (x[n_w:], y[n_w:], (q[n_w:], maps[n_w:]), n_a)
    with frozen_bn_statistics(searcher.supernet):
        if searcher.tutor_objective.hypergradient:
            weight = (x[:n_w], y[:n_w], (q[:n_w], maps[:n_w]), n_w)
            grad, _ = lookahead_tutor_gradient(searcher, weight, arch, keyed_generator(x.device, 0, step, 2))
            return grad
        total = searcher.objective(*arch[:3], n_a, keyed_generator(x.device, 0, step, 1), part="arch")["total"]
        (grad,) = torch.autograd.grad(total, [searcher.tutor.tutor_logits])
        return grad


def decompose(grad: torch.Tensor) -> dict:
    shared = grad.mean(0, keepdim=True).expand_as(grad)
    total = float(grad.square().sum())
    return {"shared": round(float(shared.square().sum()) / max(total, 1e-30), 4),
            "shared_favours": int((-shared[0]).argmax()),
            "distinct_descent_taps": len(set((-grad).argmax(1).tolist()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--objectives", default="paper,standardised,robust")
    parser.add_argument("--fresh", action="store_true", help="at the run's initialisation, not its checkpoint")
    args = parser.parse_args()
    cfg = SearchConfig(**read_run_config(SearchConfig, args.run / "config.yaml", "search"))
    cfg = dataclasses.replace(cfg, workers=0)
    ckpt = load_checkpoint(args.run / "checkpoint.pt")
    searcher = Searcher.from_config(cfg)
    if args.fresh:
        ckpt = {**ckpt, "epoch": 0}
    else:
        searcher.load_state(ckpt)
    searcher.supernet.train()
    sums = {o: None for o in args.objectives.split(",")}
    for step, (x, y) in enumerate(searcher.loader.epoch(ckpt["epoch"])):
        if step == args.batches:
            break
        for objective in sums:
            g = tutor_gradient(searcher, objective, x, y, step)
            sums[objective] = g if sums[objective] is None else sums[objective] + g
    out = {"run": str(args.run), "epoch": ckpt["epoch"], "batches": args.batches,
           "teacher_layers": ckpt["teacher_layers"],
           "objectives": {o: decompose(g / args.batches) for o, g in sums.items()}}
    searcher.close()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
