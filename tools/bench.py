"""Benchmark one RNAS-CL search step against its limit (teacher forward + max-width student step).

    python tools/bench.py [--space S5] [--batch-size 128] [--threads 2] [--device cpu|cuda]
                          [--teachers wrn-16-2,wrt34] [--repeats 21] [--compile] [--amp [bf16|fp16]] [--json]
    python tools/bench.py --ddp [--space S5] [--teachers wrn-16-2] [--repeats 3] [--ddp-steps 12]
    python tools/bench.py --launch [--space S5] [--teachers wrn-16-2] [--batch-size 128] [--device cpu|cuda] [--json]
    python tools/bench.py --tutors [--space S3] [--teachers wrn-16-2] [--repeats 11] [--threads 1]
    python tools/bench.py --imagenet [--space i|im|is] [--teacher r18] [--batch-size 32] [--steps 3] [--threads 2]
                          [--device cpu|cuda] [--amp] [--json]

--imagenet: the ImageNet-100 search step at 224x224, to plan a GPU run: the I-space supernet (100 classes), an
ImageNet teacher with random weights and 1000 outputs of which the Teacher wrapper keeps ImageNet-100's 100 (by
WordNet id, as load_teacher does for a robust ImageNet checkpoint), random inputs. Median seconds of (f) over
--steps steps after one warm-up (the teacher forward (d) and the standalone max-width step (a) timed in the same
rounds), images/s, the full-epoch time this rate implies, and peak memory: the growth of the process's peak RSS
over the first search step (CPU) or the allocator peak (CUDA), and the activation bytes saved for backward.

--launch: host syncs, operator calls ((f) / ((d) + (a)), a launch-count proxy), graph breaks and compile time of
the search and retrain steps, eager against captured (--graphs on): see tools/launch_bench.py.

--tutors: the full search step (f) of each tutor objective (rnas search --tutor-objective): paper,
standardised, robust with FGSM and robust with PGD-3 on the arch slice, timed in interleaved rounds on the
same batch; each one's cost as the median within-round ratio to the paper step.

--ddp: the search's images/s on 2 gloo ranks with 1 thread each (torchrun) against 1 process with 2 threads,
same global batch (communication overhead = 1 - ratio).

Times, on the same batch and in one process (median and spread over --repeats rounds after a warm-up;
each round runs every operation once, in a fresh random order):
 (a) a standalone max-width derived student train step (forward, CE, backward, SGD step)
 (b) a supernet weight step (per-sample Gumbel masks, CE, backward, SGD step on the weights)
 (c) a supernet arch step (CE, backward into the width logits only, Adam step)
 (d) the teacher forward with taps (inference mode, attention maps of every tapped conv)
 (e) the cross-layer loss alone (Eq. 1 forward + backward on this batch's maps)
 (f) the full search step (teacher once on the batch, then the 80/20 split: weight step + arch step on
     Eq. 2)
 (g) the in-memory CIFAR data path (uint8 on the device, batched pad-crop + flip), images/s
 (h) PGD-20 on the max-width derived net vs 20 plain forward + input-gradient passes
and the peak step memory of (a) vs (f) (CUDA: max_memory_allocated; CPU: activation bytes saved for
backward). A timed ratio is the median over rounds of the ratio within each round (quartiles shown).
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time

import torch
from torch.nn import functional as F


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_interleaved(fns: dict, repeats: int, warmup: int, device: torch.device) -> dict:
    """Median / min / max seconds of each function; the functions run in interleaved rounds so that
    machine noise (frequency, neighbours) spreads evenly over them and their ratios stay stable. Each
    round runs them in a new (seeded) random order, so no function always follows the same one: what
    ran just before changes the caches and the allocator's free memory."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    order = random.Random(0)
    for _ in range(repeats):
        for key in order.sample(list(fns), len(fns)):
            fn = fns[key]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - start)
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for k, v in times.items()}


