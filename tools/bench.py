"""Benchmark one RNAS-CL search step against its limit (teacher forward + max-width student step).

    python tools/bench.py [--space S5] [--batch-size 128] [--threads 2] [--device cpu|cuda]
                          [--teachers wrn-16-2,wrt34] [--repeats 5] [--compile] [--amp] [--json]

Times, on the same batch and in one process (median and spread over --repeats after a warm-up):
 (a) a standalone max-width derived student train step (forward, CE, backward, SGD step)
 (b) a supernet weight step (per-sample Gumbel masks, CE, backward, SGD step on the weights)
 (c) a supernet arch step (CE, backward into the width logits only, Adam step)
 (d) the teacher forward with taps (inference mode, attention maps of every tapped conv)
 (e) the cross-layer loss alone (Eq. 1 forward + backward on this batch's maps)
 (f) the full search step (80/20 split: weight step + arch step, each with teacher and Eq. 2)
 (g) the in-memory CIFAR data path (uint8 on the device, batched pad-crop + flip), images/s
 (h) PGD-20 on the max-width derived net vs 20 plain forward + input-gradient passes
and the peak memory of (a) vs (f) (fresh subprocesses; CPU: peak RSS growth during the step,
CUDA: torch.cuda.max_memory_allocated).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.nn import functional as F


def timed(fn, repeats: int, warmup: int, device: torch.device) -> dict:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def setup(space: str, teacher: str, batch: int, device: str, amp: bool, compile_: bool):
    from rnas.search import SearchConfig, Searcher
    from supernets import Network

    cfg = SearchConfig(space=space, teacher=teacher, random_teacher=True, data="digits", batch_size=batch,
                       device=device, amp=amp, val_size=0)
    searcher = Searcher(cfg)
    spec, dev = searcher.supernet.spec, searcher.device
    widths = [b.width_choices[0] for b in searcher.supernet.blocks]
    standalone = Network(spec, searcher.supernet.num_classes, widths).to(dev)
    if compile_:
        standalone = torch.compile(standalone)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, spec.input_size, spec.input_size, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)
    return searcher, standalone, x, y


def step_fns(searcher, standalone, x, y):
    """The measured operations, each a zero-argument function."""
    from rnas.attacks import _input_grad, pgd
    from rnas.search import _set_requires_grad

    net = searcher.supernet
    sgd = torch.optim.SGD(standalone.parameters(), 0.1, momentum=0.9, weight_decay=2e-4)

    def standalone_step():
        sgd.zero_grad(set_to_none=True)
        with searcher.autocast():
            loss = F.cross_entropy(standalone(x).float(), y)
        loss.backward()
        sgd.step()

    def supernet_weight_step():
        _set_requires_grad(searcher.arch_params, False)
        searcher.weight_opt.zero_grad(set_to_none=True)
        with searcher.student_taps.paused(), searcher.autocast():
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        searcher.weight_opt.step()
        _set_requires_grad(searcher.arch_params, True)

    def supernet_arch_step():
        _set_requires_grad(searcher.weight_params, False)
        searcher.arch_opt.zero_grad(set_to_none=True)
        with searcher.student_taps.paused(), searcher.autocast():
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        searcher.arch_opt.step()
        _set_requires_grad(searcher.weight_params, True)

    def teacher_forward():
        with torch.inference_mode(), searcher.autocast():
            searcher.teacher(x)
            return torch.stack(searcher.teacher_taps.collect(), 1)

    t_maps = teacher_forward().clone()
    with torch.no_grad():
        net(x)
    s_maps = torch.stack(searcher.student_taps.collect(), 1).detach().requires_grad_(True)

    def cross_layer_loss():
        searcher.tutor(s_maps, t_maps).backward()

    def search_step():
        searcher.train_step(x, y)

    standalone.eval()

    def pgd20():
        pgd(standalone, x, y, 8 / 255, 2 / 255, 20)

    def plain20():
        for _ in range(20):
            _input_grad(standalone, x, y, "ce")

    return {"a": standalone_step, "b": supernet_weight_step, "c": supernet_arch_step, "d": teacher_forward,
            "e": cross_layer_loss, "f": search_step}, {"pgd": pgd20, "plain": plain20}


def data_rate(device: torch.device, batch: int) -> float:
    """Images/s of one epoch of the in-memory CIFAR path on 50,000 CIFAR-shaped uint8 images."""
    from rnas.data import ImageTensors, InMemoryLoader

    gen = torch.Generator().manual_seed(0)
    data = ImageTensors(torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=gen),
                        torch.randint(0, 10, (50_000,), generator=gen))
    loader = InMemoryLoader(data, batch, device, seed=0)
    next(iter(loader.epoch(0)))
    start, seen = time.perf_counter(), 0
    for xb, _ in loader.epoch(1):
        seen += len(xb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def peak_memory_child(args) -> None:
    """Runs in a subprocess: set up, then report the peak memory growth of one (a) or (f) step."""
    torch.set_num_threads(args.threads)
    searcher, standalone, x, y = setup(args.space, args.teacher_for_memory, args.batch_size, args.device,
                                       args.amp, False)
    fns, _ = step_fns(searcher, standalone, x, y)
    device = searcher.device
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fns[args.memory_of]()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"peak_bytes": peak}))


def peak_memory(args, which: str, teacher: str) -> int:
    cmd = [sys.executable, __file__, "--memory-of", which, "--teacher-for-memory", teacher, "--space", args.space,
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
    out = subprocess.run(cmd + (["--amp"] if args.amp else []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def bench_teacher(args, teacher: str) -> dict:
    searcher, standalone, x, y = setup(args.space, teacher, args.batch_size, args.device, args.amp, args.compile)
    device = searcher.device
    fns, attack = step_fns(searcher, standalone, x, y)
    slow = teacher == "wrt34"
    reps, warm = (max(2, args.repeats // 2), 1) if slow else (args.repeats, args.warmup)
    t = {k: timed(fn, reps, warm, device) for k, fn in fns.items()}
    t["h_pgd"] = timed(attack["pgd"], max(2, args.repeats // 2), 1, device)
    t["h_plain"] = timed(attack["plain"], max(2, args.repeats // 2), 1, device)
    med = {k: v["median"] for k, v in t.items()}
    data = data_rate(device, args.batch_size)
    consumption = args.batch_size / med["f"]
    mem_a, mem_f = peak_memory(args, "a", teacher), peak_memory(args, "f", teacher)
    searcher.close()
    return {
        "teacher": teacher, "times_s": t, "data_images_per_s": data, "search_images_per_s": consumption,
        "peak_bytes": {"a": mem_a, "f": mem_f},
        "supernet_over_standalone": med["b"] / med["a"],
        "search_over_limit": med["f"] / (med["d"] + med["a"]),
        "cl_loss_share": med["e"] / med["f"],
        "pgd_over_plain": med["h_pgd"] / med["h_plain"],
        "data_over_consumption": data / consumption,
        "memory_ratio": mem_f / max(1, mem_a),
    }


RATIOS = (("supernet_over_standalone", "(b)/(a)", "<= 1.10"), ("search_over_limit", "(f)/((d)+(a))", "<= 1.15"),
          ("cl_loss_share", "(e)/(f)", "<= 0.05"), ("pgd_over_plain", "(h)/20 plain", "<= 1.10"),
          ("data_over_consumption", "(g)/rate of (f)", ">= 20"), ("memory_ratio", "peak mem (f)/(a)", "<= 1.3"))


def print_table(rows: list[dict]) -> None:
    for row in rows:
        t = row["times_s"]
        print(f"\nteacher {row['teacher']}: median ms (min-max)")
        names = {"a": "standalone max-width step", "b": "supernet weight step", "c": "supernet arch step",
                 "d": "teacher forward + taps", "e": "cross-layer loss (fwd+bwd)", "f": "full search step (80/20)",
                 "h_pgd": "PGD-20, derived net", "h_plain": "20 x (fwd + input grad)"}
        for key, label in names.items():
            v = t[key]
            print(f"  ({key[0]}) {label:28s} {v['median'] * 1e3:10.1f}  ({v['min'] * 1e3:.1f}-{v['max'] * 1e3:.1f})")
        mem = {k: v / 2**20 for k, v in row["peak_bytes"].items()}
        print(f"  (g) data path {row['data_images_per_s']:,.0f} img/s; search consumes "
              f"{row['search_images_per_s']:,.1f} img/s; peak step memory (a) {mem['a']:.1f} MiB, "
              f"(f) {mem['f']:.1f} MiB")
    print(f"\n{'ratio':22s} {'target':>8s} " + " ".join(f"{r['teacher']:>10s}" for r in rows))
    for key, label, target in RATIOS:
        print(f"{label:22s} {target:>8s} " + " ".join(f"{r[key]:10.3f}" for r in rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="S5")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--teachers", default="wrn-16-2,wrt34")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the standalone student")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forwards")
    parser.add_argument("--json", action="store_true", help="print the ratios as one JSON object")
    parser.add_argument("--memory-of", choices=("a", "f"), help=argparse.SUPPRESS)
    parser.add_argument("--teacher-for-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return peak_memory_child(args)
    torch.set_num_threads(args.threads)
    rows = [bench_teacher(args, t) for t in args.teachers.split(",")]
    if args.json:
        first = rows[0]
        print(json.dumps({**{k: round(first[k], 4) for k, _, _ in RATIOS}, "teacher": first["teacher"],
                          "space": args.space, "batch_size": args.batch_size, "device": args.device,
                          "threads": args.threads,
                          "per_teacher": {r["teacher"]: {k: round(r[k], 4) for k, _, _ in RATIOS} for r in rows}},
                         indent=1))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
