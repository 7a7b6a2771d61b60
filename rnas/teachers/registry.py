"""The teacher zoo's one table: TEACHERS maps a name (or a pattern such as ``wrn-<depth>-<widen>``) and an
input size to a builder and its defaults. Each architecture file registers its own entries with
``@register_teacher`` beside the class; teacher_arch, load_teacher and ``rnas teachers`` read the table."""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from rnas.data import DATASETS, dataset_info
from rnas.errors import UserError
from rnas.names import match_name

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TeacherInfo:
    """One teacher architecture of the zoo for one input size, with the defaults its checkpoints expect."""

    name: str  # an exact name, or a pattern whose <placeholders> match digits: "wrn-<depth>-<widen>"
    build: Callable[..., nn.Module]  # (num_classes, **placeholder values) -> the bare network
    description: str  # may use the name's <placeholders>: "WideResNet-<depth>-<widen>"
    input_size: int  # side of the images it is laid out for: 32 (CIFAR-like) or 224 (ImageNet-like)
    num_classes: int | None = None  # classes of the pretrained checkpoints it expects (None: any)
    mean: tuple[float, ...] | None = None  # default normalisation put inside the model (None: raw [0, 1])
    std: tuple[float, ...] | None = None
    any_size: bool = False  # also offered on datasets of another image size (adaptive pooling)
    example: str | None = None  # a concrete name for a pattern: "wrn-16-2"
    check: Callable[..., str | None] | None = None  # placeholder values -> why they are invalid, or None
    size: Callable[..., tuple[int, int]] | None = None  # (num_classes, **placeholders) -> exact (params, MACs)


@dataclass(frozen=True)
class TeacherArch:
    """A resolved teacher: the architecture for one input regime, and the normalisation its checkpoints expect."""

    description: str
    build: Callable[[int], nn.Module]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


TEACHERS: list[TeacherInfo] = []  # in registration order; a name may have one entry per input size


def register_teacher(name: str, **info):
    """Decorator: add the builder ``build(num_classes, **placeholders)`` to TEACHERS under ``name`` with the
    TeacherInfo fields ``info``; returns the builder."""
    def add(build):
        if any(t.name == name and t.input_size == info["input_size"] for t in TEACHERS):
            raise ValueError(f"teacher {name!r} at {info['input_size']}x{info['input_size']} is already registered")
        TEACHERS.append(TeacherInfo(name, build, **info))
        return build
    return add


def unregister_teacher(name: str) -> list[TeacherInfo]:
    """Remove (and return) every entry of ``name`` (a test's own teacher, say)."""
    removed = [t for t in TEACHERS if t.name == name]
    TEACHERS[:] = [t for t in TEACHERS if t.name != name]
    return removed


def _by_size() -> list[TeacherInfo]:
    """The entries, small-image architectures first (registration order within a size)."""
    return sorted(TEACHERS, key=lambda t: t.input_size)


def teacher_names() -> str:
    """The registry's names for messages: 'wrt34, wrn-<depth>-<widen> e.g. wrn-16-2, r18, ...'."""
    names = dict.fromkeys(t.name + (f" e.g. {t.example}" if t.example else "") for t in _by_size())
    return ", ".join(names)


def teacher_arch(name: str, dataset: str) -> TeacherArch:
    """Resolve a registered teacher name for a dataset: the entry of the dataset's image size, else one that
    runs on any size; a one-line UserError for an unknown name, a bad pattern value or a size mismatch."""
    found = [(t, values) for t in TEACHERS if (values := match_name(t.name, name)) is not None]
    if not found:
        raise UserError(f"unknown teacher {name!r} (known: {teacher_names()})")
    size = dataset_info(dataset).input_size
    info, values = next((f for f in found if f[0].input_size == size), None) or \
        next((f for f in found if f[0].any_size), None) or found[0]
    description = re.sub(r"<(\w+)>", lambda m: str(values[m[1]]), info.description)
    if info.input_size != size and not info.any_size:
        examples = " or ".join(d for d, i in DATASETS.items() if i.input_size == info.input_size)
        raise UserError(f"teacher {name!r} ({description}) is an architecture for {info.input_size}x"
                        f"{info.input_size} images, not {dataset}; use --data {examples}")
    if info.check and (reason := info.check(**values)):
        raise UserError(f"teacher {name!r}: {reason}")
    return TeacherArch(description, functools.partial(info.build, **values), info.mean, info.std)


def teacher_size(info: TeacherInfo) -> tuple[int | None, int | None]:
    """(parameters, conv + linear MACs of one image) of a registry entry (its example for a pattern), built
    on the meta device (shapes only, so a 147M-parameter net costs nothing); (None, None) for an entry that
    cannot be built there."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    values = match_name(info.name, info.example or info.name)
    if values is None:
        return None, None
    num_classes = info.num_classes or (1000 if info.input_size >= 224 else 10)
    if info.size is not None:  # counted layer by layer (and tested against FlopCounterMode): no build
        return info.size(num_classes, **values)
    try:
        with torch.device("meta"):
            net = info.build(num_classes, **values)
            with FlopCounterMode(display=False) as counter:
                net(torch.zeros(1, 3, info.input_size, info.input_size))
    except Exception:  # a third-party architecture that needs real tensors to build or run
        return None, None
    return sum(p.numel() for p in net.parameters()), counter.get_total_flops() // 2


def teacher_table() -> list[dict]:
    """One JSON-ready row per registry entry (small images first): name, description, input_size, num_classes,
    mean, std, any_size, example, params and MACs (of the example for a pattern; at its input size)."""
    rows = []
    for t in _by_size():
        params, macs = teacher_size(t)
        rows.append({"name": t.name, "description": t.description, "input_size": t.input_size,
                     "num_classes": t.num_classes, "mean": None if t.mean is None else list(t.mean),
                     "std": None if t.std is None else list(t.std), "any_size": t.any_size, "example": t.example,
                     "params": params, "macs": macs})
    return rows


def format_teacher_table() -> str:
    """`rnas teachers`: the registry as an aligned text table (columns 2+ spaces apart)."""
    def stats(values):
        return "-" if values is None else "(" + ", ".join(f"{v:g}" for v in values) + ")"
    def millions(value, unit):
        return "-" if value is None else f"{value / unit:.4g}"
    cells = [("name", "input", "classes", "params(M)", "MACs(G)", "mean", "std", "description")]
    cells += [(r["name"], f"{r['input_size']}" + ("+" if r["any_size"] else ""), str(r["num_classes"] or "any"),
               millions(r["params"], 1e6), millions(r["macs"], 1e9), stats(r["mean"]), stats(r["std"]),
               r["description"]) for r in teacher_table()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
                     for row in cells)