def paired_ratio(t: dict, num: str, dens: tuple[str, ...]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) over rounds of t[num] / sum(t[dens]) taken within each
    round: the operations of one round ran back to back, so a slow spell of the machine scales
    numerator and denominator alike."""
    rounds = zip(t[num]["runs"], *(t[d]["runs"] for d in dens), strict=True)
    ratios = [n / sum(ds) for n, *ds in rounds]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return statistics.median(ratios), q1, q3


def setup(space: str, teacher: str, batch: int, device: str, amp: str, compile_: bool, **search_flags):
    from rnas.engine.search import SearchConfig, Searcher
    from rnas.runtime.device import compile_model, place
    from supernets import Network

    cfg = SearchConfig(space=space, teacher=teacher, random_teacher=True, data="digits", batch_size=batch,
                       device=device, amp=amp, compile=compile_, val_size=0, **search_flags)
    searcher = Searcher.from_config(cfg)
    # time the ordinary step: the bench repeats one step index, and step 0 is one of the 1-in-log_every steps
    # that also measure the attention term's gradient share (one extra backward of that term)
    searcher.step = 1
    spec, dev = searcher.supernet.spec, searcher.device
    widths = [b.width_choices[0] for b in searcher.supernet.blocks]
    standalone = compile_model(place(Network(spec, searcher.supernet.num_classes, widths), dev), compile_)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, spec.input_size, spec.input_size, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)
    return searcher, standalone, x, y


def step_fns(searcher, standalone, x, y):
    """The measured operations, each a zero-argument function."""
    from rnas.engine.search import _set_requires_grad
    from rnas.method.distill import attention_maps
    from rnas.robust.attacks import _input_grad, pgd

    net = searcher.supernet
    sgd = torch.optim.SGD(standalone.parameters(), 0.1, momentum=0.9, weight_decay=2e-4)

    def standalone_step():
        standalone.train()  # training-mode BN, as in every search and retrain step
        sgd.zero_grad(set_to_none=True)
        with searcher.autocast():
            loss = F.cross_entropy(standalone(x).float(), y)
        loss.backward()
        sgd.step()

    def supernet_step(optimizer, frozen):
        """A supernet-only step (CE, no teacher): the masking cost over the standalone step (a)."""
        def step():
            _set_requires_grad(frozen, False)
            optimizer.zero_grad(set_to_none=True)
            with searcher.student_taps.paused(), searcher.autocast():
                loss = F.cross_entropy(net(x).float(), y)
            loss.backward()
            optimizer.step()
            _set_requires_grad(frozen, True)
        return step

    supernet_weight_step = supernet_step(searcher.weight_opt, searcher.arch_params)
    supernet_arch_step = supernet_step(searcher.arch_opt, searcher.weight_params)

    def teacher_forward():
        with torch.inference_mode(), searcher.autocast():
            searcher.teacher(x)
            return attention_maps(searcher.teacher_taps.collect(), searcher.cfg.map_size)

    t_maps = teacher_forward().clone()
    with torch.no_grad():
        net(x)
    s_maps = attention_maps(searcher.student_taps.collect(), searcher.cfg.map_size).detach().requires_grad_(True)

    def cross_layer_loss():
        searcher.tutor(s_maps, t_maps).backward()

    def search_step():
        searcher.train_step(x, y)

    def pgd20():
        standalone.eval()  # attacks run on a model in eval mode
        pgd(standalone, x, y, 8 / 255, 2 / 255, 20)

    def plain20():
        standalone.eval()
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


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs: the activation
    memory a training step holds at its peak (weights and optimizer state excluded)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def peak_memory(searcher, fns, x, y) -> dict:
    """Peak step memory of (a) and (f). CUDA: max_memory_allocated growth during the step. CPU (no
    allocator statistics): activation bytes saved for backward; (f) is the larger of its weight step
    (80 % of the batch) and its arch step (20 %), which run one after the other."""
    device = searcher.device
    if device.type == "cuda":
        out = {}
        for key in ("a", "f"):
            sync(device)
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fns[key]()
            sync(device)
            out[key] = torch.cuda.max_memory_allocated() - base
        return out
    n = min(len(y) - 1, max(1, round(len(y) * (1 - searcher.cfg.arch_split))))
    q, t_maps = searcher.teacher_targets(x)  # inference mode: saves nothing for backward
    return {"a": saved_bytes(fns["a"]),
            "f": max(saved_bytes(lambda: searcher.weight_step(x[:n], y[:n], (q[:n], t_maps[:n]))),
                     saved_bytes(lambda: searcher.arch_step(x[n:], y[n:], (q[n:], t_maps[n:]))))}


def bench_teacher(args, teacher: str) -> dict:
    searcher, standalone, x, y = setup(args.space, teacher, args.batch_size, args.device, args.amp, args.compile)
    device = searcher.device
    fns, attack = step_fns(searcher, standalone, x, y)
    slow = teacher == "wrt34"  # its forward alone takes seconds on a CPU
    t = timed_interleaved(fns, max(3, args.repeats // 3) if slow else args.repeats, 1 if slow else args.warmup,
                          device)
    t.update({f"h_{k}": v for k, v in timed_interleaved(attack, max(3, args.repeats // 3), 1, device).items()})
    med = {k: v["median"] for k, v in t.items()}
    data = data_rate(device, args.batch_size)
    consumption = args.batch_size / med["f"]
    memory = peak_memory(searcher, fns, x, y)
    searcher.close()
    paired = {"supernet_over_standalone": paired_ratio(t, "b", ("a",)),
              "search_over_limit": paired_ratio(t, "f", ("d", "a")),
              "cl_loss_share": paired_ratio(t, "e", ("f",)),
              "pgd_over_plain": paired_ratio(t, "h_pgd", ("h_plain",))}
    return {
        "teacher": teacher, "times_s": t, "data_images_per_s": data, "search_images_per_s": consumption,
        "peak_bytes": memory, **{k: v[0] for k, v in paired.items()},
        "quartiles": {k: v[1:] for k, v in paired.items()},
        "data_over_consumption": data / consumption,
        "memory_ratio": memory["f"] / max(1, memory["a"]),
    }


TUTOR_VARIANTS = {"paper": {}, "standardised": {"tutor_objective": "standardised"},
                  "robust-fgsm": {"tutor_objective": "robust"},
                  "robust-pgd3": {"tutor_objective": "robust", "tutor_attack": "pgd", "tutor_attack_steps": 3},
                  "robust-standardised": {"tutor_objective": "robust-standardised"}}


def bench_tutors(args, teacher: str) -> dict:
    """The full search step of each tutor objective, and its ratio to the paper objective's step."""
    fns, searchers = {}, []
    for name, flags in TUTOR_VARIANTS.items():
        torch.manual_seed(0)
        searcher, _, x, y = setup(args.space, teacher, args.batch_size, args.device, args.amp, args.compile, **flags)
        searchers.append(searcher)
        fns[name] = lambda s=searcher, x=x, y=y: s.train_step(x, y)
    t = timed_interleaved(fns, args.repeats, args.warmup, searchers[0].device)
    for searcher in searchers:
        searcher.close()
    ratios = {name: paired_ratio(t, name, ("paper",)) for name in TUTOR_VARIANTS if name != "paper"}
    return {"teacher": teacher, "space": args.space, "batch_size": args.batch_size, "device": args.device,
            "threads": args.threads, "step_ms": {k: round(v["median"] * 1e3, 1) for k, v in t.items()},
            "over_paper": {k: round(v[0], 3) for k, v in ratios.items()},
            "quartiles": {k: [round(q, 3) for q in v[1:]] for k, v in ratios.items()}}


