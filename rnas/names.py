"""Registry names with placeholders, shared by the attack and teacher registries: ``pgd<steps>`` matches
``pgd20`` with steps=20, ``wrn-<depth>-<widen>`` matches ``wrn-16-2``."""
from __future__ import annotations

import re


def match_name(pattern: str, name: str) -> dict[str, int] | None:
    """The <placeholder> values if ``name`` fits ``pattern`` ({} for an exact name), else None."""
    parts = re.split(r"<(\w+)>", pattern)
    regex = "".join(f"(?P<{p}>\\d+)" if i % 2 else re.escape(p) for i, p in enumerate(parts))
    found = re.fullmatch(regex, name)
    return None if found is None else {k: int(v) for k, v in found.groupdict().items()}
