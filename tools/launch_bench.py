"""`python tools/bench.py --launch [--json]`: what a search step and a retrain step cost the host, eager against
captured (`--graphs on`), measured on any device (a CPU too) with rnas.runtime.audit:

- graph_breaks: torch._dynamo.explain of the captured weight step's and arch step's losses (rnas search), the
  teacher forward and the retrain step's loss (rnas retrain, RNAS-CL with a fixed mapping);
- host_syncs_per_step: reads of a tensor's value on the host (.item(), .tolist(), bool(t), ...) in one search
  step and one retrain step;
- op_ratio: aten operator calls (torch.profiler, nested calls included) of the full search step (f) over those of
  the teacher forward (d) plus a standalone max-width student step (a), the same kind of step on both sides
  (eager: PyTorch's default SGD, as a user's loop would run; captured: the forward and loss compiled, fused SGD);
  leaf_op_ratio the same over leaf calls (the ones that run a kernel);
- time_ratio, search_images_per_s, retrain_images_per_s: the same steps timed (mean of 3 calls on a CPU, 20
  synchronised calls on a GPU);
- compile_s: seconds of the first captured search step (teacher, weight and arch graphs compiled, forward and
  backward), with a fresh inductor cache.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time

import torch
from torch.nn import functional as F


def standalone_step_fn(standalone, searcher, x, y, captured: bool):
    """(a) as a zero-argument function: forward, CE, backward, SGD step of the max-width derived net."""
    from rnas.runtime.device import capture

    kwargs = {"fused": True} if captured else {}
    sgd = torch.optim.SGD(standalone.parameters(), 0.1, momentum=0.9, weight_decay=2e-4, **kwargs)

    def loss(x, y):
        with searcher.autocast():
            return F.cross_entropy(standalone(x).float(), y)

    loss_fn = capture(loss, searcher.device) if captured else loss

    def step():
        standalone.train()
        sgd.zero_grad(set_to_none=True)
        loss_fn(x, y).backward()
        sgd.step()
    return step


def retrain_trainer(searcher, standalone, graphs: str):
    """A retrain Trainer of the max-width net with the search's teacher: RNAS-CL, fixed depth-proportional tutors."""
    from rnas.engine.retrain import RetrainConfig
    from rnas.engine.trainer import Objective, Trainer
    from rnas.method.distill import uniform_mapping

    standalone = copy.deepcopy(standalone)  # its own taps and meter, not on the net step (a) times
    cfg = RetrainConfig(arch="", data="digits", batch_size=searcher.cfg.batch_size, lr=0.1, weight_decay=2e-4,
                        epochs=1, graphs=graphs, amp=searcher.cfg.amp, log_every=0)
    student = standalone.tap_layers()
    tutors = {"mapping": uniform_mapping(len(student), len(searcher.teacher_layers)),
              "student_layers": [n for n, _ in student], "teacher_layers": searcher.teacher_layers}
    return Trainer("retrain", cfg, standalone, searcher.data, Objective(), searcher.device, searcher.teacher, tutors)