RATIOS = (("supernet_over_standalone", "(b)/(a)", "<= 1.10"), ("search_over_limit", "(f)/((d)+(a))", "<= 1.15"),
          ("cl_loss_share", "(e)/(f)", "<= 0.05"), ("pgd_over_plain", "(h)/20 plain", "<= 1.10"),
          ("data_over_consumption", "(g)/rate of (f)", ">= 20"), ("memory_ratio", "peak mem (f)/(a)", "<= 1.3"))


def absolute_json(row: dict) -> dict:
    """The absolute figures of one teacher's row: median ms of each operation, images/s of the search
    step, peak memory (bytes) of the standalone and the search step."""
    return {"median_ms": {k: round(1e3 * v["median"], 3) for k, v in row["times_s"].items()},
            "search_images_per_s": round(row["search_images_per_s"], 1),
            "peak_bytes": {"standalone": row["peak_bytes"]["a"], "search_step": row["peak_bytes"]["f"]}}


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
    print("\nratios: timed ones are medians over rounds of the within-round ratio [quartiles]")
    print(f"{'ratio':22s} {'target':>8s} " + " ".join(f"{r['teacher']:>24s}" for r in rows))
    for key, label, target in RATIOS:
        cells = []
        for r in rows:
            q = r["quartiles"].get(key)
            cells.append(f"{r[key]:10.3f}" + (f" [{q[0]:.3f}-{q[1]:.3f}]" if q else " " * 14))
        print(f"{label:22s} {target:>8s} " + " ".join(cells))


