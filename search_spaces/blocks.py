"""The block table: one entry per block type with the spec parameters it reads (name -> (default, kind)), an
optional rule for a stage's width choices, and the module class that builds it.

WHAT a spec may say about a block lives here, so that specs parse without torch; HOW the block computes is
its class in ``supernets/blocks.py``, bound to the entry by ``supernets.register_block``. A new block type is
one ``register_block(name, params, check_widths)`` on its class: no other edit."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

PARAM_KINDS = ("odd_kernel", "int", "number", "act")  # how a block parameter is checked


@dataclass(frozen=True)
class BlockType:
    """A block type: ``params`` as name -> (default, kind); ``check_widths(block, widths) -> problem or
    None``; ``cls`` the module class (None until ``supernets`` binds one)."""

    params: dict[str, tuple[Any, str]]
    check_widths: Callable[[Any, tuple[int, ...]], str | None] | None = None
    cls: type | None = None


BLOCK_TYPES: dict[str, BlockType] = {}


def declare_block(name: str, params: dict[str, tuple[Any, str]], check_widths=None, cls: type | None = None
                  ) -> BlockType:
    """Enter (or replace) block type ``name`` in the table; the entry."""
    for key, (_, kind) in params.items():
        if kind not in PARAM_KINDS:
            raise ValueError(f"block {name!r}: parameter {key!r} has kind {kind!r}, not one of {PARAM_KINDS}")
    BLOCK_TYPES[name] = BlockType(dict(params), check_widths, cls)
    return BLOCK_TYPES[name]


def bind_class(name: str, cls: type) -> BlockType:
    """Attach the module class of a declared block type."""
    if name not in BLOCK_TYPES:
        raise ValueError(f"block {name!r}: not declared; give its parameters to register_block")
    BLOCK_TYPES[name] = replace(BLOCK_TYPES[name], cls=cls)
    return BLOCK_TYPES[name]


def unregister_block(name: str) -> BlockType:
    """Remove block type ``name`` from the table (specs may no longer name it); its entry."""
    if name not in BLOCK_TYPES:
        raise KeyError(f"block {name!r}: not registered")
    return BLOCK_TYPES.pop(name)


def _robust_res_widths(block, widths: tuple[int, ...]) -> str | None:
    for w in widths:
        mid = w * block.mid_ratio
        if mid != int(mid) or int(mid) % block.scales:
            return f"robust_res needs width*mid_ratio divisible by scales={block.scales}; width {w} gives {mid:g}"
    return None


# the built-in types (their classes: supernets/blocks.py, under the same names)
declare_block("mbconv", {"kernel": (3, "odd_kernel"), "expansion": (6, "int"), "act": ("hswish", "act")})
declare_block("basic", {"kernel": (3, "odd_kernel"), "act": ("relu", "act")})
declare_block("robust_res", {"kernel": (3, "odd_kernel"), "scales": (4, "int"), "mid_ratio": (1.0, "number"),
                             "se_reduction": (4, "int"), "act": ("relu", "act")}, _robust_res_widths)
