"""`rnas derive RUN`: the searched architecture and tutors of a search run, as RUN/arch.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

from rnas import __version__
from rnas.config.defaults import TUTOR_DERIVE, UNRECORDED_TUTOR_DERIVE
from rnas.errors import UserError
from rnas.method.distill import CrossLayerAttention
from rnas.method.tutors import TUTOR_DERIVATIONS, derive_tutors, tutor_diversity
from rnas.runtime.rundir import SEARCH_CHECKPOINT, atomic_write_json, load_checkpoint
from search_spaces import parse_space
from supernets import Network, budget_choices, derive


def load_search(run: str | Path) -> tuple[Network, CrossLayerAttention, dict]:
    """(supernet, tutor module, checkpoint) of a search run, after checking it is one this rnas can derive."""
    run = Path(run)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    if ckpt.get("format") != SEARCH_CHECKPOINT:
        raise UserError(f"{run}/checkpoint.pt: not an rnas search checkpoint")
    supernet = Network(parse_space(ckpt["spec"], f"{run}/checkpoint.pt:spec"), ckpt["num_classes"])
    supernet.load_state_dict(ckpt["supernet"])
    logits = [*supernet.arch_parameters(), ckpt["tutor"]["tutor_logits"]]
    if not all(bool(t.isfinite().all()) for t in logits):
        raise UserError(f"{run}/checkpoint.pt: its width or tutor logits are not finite (the search diverged); "
                        "nothing to derive")
    if ckpt["student_layers"] != [n for n, _ in supernet.tap_layers()]:
        raise UserError(f"{run}/checkpoint.pt: searched with the student taps of an older rnas "
                        f"({ckpt['student_layers'][:2]}...); its tutors do not fit this version: search again")
    tutor = CrossLayerAttention(len(ckpt["student_layers"]), len(ckpt["teacher_layers"]))
    tutor.load_state_dict(ckpt["tutor"])
    return supernet, tutor, ckpt


def widths_choices(supernet: Network, arch_path: str | Path, student_layers: list[str]) -> list[int]:
    """The choice index of every searched block for the widths of another arch.json of the same space
    (``rnas derive --widths-from``: compare tutor searches on one net)."""
    try:
        other = json.loads(Path(arch_path).read_text())
        widths = [int(w) for w in other["widths"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"--widths-from {arch_path}: not a readable arch.json ({type(err).__name__}: {err})") from None
    blocks = supernet.searched_blocks
    if other.get("student_layers") != student_layers or len(widths) != len(blocks):
        raise UserError(f"--widths-from {arch_path}: a net of another space ({len(widths)} widths); this search "
                        f"has {len(blocks)} searched blocks")
    for i, (w, block) in enumerate(zip(widths, blocks, strict=True)):
        if w not in block.width_choices:
            raise UserError(f"--widths-from {arch_path}: block {i} width {w} is not one of {list(block.width_choices)}")
    return [block.width_choices.index(w) for w, block in zip(widths, blocks, strict=True)]


def derive_run(run: str | Path, mac_target: float | None = None, loaded=None, tutor_derive: str = TUTOR_DERIVE,
               widths_from: str | Path | None = None) -> dict:
    """Arch description of a search run's checkpoint: widths, tutors, both probability tables, params,
    MACs, teacher, seed, rnas version. Deterministic: same checkpoint, same dict. Widths are the argmax
    choices, or with ``mac_target`` (default: the search's --mac-target) the most probable net that fills
    that budget (``supernets.budget_choices``), or those of the arch.json ``widths_from``. Tutors:
    ``tutor_derive`` of ``rnas.method.tutors`` on the tutor logits (balanced by default; argmax:
    j* = argmax_j g_ij, the paper).
    ``loaded``: ``load_search(run)``."""
    if tutor_derive not in TUTOR_DERIVATIONS:
        raise UserError(f"--tutor-derive {tutor_derive}: not one of {', '.join(TUTOR_DERIVATIONS)}")
    supernet, tutor, ckpt = loaded or load_search(run)
    cfg = ckpt["config"]
    mac_target = mac_target if mac_target is not None else cfg.get("mac_target")
    if widths_from is not None:
        choices = widths_choices(supernet, widths_from, ckpt["student_layers"])
        mac_target = None
    else:
        choices = budget_choices(supernet, mac_target) if mac_target else None
    arch = derive(supernet, choices)
    probs = tutor.tutor_probs().detach()
    tutors = derive_tutors(tutor.tutor_logits.detach(), tutor_derive)
    arch.update({
        "rnas_version": __version__, "student_layers": ckpt["student_layers"], "teacher_layers": ckpt["teacher_layers"],
        "tutors": tutors, "tutor_derive": tutor_derive, "tutor_objective": cfg.get("tutor_objective", "paper"),
        "tutor_diversity": tutor_diversity(tutors, probs),
        "tutor_probabilities": [[round(v, 6) for v in row] for row in probs.tolist()],
        "teacher": {"name": cfg["teacher"], "checkpoint": cfg["teacher_ckpt"], "model_dir": cfg["model_dir"],
                    "threat": cfg["threat"]},
        "data": cfg["data"], "seed": cfg["seed"], "search_epochs_done": ckpt["epoch"], "mac_target": mac_target,
    })
    if widths_from is not None:
        arch["widths_from"] = str(widths_from)
    return arch


def format_arch(arch: dict) -> str:
    budget = f", budget {arch['mac_target'] / 1e6:.4g}M MACs" if arch.get("mac_target") else ", argmax widths"
    if arch.get("widths_from"):
        budget = f", widths of {arch['widths_from']}"
    lines = [f"space {arch['space']}: {arch['params'] / 1e6:.3f}M params, {arch['macs'] / 1e6:.2f}M MACs "
             f"(teacher {arch['teacher']['name']}, seed {arch['seed']}{budget})", "",
             "block  width  choices (probability)"]
    for i, (w, choices, probs) in enumerate(zip(arch["widths"], arch["width_choices"], arch["probabilities"],
                                                strict=True)):
        listed = " ".join(f"{c}:{p:.2f}" for c, p in zip(choices, probs, strict=True))
        lines.append(f"{i:5d}  {w:5d}  {listed}")
    how = arch.get("tutor_derive", UNRECORDED_TUTOR_DERIVE)
    lines += ["", f"student layer -> tutor (teacher layer, probability; {how} derivation)"]
    for name, j, row in zip(arch["student_layers"], arch["tutors"], arch["tutor_probabilities"], strict=True):
        lines.append(f"{name:32s} -> {arch['teacher_layers'][j]} ({row[j]:.2f})")
    return "\n".join(lines)


def arch_filename(mac_target: float | None, tutor_derive: str = TUTOR_DERIVE, widths_from=None) -> str:
    """arch.json, or arch-<budget>.json for ``rnas derive --mac-target`` (arch-6.64M.json; the exact
    count when the M form would round it, e.g. arch-1234567.json); a tutor derivation other than the
    default (balanced) adds its name (arch-argmax.json, arch-6.64M-monotone.json), ``--widths-from`` adds
    ``widths``."""
    parts = ["arch"]
    if widths_from is not None:
        parts.append("widths")
    elif mac_target is not None:
        short = f"{mac_target / 1e6:g}"
        parts.append(f"{short}M" if float(short) * 1e6 == mac_target else f"{mac_target:.0f}")
    if tutor_derive != TUTOR_DERIVE:
        parts.append(tutor_derive)
    return "-".join(parts) + ".json"


def check_same_derivation(path: Path, tutor_derive: str) -> None:
    """An arch file ``rnas derive`` would replace holds tutors of the same derivation (one written before
    balanced became the default, or before the field existed, holds argmax tutors under the same name): a
    retrain of it, or a report, must not find other tutors there than it was run with."""
    try:
        held = json.loads(path.read_text()).get("tutor_derive", UNRECORDED_TUTOR_DERIVE)
    except (OSError, ValueError, AttributeError):
        return
    if held != tutor_derive:
        raise UserError(f"{path}: holds {held} tutors, not {tutor_derive}; derive with --tutor-derive {held} "
                        f"(it writes {arch_filename(None, held)} beside it) or move the file aside (nothing was "
                        "changed)")


def write_archs(run: str | Path, mac_targets: list[float | None], graph: bool = False,
                tutor_derive: str = TUTOR_DERIVE, widths_from: str | Path | None = None
                ) -> list[tuple[Path, dict]]:
    """Write RUN/arch.json (argmax widths, or the search's own budget) for None, RUN/arch-<budget>.json for each
    budget (names as ``arch_filename``); with ``graph`` also its ``rnas.nets.graph.arch_graph`` beside it as
    GraphML (arch.graphml, arch-<budget>.graphml). Every budget is derived (and checked) before any file
    is written."""
    loaded = load_search(run)
    if not os.access(run, os.W_OK):
        raise UserError(f"{run}: not writable; rnas derive writes its arch files into the search run (copy "
                        "the run to a writable place and derive there)")
    archs = [(Path(run) / arch_filename(t, tutor_derive, widths_from), derive_run(run, t, loaded, tutor_derive,
                                                                                  widths_from))
             for t in mac_targets]
    for path, _ in archs:
        check_same_derivation(path, tutor_derive)
    graphs = []
    if graph:
        import networkx

        from rnas.nets.graph import arch_graph

        graphs = [(path.with_suffix(".graphml"), arch_graph(arch)) for path, arch in archs]
    for path, arch in archs:  # atomically: a derive killed mid-write leaves the old file or none
        atomic_write_json(path, arch)
    for path, arch_net in graphs:
        networkx.write_graphml(arch_net, path)
    return archs


def write_arch(run: str | Path, mac_target: float | None = None) -> tuple[Path, dict]:
    """One arch file: ``write_archs(run, [mac_target])``."""
    return write_archs(run, [mac_target])[0]