IMAGENET_SPACES = ("is", "im", "i")
# training images of ImageNet-100's train/ (the CMC list: at most 1,300 per class; 126,689 as commonly reported)
IMAGENET100_TRAIN = 126_689


def setup_imagenet(space: str, teacher: str, batch: int, device: str, amp: str, compile_: bool):
    """The ImageNet-100 search at 224x224 from objects (no data on disk): the ``space`` supernet for 100 classes,
    ``teacher`` built with 1000 random-weight outputs and wrapped to return ImageNet-100's 100 logits (what
    load_teacher makes of a 1000-class robust checkpoint), the searcher over one random batch, a standalone
    max-width derived net and the batch."""
    from rnas.data import DataBundle, IterableLoader, class_positions, dataset_info
    from rnas.engine.search import SearchConfig, Searcher
    from rnas.runtime.device import compile_model, place, resolve_device
    from rnas.teachers import Teacher, teacher_arch
    from search_spaces import load_space
    from supernets import Network

    info = dataset_info("imagenet100")
    dev = resolve_device(device)
    arch = teacher_arch(teacher, "imagenet100")
    subset, index = class_positions("imagenet100", 1000, f"the classifier of {teacher}")
    net = Teacher(arch.build(1000), arch.mean, arch.std, teacher, index, subset)
    spec = load_space(space)
    supernet = place(Network(spec, info.num_classes), dev)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, info.input_size, info.input_size, generator=gen).to(dev)
    y = torch.randint(0, info.num_classes, (batch,), generator=gen).to(dev)
    data = DataBundle(IterableLoader([(x, y)], dev, batch), None, info.num_classes, info.input_size)
    cfg = SearchConfig(space=space, teacher=teacher, data="imagenet100", batch_size=batch, device=device,
                       amp=amp, compile=compile_, cosine=True, val_size=0)
    searcher = Searcher(supernet, place(net, dev), data, cfg, device=dev)
    searcher.step = 1  # an ordinary step, not one of the 1-in-log_every steps measuring the gradient share
    widths = [b.width_choices[0] for b in supernet.blocks]
    standalone = compile_model(place(Network(spec, info.num_classes, widths), dev), compile_)
    return searcher, standalone, x, y


