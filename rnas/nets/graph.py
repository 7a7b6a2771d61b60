"""A derived network and its student→tutor assignment as a networkx graph: GraphML for networkx, Gephi or
yEd, and a PNG drawing for reports.

Nodes are the student's attention taps (``student:<layer>``) and the teacher layers they can learn from
(``teacher:<layer>``); ``flow`` edges join consecutive taps of each net, ``tutor`` edges join each
student tap to its derived tutor j (arch.json's ``tutors``), weighted by that probability g_ij.

A student tap's block is read from its name: ``blocks.<i>.<tap>`` (``blocks.3.tap_out``) is a tap inside
block i of the network, where i indexes ``arch["widths"]`` and ``arch["width_choices"]`` (every block in
network order, fixed-width ones included — the module path of ``supernets.Network.blocks``); any other
tap (``tap_stem``) belongs to no block and gets block = width = -1.
"""
from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import networkx

from rnas.errors import UserError

_BLOCK_TAP = re.compile(r"blocks\.(\d+)\.")
_KEYS = ("space", "params", "macs", "widths", "student_layers", "teacher_layers", "tutors",
         "tutor_probabilities", "teacher")
# 900 px wide; 25 px per row of taps, 25 px below them, 95 px above for the title and column heads
_DPI, _WIDTH_IN, _ROW_IN, _BOTTOM_IN, _TOP_IN = 100, 9.0, 0.25, 0.25, 0.95


def tap_block(layer: str) -> int:
    """Index into ``arch["widths"]`` of the block a student tap belongs to (``blocks.3.tap_out`` -> 3),
    -1 for taps outside the blocks (``tap_stem``)."""
    match = _BLOCK_TAP.match(layer)
    return int(match.group(1)) if match else -1


def _teacher_name(teacher) -> str:
    if not isinstance(teacher, dict):
        return str(teacher)
    checkpoint = teacher.get("checkpoint")
    return f"{teacher.get('name')} ({checkpoint if checkpoint is not None else 'random weights'})"


def arch_graph(arch: dict) -> networkx.DiGraph:
    """DiGraph of an ``rnas derive`` arch dict: n_s student + n_t teacher tap nodes, n_s-1 + n_t-1 ``flow``
    edges and n_s ``tutor`` edges (attribute ``probability`` = tutor_probabilities[i][tutors[i]]).
    Every attribute is a str, int, float or bool, so the graph writes to GraphML as is."""
    missing = [k for k in _KEYS if k not in arch]
    if missing:
        raise UserError(f"arch: no {', '.join(map(repr, missing))}: not an arch.json written by rnas derive")
    students, teachers, widths = arch["student_layers"], arch["teacher_layers"], arch["widths"]
    if not len(students) == len(arch["tutors"]) == len(arch["tutor_probabilities"]):
        raise UserError(f"arch: {len(students)} student_layers but {len(arch['tutors'])} tutors and "
                        f"{len(arch['tutor_probabilities'])} tutor_probabilities rows: write it again with rnas derive")
    graph = networkx.DiGraph(space=str(arch["space"]), params=int(arch["params"]), macs=int(arch["macs"]),
                             teacher=_teacher_name(arch["teacher"]))
    for order, layer in enumerate(students):
        block = tap_block(layer)
        if block >= len(widths):
            raise UserError(f"arch: student_layers[{order}] {layer!r} is in block {block}, but widths has "
                            f"{len(widths)} blocks: write it again with rnas derive")
        graph.add_node(f"student:{layer}", kind="student", layer=layer, order=order, block=block,
                       width=int(widths[block]) if block >= 0 else -1)
    for order, layer in enumerate(teachers):
        graph.add_node(f"teacher:{layer}", kind="teacher", layer=layer, order=order)
    for side, layers in (("student", students), ("teacher", teachers)):
        for a, b in pairwise(layers):
            graph.add_edge(f"{side}:{a}", f"{side}:{b}", kind="flow")
    for i, (layer, j) in enumerate(zip(students, arch["tutors"], strict=True)):
        if not 0 <= j < len(teachers):
            raise UserError(f"arch: tutors[{i}] = {j} is not a teacher layer (0..{len(teachers) - 1})")
        graph.add_edge(f"student:{layer}", f"teacher:{teachers[j]}", kind="tutor",
                       probability=float(arch["tutor_probabilities"][i][j]))
    return graph


def write_graphml(arch: dict, path: str | Path) -> Path:
    """``arch_graph(arch)`` written to ``path`` as GraphML; returns the path."""
    networkx.write_graphml(arch_graph(arch), path)
    return Path(path)


