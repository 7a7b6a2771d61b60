"""Reading teacher checkpoints safely (``weights_only=True``) in the layouts robust models ship in:
RobustBench ``{'state_dict': ...}`` (optionally with ``mu``/``sigma``), raw state dicts, DataParallel
``module.`` prefixes, and the ``robustness`` library's ImageNet format (``model``/``state_dict`` with
``module.model.`` / ``module.attacker.`` prefixes and ``module.normalizer.new_mean/new_std``)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rnas.errors import UserError
from rnas.runtime.rundir import require_finite, unreadable_reason


def resolve_checkpoint(checkpoint: str | Path, model_dir: str | Path | None, dataset: str, threat: str) -> Path:
    """An explicit file, or a RobustBench model name resolved as ``<model_dir>/<dataset>/<threat>/<name>.pt``."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    if model_dir is not None and path.name == str(checkpoint) and not path.suffix:
        candidate = Path(model_dir) / dataset / threat / f"{checkpoint}.pt"
        if candidate.is_file():
            return candidate
        raise UserError(f"teacher checkpoint {checkpoint!r} not found: no file {candidate}")
    raise UserError(f"teacher checkpoint not found: {checkpoint} (give a file, or a model name with a model dir)")


def _strip_common_prefix(state: dict, prefix: str) -> dict:
    """Remove ``prefix`` only when it starts *every* key (never from the middle of a key)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state_dict ready for the architecture, {'mean', 'std'} found in the file, possibly empty)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # empty, foreign, code-executing or damaged file: say which
        reason = unreadable_reason(Path(path), err)
        advice = "; save the model's state_dict instead" if reason.startswith("refused") else ""
        raise UserError(f"{path}: {reason}{advice}") from None
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: no state dict found (expected tensors, {{'state_dict': ...}} or {{'model': ...}})")
    state = _strip_common_prefix(dict(state), "module.")
    norm: dict[str, torch.Tensor] = {}
    if any(k.startswith("attacker.") or k.startswith("normalizer.") for k in state):  # robustness library
        for ours, theirs in (("mean", "normalizer.new_mean"), ("std", "normalizer.new_std")):
            if theirs in state:
                norm[ours] = state[theirs].flatten()
        state = {k: v for k, v in state.items() if not k.startswith(("attacker.", "normalizer."))}
    for ours, theirs in (("mean", "mu"), ("std", "sigma"), ("mean", "mean"), ("std", "std")):
        if theirs in state:  # RobustBench entries with normalisation buffers (mu / sigma; mean / std: DMWideResNet)
            norm[ours] = state.pop(theirs).flatten()
    state = _strip_common_prefix(state, "model.")
    # TRADES / Rice et al. WideResNets define a `sub_block1` that their forward never uses
    state = {k: v for k, v in state.items() if not k.startswith("sub_block1.")}
    return state, norm


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:4])
    return shown + (f", ... (+{len(keys) - 4} more)" if len(keys) > 4 else "")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load ``state`` into ``model`` strictly; any mismatch is one line naming keys and the architecture."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise UserError(f"{path}: does not fit {arch}: {key} has shape {tuple(value.shape)}, the architecture "
                            f"expects {tuple(own[key].shape)} (wrong num_classes or architecture?)")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_listing(unexpected)}")
        raise UserError(f"{path}: does not fit {arch}: " + "; ".join(parts))
    require_finite(state, path)
    model.load_state_dict(state)
