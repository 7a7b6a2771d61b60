"""Derive: supernet -> arch description (plain JSON dict) -> standalone net, optionally initialised
from the supernet's weights (sliced to the kept channels)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from search_spaces import ArchError, SpecError, parse_space, spec_to_dict
from search_spaces.errors import not_text

from .channels import Channels
from .network import Network

EXHAUSTIVE_LIMIT = 1 << 16  # spaces with at most this many nets (S3: 32,768) are searched exhaustively


def budget_choices(supernet: Network, target_macs: float) -> list[int]:
    """The choice index per searched block of a net that fills a budget of ``target_macs`` MACs. Small
    spaces (S3) exactly: the most probable net within 5 % below the budget. Larger ones greedy by the
    width probabilities: from the argmax net, narrow the block whose step loses the least
    log-probability per MAC saved until the net fits; then fill the budget (a budget above the argmax
    net's cost is used, not left idle): among the moves that add MACs and still fit — any one block to
    any choice, or two blocks one step each (one may narrow) — take the least log-probability lost per
    MAC added, until none is left. Every candidate is costed exactly, in one batched evaluation per move."""
    logp = supernet.width_logit_matrix().detach().double().log_softmax(-1).cpu()  # -inf on padding only
    valid = supernet.choice_valid.cpu()
    choice = logp.argmax(-1)
    floor = _batched_macs(supernet, (valid.sum(-1) - 1)[None])[0]
    if floor > target_macs:
        raise ArchError(f"MAC target {target_macs:,.0f} is below the smallest net of {supernet.spec.name} "
                        f"({floor:,.0f} MACs)")
    counts = valid.sum(-1).tolist()
    if math.prod(counts) <= EXHAUSTIVE_LIMIT:
        return _exhaustive_choices(supernet, logp, counts, target_macs)
    cost = _batched_macs(supernet, choice[None])[0]
    while cost > target_macs:  # narrow until it fits
        cands = _moves(choice, valid, narrower_only=True)
        macs = _batched_macs(supernet, cands)
        score = _lost(logp, choice, cands) / (cost - macs).clamp_min(1e-9)
        best = int(score.argmin())
        choice, cost = cands[best], macs[best]
    while True:  # fill the budget
        cands = _moves(choice, valid, narrower_only=False)
        macs = _batched_macs(supernet, cands)
        fits = (macs > cost) & (macs <= target_macs)
        if not fits.any():
            return choice.tolist()
        score = _lost(logp, choice, cands) / (macs - cost).clamp_min(1e-9)
        best = int(torch.where(fits, score, torch.inf).argmin())
        choice, cost = cands[best], macs[best]


def _exhaustive_choices(supernet: Network, logp: torch.Tensor, counts: list[int], target_macs: float) -> list[int]:
    """Every net of a small space costed at once: the most probable one within 5 % below the budget, or,
    when no net lies there, the largest that fits."""
    grid = torch.cartesian_prod(*[torch.arange(k) for k in counts]).view(-1, len(counts))
    macs = _batched_macs(supernet, grid)
    score = logp[torch.arange(len(counts)), grid].sum(-1)
    window = (macs <= target_macs) & (macs >= 0.95 * target_macs)
    if window.any():
        best = torch.where(window, score, -torch.inf).argmax()
    else:
        best = torch.where(macs <= target_macs, macs, -torch.inf).argmax()
    return grid[best].tolist()


def _moves(choice: torch.Tensor, valid: torch.Tensor, narrower_only: bool) -> torch.Tensor:
    """Candidate choice vectors (M, B) one move from ``choice``: one block to another valid choice
    (only narrower ones if ``narrower_only``; a larger index is narrower), and, unless ``narrower_only``,
    two different blocks one step each."""
    nblocks, kmax = valid.shape
    block, k = torch.meshgrid(torch.arange(nblocks), torch.arange(kmax), indexing="ij")
    single = valid & ((k > choice[:, None]) if narrower_only else (k != choice[:, None]))
    cands = choice.repeat(int(single.sum()), 1)
    cands[torch.arange(len(cands)), block[single]] = k[single]
    if narrower_only:
        return cands
    step = single & ((k - choice[:, None]).abs() == 1)
    sb, sk = block[step], k[step]
    i, j = torch.triu_indices(len(sb), len(sb), 1)
    keep = sb[i] != sb[j]
    i, j = i[keep], j[keep]
    pairs = choice.repeat(len(i), 1)
    pairs[torch.arange(len(i)), sb[i]] = sk[i]
    pairs[torch.arange(len(i)), sb[j]] = sk[j]
    return torch.cat([cands, pairs])


def _lost(logp: torch.Tensor, choice: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """(M,) log-probability of ``choice`` minus that of each candidate (positive = less probable)."""
    rows = torch.arange(logp.shape[0])
    return logp[rows, choice].sum() - logp[rows, cands].sum(-1)


def _batched_macs(supernet: Network, choices: torch.Tensor) -> torch.Tensor:
    """(N,) exact MACs of N choice vectors (N, B)."""
    kmax = supernet.choice_valid.shape[1]
    weights = torch.nn.functional.one_hot(choices.to(supernet.choice_valid.device), kmax).double()
    return supernet.expected_macs(weights).cpu()


def derive(supernet: Network, choices: list[int] | None = None) -> dict:
    """Arch description of the supernet's argmax choice (or of ``choices``, a choice index per searched
    block): space, spec, widths per block, choice probabilities per block, exact params and MACs
    (conv + linear, at the spec's input size)."""
    probs = supernet.width_probs().detach().cpu()
    choices = supernet.argmax_choices() if choices is None else list(choices)
    widths, probabilities, searched = [], [], 0
    for block in supernet.blocks:
        if hasattr(block, "width_logits"):
            k = len(block.width_choices)
            widths.append(block.width_choices[choices[searched]])
            probabilities.append([round(p, 6) for p in probs[searched, :k].tolist()])
            searched += 1
        else:
            widths.append(block.width_choices[0])
            probabilities.append([1.0])
    params, macs = supernet.cost(choices)
    spec = supernet.spec
    return {"space": spec.name, "num_classes": supernet.num_classes, "input_size": spec.input_size,
            "widths": widths, "width_choices": [list(b.width_choices) for b in supernet.blocks],
            "probabilities": probabilities, "params": params, "macs": macs,
            "spec": spec_to_dict(spec)}


def read_arch(arch: dict | str | Path) -> tuple[dict, str]:
    """(arch dict, source name) from a dict or an arch.json path; unreadable files are an ArchError."""
    if isinstance(arch, dict):
        return _checked(arch, "<arch>"), "<arch>"
    path = Path(arch)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ArchError(f"{path}: cannot read arch file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ArchError(f"{path}: {not_text(err)}") from None
    except json.JSONDecodeError as err:
        raise ArchError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    return _checked(data, str(path)), str(path)


ARCH_FIELDS = {"spec": dict, "widths": list, "num_classes": int}  # required, with their JSON types


def _checked(arch, source: str) -> dict:
    """``arch`` if it is a JSON object with the required fields of the right types (else a one-line ArchError)."""
    if not isinstance(arch, dict):
        raise ArchError(f"{source}: expected a JSON object (as written by rnas derive), got {type(arch).__name__}")
    for key, kind in ARCH_FIELDS.items():
        if key not in arch:
            raise ArchError(f"{source}: {key}: missing required key (is this an arch.json of rnas derive?)")
        value = arch[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ArchError(f"{source}: {key}: expected {'an object' if kind is dict else kind.__name__}, "
                            f"got {value!r}"[:200])
    if arch["num_classes"] < 1:
        raise ArchError(f"{source}: num_classes: must be >= 1, got {arch['num_classes']}")
    for key in ("macs", "params"):
        value = arch.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ArchError(f"{source}: {key}: expected a whole number >= 0, got {value!r}"[:200])
    for key in ("teacher", "data"):
        kind = dict if key == "teacher" else str
        if key in arch and not isinstance(arch[key], kind):
            raise ArchError(f"{source}: {key}: expected {'an object' if kind is dict else 'a string'}, "
                            f"got {arch[key]!r}"[:200])
    return arch


def build_model(arch: dict | str | Path, supernet: Network | None = None) -> Network:
    """Standalone net from an arch description (dict or path to arch.json); with ``supernet`` its
    weights are initialised from the supernet's (exactly reproducing its argmax output)."""
    arch, source = read_arch(arch)
    try:
        spec = parse_space(arch["spec"], f"{source}:spec")
    except SpecError as err:
        raise ArchError(str(err)) from None
    choices = [w for s in spec.stages for w in s.widths]
    widths = arch["widths"]
    if not isinstance(widths, list) or len(widths) != len(choices):
        raise ArchError(f"{source}: widths: expected {len(choices)} widths (one per block)")
    for i, (w, allowed) in enumerate(zip(widths, choices, strict=True)):
        if w not in allowed:
            raise ArchError(f"{source}: widths[{i}]: {w!r} is not one of the block's choices {list(allowed)}")
    model = Network(spec, arch["num_classes"], widths)
    if supernet is not None:
        load_supernet_weights(model, supernet)
    return model


def _kept(ch: Channels, choices: list[int], device) -> torch.Tensor:
    if not ch.searched:
        return torch.arange(ch.size, device=device)
    return ch.kept(choices[ch.block]).to(device)


def load_supernet_weights(model: Network, supernet: Network) -> Network:
    """Copy the supernet's weights into ``model`` (a derived net of the same spec), keeping only the
    channels of the model's widths. Returns ``model``."""
    choices = []
    for block, mblock in zip(supernet.blocks, model.blocks, strict=True):
        if hasattr(block, "width_logits"):
            choices.append(list(block.width_choices).index(mblock.cout.size))
    targets = dict(model.named_modules())
    with torch.no_grad():
        for name, src in supernet.named_modules():
            if not hasattr(src, "channel_vars"):
                continue
            dst = targets[name]
            out_ch, in_ch = src.channel_vars
            out_idx = _kept(out_ch, choices, src.weight.device)
            for key, tensor in src.state_dict().items():
                value = tensor
                if tensor.dim() >= 1:
                    value = value.index_select(0, out_idx)
                if tensor.dim() >= 2 and in_ch is not None:
                    value = value.index_select(1, _kept(in_ch, choices, src.weight.device))
                getattr(dst, key).copy_(value)
    return model
