"""Search-space specs: the YAML schema, its validation and the typed objects the compiler consumes.

A spec is a plain YAML mapping. Every field is checked; a malformed spec raises :class:`SpecError`
whose one-line message names the file, the field path and the problem.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .blocks import BLOCK_TYPES
from .errors import SpecError, not_text

ACTIVATIONS = ("relu", "hswish", "swish", "gelu")
STEM_TYPES = ("conv", "convstem")
MAX_DEPTH = 64  # blocks per stage
MAX_WIDTH = 8192  # channels of any layer
DATA_CHANNELS = 3  # every dataset rnas reads (CIFAR, ImageNet-100, digits) has RGB images


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a mapping with the same key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: " at line L, column C: problem" (": problem" when it has no position)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split()) or "invalid YAML"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else f": {problem}"


MAX_YAML_VALUES = 100_000  # a spec, config or study file has hundreds


class YAMLTooLarge(yaml.YAMLError):
    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, None


def read_yaml(text: str):
    """``text`` parsed as YAML with duplicate keys rejected and at most MAX_YAML_VALUES values once its
    aliases are expanded (an alias bomb: a few hundred bytes of nested anchors that expand to billions of
    values, which any walk over the data would then take forever on); yaml.YAMLError otherwise. PyYAML
    builds an alias as a reference to the same object, so the count stops early and costs nothing."""
    data = yaml.load(text, Loader=UniqueKeyLoader)
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise YAMLTooLarge(f"more than {MAX_YAML_VALUES:,} values once its aliases are expanded "
                               "(nested anchors and aliases: refused)")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return data


@dataclass(frozen=True)
class BlockSpec:
    """One block type with its parameters (kernel size, expansion, ...), every declared parameter present
    (defaults filled in); read them as attributes (``spec.kernel``)."""

    type: str
    params: tuple[tuple[str, Any], ...] = ()

    def __getattr__(self, name: str):  # only reached when ``name`` is not a field
        for key, value in self.__dict__.get("params", ()):  # (empty while copy / pickle build the object)
            if key == name:
                return value
        raise AttributeError(f"block {self.__dict__.get('type')!r} has no parameter {name!r}")

    def as_dict(self) -> dict:
        return {"type": self.type, **dict(self.params)}


@dataclass(frozen=True)
class StageSpec:
    """A stage: ``depth`` blocks, the first with ``stride``; ``widths[i]`` are block i's choices (descending)."""

    depth: int
    widths: tuple[tuple[int, ...], ...]
    stride: int
    block: BlockSpec


@dataclass(frozen=True)
class StemSpec:
    """The fixed-width stem: one k×k conv-BN-act with ``stride`` (``conv``), or the two-layer ConvStem of
    Singh et al. (``convstem``): a stride-2 conv to channels/2, BN, act, then a conv with ``stride`` to channels."""

    type: str
    channels: int
    kernel: int = 3
    stride: int = 1
    act: str = "relu"


@dataclass(frozen=True)
class SpaceSpec:
    """A whole search space; ``source`` is the file it came from."""

    name: str
    input_size: int
    in_channels: int
    num_classes: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    description: str = ""
    paper: dict = field(default_factory=dict)
    source: str = "<dict>"

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)


