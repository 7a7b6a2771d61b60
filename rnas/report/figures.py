"""The figures of `rnas report` (matplotlib, the optional extra ``.[report]``): each function draws one PNG
from plain data and returns its path, or None when there is nothing to draw."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from rnas.nets.graph import tutor_heatmap_figure  # noqa: E402
from rnas.report.tables import TABLE_ATTACKS, attack_label, pareto_front  # noqa: E402

plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "legend.fontsize": 8, "figure.dpi": 100,
                     "axes.grid": True, "grid.alpha": 0.3})

# (panel title, [(metrics.jsonl key, legend label)], scale of the values, log y axis)
SEARCH_LOSS_PANELS = [
    ("CE", [("weight/ce", "weight step"), ("arch/ce", "arch step")], 1, False),
    ("KL(p, q)", [("weight/kl", "weight step"), ("arch/kl", "arch step")], 1, False),
    ("γ_s·L_attn (weighted)", [("weight/attn_weighted", "weight step"), ("arch/attn_weighted", "arch step")], 1, False),
    ("total, Eq. 2 (× n_f)", [("weight/total", "weight step"), ("arch/total", "arch step")], 1, False),
    ("n_f (MAC factor)", [("weight/n_f", "weight step"), ("arch/n_f", "arch step")], 1, False),
    ("attention share of weight grad", [("weight/attn_grad_share", "weight step")], 1, False),
]
SEARCH_SCHEDULE_PANELS = [
    ("Gumbel temperatures", [("tau", "tau (widths)"), ("tutor_tau", "tutor_tau (tutors)")], 1, False),
    ("MACs (M)", [("expected_macs", "E[MACs]"), ("argmax_macs", "argmax net")], 1e-6, False),
    ("supernet val acc (%)", [("val_acc", "argmax net")], 1, False),
    ("tutors: distinct teacher taps", [("tutors_distinct", "argmax tutors")], 1, False),
    ("tutors: spread", [("tutors_largest_share", "largest share"), ("tutors_depth_rank_corr", "depth rank corr."),
                        ("tutor_entropy", "entropy (nats)")], 1, False),
    ("robust tutors: look-ahead attack", [("arch/adv_acc", "adv. acc at w' (%)")], 1, False),
]
RETRAIN_PANELS = [
    ("task loss", [("base", "base (CE or TRADES)"), ("natural", "natural CE"), ("robust", "robust KL")], 1, False),
    ("KL(p, q)", [("kl", "KL")], 1, False),
    ("γ_t·L_attn (weighted)", [("attn_weighted", "γ_t·L_attn")], 1, False),
    ("total, Eq. 3", [("total", "total")], 1, False),
    ("val acc (%)", [("val_acc", "clean")], 1, False),
    ("attention share of weight grad", [("attn_grad_share", "share")], 1, False),
    ("learning rate", [("lr", "lr")], 1, True),
]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _grid(n: int, ncols: int, width: float, height: float):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _epoch_axis(ax, records: list[dict], label: bool = True) -> None:
    """Whole epochs (1-based) over the run's whole range, also for a metric measured in some epochs only."""
    last = max((r["epoch"] + 1 for r in records), default=1)
    ax.set_xlim(0.7, last + 0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if label:
        ax.set_xlabel("epoch")


def curves(records: list[dict], panels: list, title: str, path: Path) -> Path | None:
    """One panel per metric group over epochs (1-based); panels with none of their keys are left out."""
    shown = [p for p in panels if any(k in r for r in records for k, _ in p[1])]
    if not shown:
        return None
    fig, axes = _grid(len(shown), 3, 4.2, 2.9)
    for ax, (name, keys, scale, log) in zip(axes, shown, strict=True):
        for key, label in keys:
            points = [(r["epoch"] + 1, r[key] * scale) for r in records if r.get(key) is not None]
            if points:
                ax.plot([e for e, _ in points], [v for _, v in points], "o-" if len(points) < 30 else "-", ms=3,
                        label=label)
        ax.set_title(name)
        _epoch_axis(ax, records)
        if log:
            ax.set_yscale("log")
        if len(ax.get_lines()) > 1:
            ax.legend()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _label_offsets(xs: list[float], ys: list[float], x_span: float, y_span: float) -> list[float]:
    """Vertical text offsets (points) that keep the labels of points in one x column from overlapping."""
    offsets = [0.0] * len(ys)
    for i in sorted(range(len(ys)), key=lambda k: ys[k]):
        placed = [ys[k] / y_span * 250 + offsets[k] for k in range(len(ys))
                  if k != i and abs(xs[k] - xs[i]) < 0.04 * x_span and (ys[k], k) < (ys[i], i)]
        y = ys[i] / y_span * 250  # data to approximate points on a ~250 pt high axis
        offsets[i] = max(y, max(placed, default=-math.inf) + 10) - y
    return offsets


def pareto(models: list[dict], robust: str | None, path: Path, cost: str = "macs", x_label: str = "MACs (M)",
           x_scale: float = 1e-6) -> Path | None:
    """MACs (or another cost ``cost``, shown × ``x_scale`` as ``x_label``) vs clean and vs ``robust`` accuracy: one
    numbered point per model (key on the right, colour by variant: its arm and fine-tune), the Pareto front (less
    cost, more accuracy) starred and joined. ``models``: [{"name", "arm", "finetune", "macs", "clean", "robust"}]."""
    panels = [("clean", "clean accuracy (%)")] + ([("robust", f"{robust} accuracy (%)")] if robust else [])
    panels = [p for p in panels if any(m.get(p[0]) is not None and m.get(cost) for m in models)]
    if not panels:
        return None
    shown = [m for m in models if m.get(cost) and any(m.get(k) is not None for k, _ in panels)]
    arms = sorted({variant(m) for m in shown})
    colour = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(arms)}
    fig = plt.figure(figsize=(13, max(4.6, 1.2 + 0.16 * (len(shown) + len(arms)))))
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 0.5])
    costs = [m[cost] * x_scale for m in shown]
    log_x = max(costs) / min(costs) > 5
    for col, (key, label) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        pts = [(n, m[cost] * x_scale, m[key], variant(m)) for n, m in enumerate(shown, 1) if m.get(key) is not None]
        front = set(pareto_front([(x, y) for _, x, y, _ in pts]))
        for i, (_, x, y, arm) in enumerate(pts):
            ax.plot(x, y, "*" if i in front else "o", ms=15 if i in front else 7, color=colour[str(arm)],
                    mec="black" if i in front else "none", zorder=3)
        line = sorted((pts[i][1], pts[i][2]) for i in front)
        ax.plot([x for x, _ in line], [y for _, y in line], "--", color="0.4", lw=1, label="Pareto front")
        if log_x:
            ax.set_xscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        xs = [math.log(x) if log_x else x for _, x, _, _ in pts]
        ys = [y for _, _, y, _ in pts]
        offsets = _label_offsets(xs, ys, (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0)
        for (number, x, y, _), dy in zip(pts, offsets, strict=True):
            ax.annotate(str(number), (x, y), xytext=(8, dy), textcoords="offset points", fontsize=8, va="center",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if dy else None)
        ax.margins(x=0.15, y=0.1)
        ax.set_xlabel(x_label + (", log scale" if log_x else ""))
        ax.set_ylabel(label)
        ax.set_title(f"{x_label.split(' (')[0]} vs {label}")
        ax.legend(loc="lower right")
    key = fig.add_subplot(grid[0, 2])
    key.axis("off")
    lines = [f"{n:>2d}  {m['name']}" for n, m in enumerate(shown, 1)]
    key.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8, transform=key.transAxes)
    key.legend([plt.Line2D([], [], ls="", marker="o", color=colour[a]) for a in arms], arms, title="arm",
               loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def variant(model: dict) -> str:
    """An arm and its fine-tune as one label (its own colour): rnas-cl, rnas-cl+trades."""
    return str(model.get("arm")) + (f"+{model['finetune']}" if model.get("finetune") else "")


def clean_vs_robust(models: list[dict], robust: str, path: Path) -> Path | None:
    """Clean (x) against ``robust`` (y) accuracy, one numbered point per model coloured by variant: what a MACs
    axis cannot show when every model has the same MACs (the arms of one net)."""
    shown = [m for m in models if m.get("clean") is not None and m.get("robust") is not None]
    if not shown:
        return None
    arms = sorted({variant(m) for m in shown})
    colour = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(arms)}
    fig = plt.figure(figsize=(10, max(4.6, 1.2 + 0.16 * (len(shown) + len(arms)))))
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 0.55])
    ax = fig.add_subplot(grid[0, 0])
    xs, ys = [m["clean"] for m in shown], [m["robust"] for m in shown]
    offsets = _label_offsets(xs, ys, (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0)
    for number, (m, dy) in enumerate(zip(shown, offsets, strict=True), 1):
        ax.plot(m["clean"], m["robust"], "o", ms=9, color=colour[variant(m)], zorder=3)
        ax.annotate(str(number), (m["clean"], m["robust"]), xytext=(8, dy), textcoords="offset points", fontsize=8,
                    va="center")
    ax.margins(0.15)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{robust} accuracy (%)")
    ax.set_title(f"clean vs {robust} accuracy (every model: {shown[0]['macs'] / 1e6:.3g}M MACs)")
    key = fig.add_subplot(grid[0, 1])
    key.axis("off")
    key.text(0, 1, "\n".join(f"{n:>2d}  {m['name']}" for n, m in enumerate(shown, 1)), va="top",
             family="monospace", fontsize=8, transform=key.transAxes)
    key.legend([plt.Line2D([], [], ls="", marker="o", color=colour[a]) for a in arms], arms, title="arm",
               loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


OVERLAY_PANELS = [("validation accuracy (%)", ("val_acc",)), ("training loss", ("weight/total", "total")),
                  ("adversarial loss", ("base", "adv")), ("attention term", ("attn_weighted",))]


def overlay(runs: list[tuple[str, list[dict]]], path: Path) -> Path | None:
    """The runs' curves on shared axes, one panel per metric and one line per run (colour by run)."""
    def series(records, keys):
        key = next((k for k in keys if any(k in r for r in records)), None)
        return [] if key is None else [(r["epoch"] + 1, r[key]) for r in records if r.get(key) is not None]
    panels = [(title, keys) for title, keys in OVERLAY_PANELS
              if sum(bool(series(records, keys)) for _, records in runs) >= 1]
    if len(runs) < 2 or not panels:
        return None
    fig, axes = _grid(len(panels), 2, 5.2, 3.2)
    colour = {name: plt.get_cmap("tab10")(i % 10) for i, (name, _) in enumerate(runs)}
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for name, records in runs:
            points = series(records, keys)
            if points:
                ax.plot([e for e, _ in points], [v for _, v in points], "o-" if len(points) < 30 else "-", ms=3,
                        color=colour[name], label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    fig.suptitle("the retrain runs on shared axes", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def eps_sweep(series: list[dict], path: Path) -> Path | None:
    """Accuracy vs eps (×255), one panel per (protocol, attack), one line per model; legend on the right."""
    order = [*TABLE_ATTACKS, *sorted({s["attack"] for s in series} - set(TABLE_ATTACKS))]
    panels = sorted({(s["protocol"], s["attack"]) for s in series}, key=lambda p: (p[0] != "pixel", p[0],
                                                                                  order.index(p[1])))
    if not panels:
        return None
    names = list(dict.fromkeys(s["model"] for s in series))  # one colour and line style per model, all panels
    style = {n: (plt.get_cmap("tab20")(i % 20), ("-", "--", ":")[i // 20 % 3]) for i, n in enumerate(names)}
    ncols, legend_width = min(3, len(panels)), 0.4 + 0.065 * max(len(n) for n in names)
    fig, axes = plt.subplots(math.ceil(len(panels) / ncols), ncols, squeeze=False,
                             figsize=(3.8 * ncols + legend_width, 3.3 * math.ceil(len(panels) / ncols)))
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (proto, attack) in zip(axes.flat, panels, strict=False):
        for s in series:
            if (s["protocol"], s["attack"]) == (proto, attack):
                ax.plot([x * 255 for x, _ in s["points"]], [y for _, y in s["points"]], marker="o", ms=4,
                        color=style[s["model"]][0], ls=style[s["model"]][1])
        ax.set_title(attack_label(attack) + ("" if proto == "pixel" else f" ({proto})"))
        ax.set_xlabel("eps ×255" + ("" if proto == "pixel" else " (normalized space)"))
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({round(x * 255, 3) for s in series if (s["protocol"], s["attack"]) == (proto, attack)
                              for x, _ in s["points"]}))
    right = 1 - legend_width / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.legend([plt.Line2D([], [], color=c, ls=ls, marker="o", ms=4) for c, ls in style.values()], names,
               loc="center left", bbox_to_anchor=(right, 0.5), fontsize=8)
    return _save(fig, path)


def width_probs(records: list[dict], choices: list[list[int]] | None, title: str, path: Path) -> Path | None:
    """Small multiples, one per searched block: each width choice's probability per epoch."""
    rows = [r["width_probs"] for r in records if r.get("width_probs")]
    if not rows:
        return None
    nblocks = len(rows[-1])
    fig, axes = _grid(nblocks, 4, 3.15, 2.2)
    epochs = [r["epoch"] + 1 for r in records if r.get("width_probs")]
    for b, ax in enumerate(axes):
        labels = choices[b] if choices and b < len(choices) else [f"choice {k}" for k in range(len(rows[-1][b]))]
        for k, label in enumerate(labels):
            ax.plot(epochs, [row[b][k] for row in rows], ".-", label=str(label))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"block {b}")
        _epoch_axis(ax, records, label=False)
        ax.legend(title="width", fontsize=7, title_fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.supxlabel("search epoch")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def tutor_heatmap(arch: dict, title: str, path: Path) -> Path | None:
    """Tutor probabilities g_ij (student taps × teacher layers), the chosen tutor j* of each row marked."""
    probs = arch.get("tutor_probabilities")
    if not probs:
        return None
    n_s, n_t = len(probs), len(probs[0])
    return _save(tutor_heatmap_figure(probs, arch.get("student_layers", [str(i) for i in range(n_s)]),
                                      arch.get("teacher_layers", [str(j) for j in range(n_t)]), title,
                                      chosen=arch.get("tutors", [])), path)


def derived_widths(archs: dict[str, dict], title: str, path: Path) -> Path | None:
    """Chosen width per block (one bar per arch file) against that block's choices (grey ticks)."""
    archs = {k: a for k, a in archs.items() if a.get("widths")}
    if not archs:
        return None
    first = next(iter(archs.values()))
    nblocks = max(len(arch["widths"]) for arch in archs.values())  # a scaled net (rnas scale) has more blocks
    fig, ax = plt.subplots(figsize=(min(12.5, 3.5 + 0.35 * nblocks * len(archs)), 4.0))
    bar = 0.8 / len(archs)
    for i, (name, arch) in enumerate(archs.items()):
        xs = [b - 0.4 + bar * (i + 0.5) for b in range(len(arch["widths"]))]
        bars = ax.bar(xs, arch["widths"], bar * 0.9,
                      label=f"{name}: {arch['params'] / 1e6:.3f}M params, {arch['macs'] / 1e6:.2f}M MACs")
        if len(archs) <= 2:
            ax.bar_label(bars, fontsize=7, padding=1)
    for b, choices in enumerate(first.get("width_choices", [])):
        ax.plot([b] * len(choices), choices, "_", color="0.3", ms=22, mew=1.5, zorder=3)
    ax.set_xticks(range(nblocks))
    ax.set_xlabel("block (grey ticks: its width choices)")
    ax.set_ylabel("output channels")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    tallest = max(max(w for arch in archs.values() for w in arch["widths"]),
                  max(max(c) for c in first.get("width_choices", [first["widths"]])))
    ax.set_ylim(0, tallest * 1.35)
    fig.tight_layout()
    return _save(fig, path)