def draw_arch_graph(arch: dict, path: str | Path) -> Path:
    """PNG of ``arch_graph(arch)``: student taps top-down in the left column (layer name, width), teacher
    layers in the right, tutor edges as opaque and thick as their probability. 900 px wide, 120 px plus
    25 px per row of the longer column high (100 dpi); returns the path."""
    try:
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("drawing the arch graph needs matplotlib: pip install -e '.[report]'") from None
    graph = arch_graph(arch)
    counts = {kind: sum(d["kind"] == kind for _, d in graph.nodes(data=True)) for kind in ("student", "teacher")}
    column_x = {"student": 0.32, "teacher": 0.68}
    # each column spans the full height, so a depth-proportional assignment draws as parallel lines
    pos = {node: (column_x[d["kind"]], 1.0 - d["order"] / max(counts[d["kind"]] - 1, 1))
           for node, d in graph.nodes(data=True)}
    rows = max(counts.values())
    height = _BOTTOM_IN + _ROW_IN * rows + _TOP_IN
    fig = Figure(figsize=(_WIDTH_IN, height), dpi=_DPI)
    ax = fig.add_axes((0.0, _BOTTOM_IN / height, 1.0, _ROW_IN * rows / height))
    half_row = 0.5 / max(rows - 1, 1)  # in y units: the axes hold exactly `rows` rows
    ax.set_xlim(0, 1)
    ax.set_ylim(-half_row, 1 + half_row)
    ax.axis("off")
    edges = graph.edges(data=True)
    flow = [(pos[a], pos[b]) for a, b, d in edges if d["kind"] == "flow"]
    ax.add_collection(LineCollection(flow, colors="0.75", linewidths=1.0, zorder=1))
    tutor = [(pos[a], pos[b], d["probability"]) for a, b, d in edges if d["kind"] == "tutor"]
    ax.add_collection(LineCollection([(a, b) for a, b, _ in tutor], zorder=2,
                                     colors=[(0.84, 0.15, 0.16, 0.2 + 0.8 * p) for *_, p in tutor],
                                     linewidths=[0.5 + 3.5 * p for *_, p in tutor]))
    for node, d in graph.nodes(data=True):
        x, y = pos[node]
        student = d["kind"] == "student"
        ax.plot(x, y, "o", ms=5, color="tab:blue" if student else "tab:gray", zorder=3)
        label = f"{d['layer']}  w={d['width']}" if student and d["width"] >= 0 else d["layer"]
        ax.text(x - 0.015 if student else x + 0.015, y, label, ha="right" if student else "left", va="center",
                fontsize=8, family="monospace")
    ax.text(column_x["student"], 1 + 0.8 * half_row, "student taps", ha="center", fontsize=9, weight="bold")
    ax.text(column_x["teacher"], 1 + 0.8 * half_row, "teacher layers", ha="center", fontsize=9,
            weight="bold")
    g = graph.graph
    fig.suptitle(f"space {g['space']}: {g['params'] / 1e6:.3f}M params, {g['macs'] / 1e6:.2f}M MACs\n"
                 f"tutors from teacher {g['teacher']} (line opacity and width: tutor probability)", fontsize=10)
    fig.savefig(path, format="png")
    return Path(path)


def short_layer(layer: str) -> str:
    """A tap's name as a figure's tick label: net.block1.layer.0.conv1 -> block1.0.conv1."""
    return layer.removeprefix("net.").replace("tap_", "").replace(".layer.", ".")


def tutor_heatmap_figure(probs, student_layers, teacher_layers, title: str, chosen=None):
    """The tutor probabilities g_ij (student taps x teacher layers) as a labelled heatmap whose colours span the
    matrix's own range (the probabilities of many tutors are all well below 1), the chosen tutor of each row
    circled when ``chosen`` is given: a matplotlib Figure outside pyplot, or None without matplotlib (the
    search's TensorBoard table and rnas report draw it alike)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    probs = [[float(p) for p in row] for row in probs]
    n_s, n_t = len(probs), len(probs[0])
    fig = Figure(figsize=(3.5 + 0.42 * n_t, 2.2 + 0.24 * n_s))
    ax = fig.add_subplot()
    image = ax.imshow(probs, vmin=0, vmax=max(max(row) for row in probs), cmap="viridis", aspect="auto")
    for i, j in enumerate(chosen or ()):
        ax.plot(j, i, "o", ms=9, mfc="none", mec="red", mew=1.8)
    ax.set_yticks(range(n_s), [short_layer(s) for s in student_layers], fontsize=8)
    ax.set_xticks(range(n_t), [short_layer(t) for t in teacher_layers], fontsize=8, rotation=60, ha="right")
    ax.set_ylabel("student tap")
    ax.set_xlabel("teacher layer")
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="tutor probability", fraction=0.04)
    ax.set_title(title + (" (red circle: chosen tutor)" if chosen is not None else ""))
    fig.tight_layout()
    return fig