def peak_rss() -> int:
    """The process's peak resident set size so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_imagenet(args, teacher: str) -> dict:
    """(f) with (d) and (a) on one 224x224 batch: --steps rounds after a warm-up, each in a fresh order."""
    before = peak_rss()
    searcher, standalone, x, y = setup_imagenet(args.space, teacher, args.batch_size, args.device, args.amp,
                                                args.compile)
    built = peak_rss()  # models, optimizers and the batch
    device = searcher.device
    fns, _ = step_fns(searcher, standalone, x, y)
    fns = {k: fns[k] for k in ("d", "a", "f")}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fns["f"]()  # the warm-up search step, alone: the peak RSS it reaches is the search step's own
    sync(device)
    first = time.perf_counter() - start
    step_rss = peak_rss() - built
    cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    for key in ("d", "a"):
        fns[key]()
    t = timed_interleaved(fns, args.steps, 0, device)
    memory = peak_memory(searcher, fns, x, y)  # CPU: bytes saved for backward; CUDA: allocator peak growth
    searcher.close()
    f = t["f"]["median"]
    return {"teacher": teacher, "times_s": t, "first_step_s": first, "search_step_s": f,
            "search_images_per_s": args.batch_size / f, "epoch_images": IMAGENET100_TRAIN,
            "epoch_hours": IMAGENET100_TRAIN / args.batch_size * f / 3600,
            "search_over_limit": paired_ratio(t, "f", ("d", "a"))[0],
            "teacher_share": paired_ratio(t, "d", ("f",))[0],
            "peak_rss_bytes": peak_rss(), "peak_rss_before_bytes": before, "peak_rss_built_bytes": built,
            "step_rss_growth_bytes": step_rss, "cuda_peak_bytes": cuda_peak, "peak_bytes": memory,
            "peak_kind": "cuda_allocator_growth" if device.type == "cuda" else "saved_for_backward"}


def print_imagenet(args, rows: list[dict]) -> None:
    mib = 2**20
    print(f"ImageNet-100 search step: space {args.space.upper()}, 224x224, batch {args.batch_size} "
          f"({searcher_parts(args.batch_size)}), device {args.device}, {args.threads} thread(s); median of "
          f"{args.steps} step(s) after 1 warm-up, ms (min-max)")
    for row in rows:
        t = row["times_s"]
        print(f"\nteacher {row['teacher']} (1000 random-weight outputs -> ImageNet-100's 100)")
        labels = {"f": "full search step (80/20)", "d": "teacher forward + taps", "a": "standalone max-width step"}
        for key, label in labels.items():
            v = t[key]
            print(f"  ({key}) {label:28s} {v['median'] * 1e3:10.1f}  ({v['min'] * 1e3:.1f}-{v['max'] * 1e3:.1f})")
        print(f"  images/s of (f)                {row['search_images_per_s']:10.2f}")
        print(f"  one search epoch ({row['epoch_images']:,} images) {row['epoch_hours']:8.2f} h at this rate "
              "(compute only: no JPEG decoding)")
        print(f"  (f)/((d)+(a)) {row['search_over_limit']:.3f}; teacher forward / (f) {row['teacher_share']:.3f}")
        growth = row["step_rss_growth_bytes"] / mib
        print(f"  peak RSS {row['peak_rss_bytes'] / mib:,.0f} MiB; growth over the first search step "
              f"{growth:,.0f} MiB" + (f"; CUDA allocator peak {row['cuda_peak_bytes'] / mib:,.0f} MiB"
                                     if row["cuda_peak_bytes"] is not None else ""))
        what = {"cuda_allocator_growth": "allocator peak growth of the step",
                "saved_for_backward": "activations saved for backward (f: the larger of its weight and arch "
                                      "steps)"}[row["peak_kind"]]
        print(f"  {what}: (f) {row['peak_bytes']['f'] / mib:,.0f} MiB, (a) {row['peak_bytes']['a'] / mib:,.0f} MiB")


def searcher_parts(batch: int) -> str:
    """'26 weight + 6 arch samples', as Searcher.parts splits a batch at the default --arch-split 0.2."""
    n = min(batch - 1, max(1, round(batch * 0.8)))
    return f"{n} weight + {batch - n} arch samples"


def imagenet_json(args, rows: list[dict]) -> dict:
    def row_json(r):
        t = r["times_s"]
        return {"teacher": r["teacher"], "search_step_s": round(r["search_step_s"], 4),
                "search_step_runs_s": [round(v, 4) for v in t["f"]["runs"]],
                "first_step_s": round(r["first_step_s"], 4),
                "teacher_forward_s": round(t["d"]["median"], 4), "standalone_step_s": round(t["a"]["median"], 4),
                "search_images_per_s": round(r["search_images_per_s"], 3), "epoch_images": r["epoch_images"],
                "epoch_hours": round(r["epoch_hours"], 3), "search_over_limit": round(r["search_over_limit"], 4),
                "teacher_share": round(r["teacher_share"], 4), "peak_rss_bytes": r["peak_rss_bytes"],
                "step_rss_growth_bytes": r["step_rss_growth_bytes"], "cuda_peak_bytes": r["cuda_peak_bytes"],
                "step_memory_bytes": r["peak_bytes"], "step_memory_kind": r["peak_kind"]}
    first = row_json(rows[0])
    return {"mode": "imagenet", "space": args.space, "input_size": 224, "num_classes": 100,
            "batch_size": args.batch_size, "steps": args.steps, "device": args.device, "threads": args.threads,
            "amp": args.amp, **first, "per_teacher": {r["teacher"]: row_json(r) for r in rows}}


def check_imagenet_args(args) -> None:
    """--imagenet's flags, each problem one line."""
    from rnas.errors import UserError
    from rnas.runtime.device import resolve_device
    from rnas.teachers import teacher_arch

    try:
        resolve_device(args.device)
    except UserError as err:
        fail(str(err))
    if args.space.lower() not in IMAGENET_SPACES:
        fail(f"--space {args.space}: --imagenet times a 224x224 ImageNet-100 space ({', '.join(IMAGENET_SPACES)})")
    args.space = args.space.lower()
    if args.batch_size < 2:
        fail(f"--batch-size {args.batch_size}: needs at least 2 (one weight, one arch sample)")
    for name in args.teachers.split(","):
        try:
            teacher_arch(name, "imagenet100")
        except UserError as err:
            fail(f"--teacher: {err}")


