"""The search spaces of RNAS-CL (paper Tables 3-4) as YAML specs, and their loader."""
from __future__ import annotations

from pathlib import Path

from .blocks import BLOCK_TYPES, BlockType, declare_block, unregister_block
from .errors import ArchError, SpecError
from .spec import BlockSpec, SpaceSpec, StageSpec, StemSpec, parse_space, read_space_file, spec_to_dict

SPACES_DIR = Path(__file__).resolve().parent
BUILTIN = ("s3", "s5", "s7", "m", "l", "is", "im", "i")

__all__ = ["BLOCK_TYPES", "BUILTIN", "ArchError", "BlockSpec", "BlockType", "SpaceSpec", "SpecError", "StageSpec",
           "StemSpec", "available_spaces", "declare_block", "load_space", "parse_space", "spec_to_dict",
           "unregister_block"]


def available_spaces() -> tuple[str, ...]:
    """Names of the built-in spaces, in the paper's order."""
    return BUILTIN


def load_space(name_or_path: str | Path | SpaceSpec) -> SpaceSpec:
    """A built-in space by name (case-insensitive, e.g. ``"S5"``) or a user's YAML file by path."""
    if isinstance(name_or_path, SpaceSpec):
        return name_or_path
    text = str(name_or_path)
    if text.lower() in BUILTIN and not Path(text).suffix:
        return read_space_file(SPACES_DIR / f"{text.lower()}.yaml", f"search_spaces/{text.lower()}.yaml")
    path = Path(text)
    if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
        raise SpecError(text, "", f"unknown search space (built-in: {', '.join(BUILTIN)}; or a path to a .yaml file)")
    return read_space_file(path)