def measure(space: str, teacher: str, batch: int, device: str, amp: str, graphs: str) -> dict:
    """Host syncs and operator calls of (a), (d), (f) and the retrain step under ``graphs`` (off | on); for
    ``on`` also the graph breaks and the compile time of the first search step."""
    from bench import setup

    from rnas.runtime.audit import graph_breaks, host_syncs, operator_calls

    torch.manual_seed(0)
    searcher, standalone, x, y = setup(space, teacher, batch, device, amp, False, graphs=graphs)
    captured = graphs == "on"
    row = {"graphs": graphs}
    if captured:
        start = time.perf_counter()
        searcher.train_step(x, y)
        row["compile_s"] = round(time.perf_counter() - start, 1)
        n_w = searcher.parts(batch)[0]
        q, t_maps = searcher.teacher_targets(x)
        breaks = {}
        for part, rows in (("weight", slice(0, n_w)), ("arch", slice(n_w, batch))):
            widths, tutors = searcher.draw(len(y[rows]))
            breaks[f"{part}_step"] = graph_breaks(searcher.loss_terms, x[rows], y[rows], q[rows], t_maps[rows],
                                                  widths, tutors, len(y[rows]), part)
        breaks["teacher_forward"] = graph_breaks(searcher._teacher_targets, x)
    fns = {"a": standalone_step_fn(standalone, searcher, x, y, captured), "d": lambda: searcher.teacher_targets(x),
           "f": lambda: searcher.train_step(x, y)}
    trainer = retrain_trainer(searcher, standalone, graphs)
    trainer.step = 1  # an ordinary step (step 0 also measures the attention term's gradient share)
    fns["retrain"] = lambda: trainer.train_step(x, y)
    if captured:
        breaks["retrain_step"] = graph_breaks(trainer.loss_terms, x, y)
        row["graph_breaks"] = sum(b["graph_breaks"] for b in breaks.values())
        row["breaks"] = breaks
    for fn in fns.values():  # warm: compiled, caches filled
        fn()
    row["host_syncs"] = {k: host_syncs(fn) for k, fn in fns.items()}
    row["ops"] = {k: operator_calls(fn) for k, fn in fns.items()}
    seconds = {k: mean_seconds(fn, searcher.device) for k, fn in fns.items()}
    row["step_s"] = {k: round(v, 5) for k, v in seconds.items()}
    row["search_step_s"], row["retrain_step_s"] = row["step_s"]["f"], row["step_s"]["retrain"]
    row["search_images_per_s"] = round(batch / seconds["f"], 1)
    row["retrain_images_per_s"] = round(batch / seconds["retrain"], 1)
    row["time_ratio"] = round(seconds["f"] / (seconds["d"] + seconds["a"]), 3)
    ops = row["ops"]
    row["op_ratio"] = round(ops["f"]["aten"] / (ops["d"]["aten"] + ops["a"]["aten"]), 3)
    row["leaf_op_ratio"] = round(ops["f"]["leaf"] / (ops["d"]["leaf"] + ops["a"]["leaf"]), 3)
    row["host_syncs_per_step"] = sum(row["host_syncs"]["f"].values())
    row["retrain_host_syncs_per_step"] = sum(row["host_syncs"]["retrain"].values())
    trainer.close()
    searcher.close()
    return row


def mean_seconds(fn, device: torch.device) -> float:
    """Mean seconds of ``fn()`` over 20 calls on a GPU (synchronised), 3 on a CPU."""
    calls = 20 if device.type == "cuda" else 3
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / calls


def bench_launch(args) -> dict:
    """The eager and the captured rows and the headline keys (the captured path's)."""
    teacher = args.teachers.split(",")[0]
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnas-inductor-")  # a cold compile
    eager = measure(args.space, teacher, args.batch_size, args.device, args.amp, "off")
    captured = measure(args.space, teacher, args.batch_size, args.device, args.amp, "on")
    return {"space": args.space, "teacher": teacher, "batch_size": args.batch_size, "device": args.device,
            "amp": args.amp, "threads": args.threads, "torch": torch.__version__,
            "graph_breaks": captured["graph_breaks"], "host_syncs_per_step": captured["host_syncs_per_step"],
            "retrain_host_syncs_per_step": captured["retrain_host_syncs_per_step"],
            "op_ratio": captured["op_ratio"], "leaf_op_ratio": captured["leaf_op_ratio"],
            "compile_s": captured["compile_s"], "eager": eager, "captured": captured}


def print_launch(result: dict) -> None:
    e, c = result["eager"], result["captured"]
    print(f"{result['space']} + {result['teacher']}, batch {result['batch_size']}, {result['device']}, "
          f"{result['threads']} threads, amp {result['amp']}")
    print(f"{'':24}{'eager':>10}{'captured':>10}")
    for key in ("op_ratio", "leaf_op_ratio", "time_ratio", "host_syncs_per_step", "retrain_host_syncs_per_step",
                "search_images_per_s", "retrain_images_per_s"):
        print(f"{key:24}{e[key]:>10}{c[key]:>10}")
    print(f"graph breaks (captured): {c['graph_breaks']}; compile of the first search step: {c['compile_s']} s")