def fail(message: str) -> None:
    """A bad flag: one line on stderr, exit 2."""
    print(f"bench.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def ddp_worker(args) -> None:
    """Search steps of one process (alone, or one rank of a torchrun job) on a synthetic in-memory set;
    rank 0 prints {"images_per_s": ...} over the steps after --warmup."""
    import os

    from rnas.data import DataBundle, ImageTensors, InMemoryLoader
    from rnas.engine.search import SearchConfig, Searcher
    from rnas.runtime.distributed import init_distributed, shutdown
    from rnas.teachers import teacher_arch
    from search_spaces import load_space
    from supernets import Network

    torch.set_num_threads(args.threads)
    dist = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    steps = args.ddp_steps + args.warmup
    images = torch.randint(0, 256, (args.batch_size * steps, 3, 32, 32), dtype=torch.uint8)
    data = DataBundle(InMemoryLoader(ImageTensors(images, torch.randint(0, 10, (len(images),))), args.batch_size,
                                     "cpu", 0), None, 10, 32)
    cfg = SearchConfig(space=args.space, batch_size=args.batch_size, epochs=1, log_every=0)
    teacher = teacher_arch(args.teachers.split(",")[0], "cifar10").build(10)
    searcher = Searcher(Network(load_space(args.space), 10), teacher, data, cfg, device=torch.device("cpu"),
                        dist=dist)
    for step, (x, y) in enumerate(searcher.loader.epoch(0)):
        if step == args.warmup:
            dist.barrier()
            start = time.perf_counter()
        searcher.step = step
        searcher.train_step(x, y)
    dist.barrier()
    seconds = time.perf_counter() - start
    if dist.main:
        print(json.dumps({"images_per_s": args.batch_size * args.ddp_steps / seconds,
                          "world": dist.world, "threads": args.threads, "pid": os.getpid()}))
    searcher.close()
    shutdown()


def bench_ddp(args) -> dict:
    """2 gloo ranks x 1 thread against 1 process x 2 threads, same global batch: search images/s, the
    runs alternating (--repeats rounds), and the median of the per-round ratios."""
    import subprocess
    import sys

    me = [__file__, "--ddp-worker", "--space", args.space, "--batch-size", str(args.batch_size), "--teachers",
          args.teachers, "--warmup", str(args.warmup), "--ddp-steps", str(args.ddp_steps)]

    def images_per_s(launcher: list[str], threads: int) -> float:
        out = subprocess.run([*launcher, *me, "--threads", str(threads)], capture_output=True, text=True, check=True,
                             env={**__import__("os").environ, "OMP_NUM_THREADS": str(threads)})
        return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]

    rounds = []
    for _ in range(args.repeats):
        single = images_per_s([sys.executable], 2)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        ranks = images_per_s(torchrun, 1)
        rounds.append({"single_2_threads": single, "two_ranks_1_thread": ranks, "ratio": ranks / single})
    ratios = sorted(r["ratio"] for r in rounds)
    return {"space": args.space, "teacher": args.teachers.split(",")[0], "batch_size": args.batch_size,
            "steps": args.ddp_steps, "median_ratio": statistics.median(ratios), "rounds": rounds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail  # every bad flag is one line
    parser.add_argument("--ddp", action="store_true", help="2-rank gloo search step vs 1 process with 2 threads")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tutors", action="store_true", help="the search step of each tutor objective vs paper's")
    parser.add_argument("--launch", action="store_true",
                        help="host syncs, operator calls, graph breaks, compile time: eager vs --graphs on")
    parser.add_argument("--ddp-steps", type=positive, default=12, help="timed search steps per --ddp run")
    parser.add_argument("--imagenet", action="store_true",
                        help="the ImageNet-100 search step at 224x224 (I space, R-18 teacher by default)")
    parser.add_argument("--steps", type=positive, help="timed search steps of --imagenet (default 3)")
    parser.add_argument("--space", help="search space (default S5; --imagenet: i, or im / is)")
    parser.add_argument("--batch-size", type=positive, help="batch size (default 128; --imagenet: 32)")
    parser.add_argument("--threads", type=positive, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--teachers", "--teacher", dest="teachers",
                        help="comma-separated teachers, one row each (default wrn-16-2,wrt34; --imagenet: r18)")
    parser.add_argument("--repeats", type=positive, default=21,
                        help="timed rounds (a third of them for wrt34 and PGD)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (--imagenet: always one step)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the students (as rnas search --compile)")
    parser.add_argument("--amp", nargs="?", const="bf16", default="none", choices=["none", "bf16", "fp16"],
                        help="autocast of the forwards (as rnas search --amp); --amp alone: bf16")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    if args.imagenet and args.ddp:
        fail("--imagenet and --ddp: choose one")
    if args.steps is not None and not args.imagenet:
        fail("--steps: only with --imagenet (the other benchmarks take --repeats)")
    imagenet = args.imagenet
    args.space = args.space or ("i" if imagenet else "S5")
    args.batch_size = args.batch_size or (32 if imagenet else 128)
    args.teachers = args.teachers or ("r18" if imagenet else "wrn-16-2" if args.tutors or args.launch
                                      else "wrn-16-2,wrt34")
    args.steps = args.steps or 3
    if args.ddp_worker:
        return ddp_worker(args)
    if args.ddp:
        result = bench_ddp(args)
        print(json.dumps(result, indent=1) if args.json else
              f"search step, {result['space']}, teacher {result['teacher']}, global batch {result['batch_size']}: "
              f"2 gloo ranks x 1 thread / 1 process x 2 threads = {result['median_ratio']:.3f} (median of "
              f"{len(result['rounds'])} rounds: " + ", ".join(f"{r['ratio']:.3f}" for r in result["rounds"]) + ")")
        return None
    torch.set_num_threads(args.threads)
    if args.launch:
        from launch_bench import bench_launch, print_launch

        args.teachers = args.teachers if "," not in args.teachers else args.teachers.split(",")[0]
        result = bench_launch(args)
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print_launch(result)
        return None
    if args.tutors:
        for row in (bench_tutors(args, t) for t in args.teachers.split(",")):
            print(json.dumps(row, indent=1) if args.json else
                  f"search step, {row['space']}, teacher {row['teacher']}, batch {row['batch_size']}, "
                  f"{row['threads']} thread(s): " + ", ".join(f"{k} {v:.0f} ms" for k, v in row["step_ms"].items())
                  + "\nratio to paper (median [quartiles]): " + ", ".join(
                      f"{k} {v:.3f} [{row['quartiles'][k][0]:.3f}-{row['quartiles'][k][1]:.3f}]"
                      for k, v in row["over_paper"].items()))
        return None
    if imagenet:
        check_imagenet_args(args)
        rows = [bench_imagenet(args, t) for t in args.teachers.split(",")]
        if args.json:
            print(json.dumps(imagenet_json(args, rows), indent=1))
        else:
            print_imagenet(args, rows)
        return None
    rows = [bench_teacher(args, t) for t in args.teachers.split(",")]
    if args.json:
        first = rows[0]
        print(json.dumps({**{k: round(first[k], 4) for k, _, _ in RATIOS}, "teacher": first["teacher"],
                          "space": args.space, "batch_size": args.batch_size, "device": args.device,
                          "threads": args.threads,
                          "quartiles": {k: [round(q, 4) for q in v] for k, v in first["quartiles"].items()},
                          "amp": args.amp, "compile": args.compile,
                          "per_teacher": {r["teacher"]: {**{k: round(r[k], 4) for k, _, _ in RATIOS},
                                                         **absolute_json(r)} for r in rows}},
                         indent=1))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