class _Checker:
    """Walks a parsed YAML mapping, converting fields and raising SpecError with the field path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, problem: str):
        raise SpecError(self.source, path, problem)

    def mapping(self, value, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else str(key), f"unknown key (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                self.fail(f"{path}.{key}" if path else key, "missing required key")
        return value

    def integer(self, value, path: str, minimum: int = 1, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {type(value).__name__} {value!r}")
        if value < minimum:
            self.fail(path, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(path, f"must be <= {maximum}, got {value}")
        return value

    def number(self, value, path: str, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(path, f"expected a finite number, got {value!r}")
        if positive and value <= 0:
            self.fail(path, f"must be > 0, got {value}")
        return float(value)

    def choice(self, value, path: str, options: tuple[str, ...]) -> str:
        if value not in options:
            self.fail(path, f"unknown value {value!r} (expected one of: {', '.join(options)})")
        return value

    def text(self, value, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {type(value).__name__}")
        return value

    def odd_kernel(self, value, path: str) -> int:
        k = self.integer(value, path)
        if k % 2 == 0:
            self.fail(path, f"kernel size must be odd, got {k}")
        return k

    def widths(self, value, path: str) -> tuple[int, ...]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list of channel widths, got {type(value).__name__}")
        if not value:
            self.fail(path, "empty width choices")
        widths = [self.integer(w, f"{path}[{i}]", maximum=MAX_WIDTH) for i, w in enumerate(value)]
        seen = set()
        for w in widths:
            if w in seen:
                self.fail(path, f"duplicate width {w}")
            seen.add(w)
        return tuple(sorted(widths, reverse=True))

    def floats(self, value, path: str, n: int, positive: bool) -> tuple[float, ...]:
        if not isinstance(value, list) or len(value) != n:
            self.fail(path, f"expected a list of {n} numbers (one per input channel)")
        return tuple(self.number(v, f"{path}[{i}]", positive) for i, v in enumerate(value))


def _block(c: _Checker, value, path: str) -> BlockSpec:
    types = BLOCK_TYPES
    raw = c.mapping(value, path, ("type",) + tuple(sorted({k for t in types.values() for k in t.params})), ("type",))
    btype = c.choice(raw["type"], f"{path}.type", tuple(types))
    declared = types[btype].params
    for key in raw:
        if key != "type" and key not in declared:
            c.fail(f"{path}.{key}", f"not a parameter of block type {btype!r} (its parameters: {', '.join(declared)})")
    check = {"odd_kernel": c.odd_kernel, "int": c.integer, "number": c.number,
             "act": lambda v, where: c.choice(v, where, ACTIVATIONS)}
    params = tuple((key, check[kind](raw.get(key, default), f"{path}.{key}"))
                   for key, (default, kind) in declared.items())
    return BlockSpec(type=btype, params=params)


def _stage(c: _Checker, value, path: str, default_block: BlockSpec | None) -> StageSpec:
    raw = c.mapping(value, path, ("depth", "widths", "stride", "block"), ("depth", "widths"))
    depth = c.integer(raw["depth"], f"{path}.depth", maximum=MAX_DEPTH)
    stride = c.integer(raw.get("stride", 1), f"{path}.stride")
    if stride not in (1, 2):
        c.fail(f"{path}.stride", f"must be 1 or 2, got {stride}")
    block = _block(c, raw["block"], f"{path}.block") if "block" in raw else default_block
    if block is None:
        c.fail(f"{path}.block", "no block type: give a top-level 'block' or one per stage")
    widths = raw["widths"]
    if isinstance(widths, list) and widths and all(isinstance(w, list) for w in widths):
        if len(widths) != depth:
            c.fail(f"{path}.widths", f"{len(widths)} per-block width lists for depth {depth}")
        per_block = tuple(c.widths(w, f"{path}.widths[{i}]") for i, w in enumerate(widths))
    else:
        per_block = (c.widths(widths, f"{path}.widths"),) * depth
    check_widths = BLOCK_TYPES[block.type].check_widths
    for choices in per_block if check_widths else ():
        problem = check_widths(block, choices)
        if problem:
            c.fail(f"{path}.widths", problem)
    return StageSpec(depth=depth, widths=per_block, stride=stride, block=block)


def parse_space(data: Any, source: str = "<dict>") -> SpaceSpec:
    """Validate a parsed YAML mapping and return the typed :class:`SpaceSpec` (raises :class:`SpecError`)."""
    c = _Checker(source)
    keys = ("name", "description", "input_size", "in_channels", "num_classes", "mean", "std",
            "stem", "block", "stages", "paper")
    raw = c.mapping(data, "", keys, ("name", "input_size", "num_classes", "stem", "stages"))
    name = c.text(raw["name"], "name")
    in_channels = c.integer(raw.get("in_channels", DATA_CHANNELS), "in_channels")
    if in_channels != DATA_CHANNELS:
        c.fail("in_channels", f"must be {DATA_CHANNELS} (every dataset rnas reads has RGB images), got {in_channels}")
    stem_raw = c.mapping(raw["stem"], "stem", ("type", "channels", "kernel", "stride", "act"), ("type", "channels"))
    stem = StemSpec(
        type=c.choice(stem_raw["type"], "stem.type", STEM_TYPES),
        channels=c.integer(stem_raw["channels"], "stem.channels", maximum=MAX_WIDTH),
        kernel=c.odd_kernel(stem_raw.get("kernel", 3), "stem.kernel"),
        stride=c.integer(stem_raw.get("stride", 1), "stem.stride"),
        act=c.choice(stem_raw.get("act", "relu"), "stem.act", ACTIVATIONS),
    )
    if stem.stride not in (1, 2):
        c.fail("stem.stride", f"must be 1 or 2, got {stem.stride}")
    default_block = _block(c, raw["block"], "block") if "block" in raw else None
    if not isinstance(raw["stages"], list) or not raw["stages"]:
        c.fail("stages", "expected a non-empty list of stages")
    stages = tuple(_stage(c, s, f"stages[{i}]", default_block) for i, s in enumerate(raw["stages"]))
    mean = c.floats(raw["mean"], "mean", in_channels, positive=False) if "mean" in raw else None
    std = c.floats(raw["std"], "std", in_channels, positive=True) if "std" in raw else None
    if (mean is None) != (std is None):
        c.fail("mean" if mean is None else "std", "mean and std must be given together")
    paper = c.mapping(raw.get("paper", {}), "paper", ("params", "macs", "source"))
    for key in ("params", "macs"):
        if key in paper:
            c.number(paper[key], f"paper.{key}")
    input_size = c.integer(raw["input_size"], "input_size")
    total_stride = stem.stride * (2 if stem.type == "convstem" else 1) * math.prod(s.stride for s in stages)
    if input_size < total_stride:
        c.fail("input_size", f"{input_size} is smaller than the network's total stride {total_stride}")
    return SpaceSpec(
        name=name, input_size=input_size, in_channels=in_channels,
        num_classes=c.integer(raw["num_classes"], "num_classes"), stem=stem, stages=stages,
        mean=mean, std=std, description=c.text(raw.get("description", ""), "description"),
        paper=dict(paper), source=source,
    )


def spec_to_dict(spec: SpaceSpec) -> dict:
    """The plain (YAML/JSON-serialisable) form of a spec; ``parse_space`` of it gives the same spec."""
    def block(b: BlockSpec) -> dict:
        return b.as_dict()

    out = {"name": spec.name, "description": spec.description, "input_size": spec.input_size,
           "in_channels": spec.in_channels, "num_classes": spec.num_classes,
           "stem": {"type": spec.stem.type, "channels": spec.stem.channels, "kernel": spec.stem.kernel,
                    "stride": spec.stem.stride, "act": spec.stem.act},
           "stages": [{"depth": s.depth, "stride": s.stride, "block": block(s.block),
                       "widths": [list(w) for w in s.widths]} for s in spec.stages],
           "paper": dict(spec.paper)}
    if spec.mean is not None:
        out["mean"], out["std"] = list(spec.mean), list(spec.std)
    return out


def read_space_file(path: Path, source: str | None = None) -> SpaceSpec:
    """Read and validate one YAML spec file (``source`` is how errors name it; default: the path)."""
    source = source or str(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(source, "", f"cannot read file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise SpecError(source, "", not_text(err)) from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as err:
        raise SpecError(source, "", f"bad YAML{yaml_problem(err)}") from None
    return parse_space(data, source)
