"""RobustScaling (Huang et al., "Revisiting Residual Networks for Adversarial Robustness", §4.2): the
compound rule that spends a FLOP budget on depth and width of a three-stage residual network:

- sum of depths : sum of widening factors = 7 : 3, the two together sized so the network costs the target;
- depths D1 : D2 : D3 = 2 : 2 : 1 and widening factors W1 : W2 : W3 = 2 : 2.5 : 1 (channels 16·W1, 32·W2,
  64·W3 after a 16-channel stem, as in a WideResNet).

The paper's "FLOPs" are multiply-accumulates: its WRN-A1 ... A4 cost 5.11 / 10.8 / 19.9 / 39.4 G, and the
conv + linear MACs of these layouts (``wrn_a_cost``) are within 3 % of that. The named presets are the
paper's table (which rounds the ratios its own way); ``robust_scaling`` solves the rule for any budget.

Two block types (``BASES``) fill a layout: ``wrn``, the pre-activation basic block of WRN-A, and
``robust_res``, the RobustResBlock of RobustResNet-A (a bottleneck that expands a stage's channels 4x; its
hierarchical 3x3 part runs 4 scales of floor(0.4 c) channels, residual SE with reduction 64). The paper's
Table 7 does not state these three numbers and the authors' released configs leave them at defaults that
give 144M parameters for A1; these are the values whose parameters and MACs match the paper's A1 ... A4
(19.2M / 39.0M / 75.9M / 147M, 5.11G ... 39.4G) within 1 % (``robust_res_cost``).
"""
from __future__ import annotations

from dataclasses import dataclass

DEPTH_RATIO = (2, 2, 1)
WIDTH_RATIO = (2, 2.5, 1)
DEPTH_TO_WIDTH = 7 / 3  # sum of depths : sum of widening factors


@dataclass(frozen=True)
class Layout:
    depths: tuple[int, int, int]
    widths: tuple[int, int, int]  # widening factors: stage channels 16·w1, 32·w2, 64·w3

    @property
    def name(self) -> str:
        """The teacher zoo's name of this layout: wrn-a-<d1>-<d2>-<d3>-<w1>-<w2>-<w3>."""
        return self.teacher("wrn")

    @property
    def channels(self) -> tuple[int, int, int]:
        """The stages' WRN channels 16·w1, 32·w2, 64·w3 (a RobustResBlock stage outputs 4x these)."""
        return 16 * self.widths[0], 32 * self.widths[1], 64 * self.widths[2]

    def teacher(self, base: str) -> str:
        """The zoo's name of this layout built from ``base`` blocks: wrn-a-... or robustresnet-a-..."""
        return f"{BASES[base].prefix}-" + "-".join(str(v) for v in (*self.depths, *self.widths))


@dataclass(frozen=True)
class Preset:
    target: float  # the budget the paper scaled for (MACs)
    depths: tuple[int, int, int]
    widths: tuple[int, int, int]
    params: float  # the paper's table
    flops: float


PRESETS = {
    "A1": Preset(5e9, (14, 14, 7), (5, 7, 3), 19.2e6, 5.11e9),
    "A2": Preset(10e9, (17, 17, 8), (7, 9, 4), 39.0e6, 10.8e9),
    "A3": Preset(20e9, (22, 22, 11), (8, 11, 5), 75.9e6, 19.9e9),
    "A4": Preset(40e9, (27, 28, 13), (10, 14, 6), 147e6, 39.4e9),
}


def wrn_a_cost(layout: Layout, num_classes: int = 10, size: int = 32) -> tuple[int, int]:
    """(parameters, conv + linear MACs of one image) of the pre-activation WRN-A network of ``layout``
    (``rnas.teachers.robustresnet.PreActResNet``), counted layer by layer."""
    channels = [16, 16 * layout.widths[0], 32 * layout.widths[1], 64 * layout.widths[2]]
    side = size
    params, macs = 3 * 16 * 9, 3 * 16 * 9 * side * side
    c_in = 16
    for stage, (depth, c_out) in enumerate(zip(layout.depths, channels[1:], strict=True)):
        for block in range(depth):
            stride = 2 if block == 0 and stage > 0 else 1
            side = -(-side // stride)
            pixels = side * side
            convs = c_in * c_out * 9 + c_out * c_out * 9 + (c_in * c_out if stride != 1 or c_in != c_out else 0)
            params += convs + 2 * c_in + 2 * c_out  # the convolutions and the affine BN1 / BN2
            macs += convs * pixels
            c_in = c_out
    params += 2 * c_in + c_in * num_classes + num_classes
    return params, macs + c_in * num_classes


RR_SCALES, RR_BASE_WIDTH, RR_SE_REDUCTION, RR_EXPANSION = 4, 64, 64, 4


def rr_width(channels: int) -> int:
    """One scale's width in a RobustResBlock of ``channels`` WRN channels: floor(c · 64 / 160)."""
    return channels * RR_BASE_WIDTH // 160


def robust_res_cost(layout: Layout, num_classes: int = 10, size: int = 32) -> tuple[int, int]:
    """(parameters, conv + linear MACs of one image) of the RobustResNet of ``layout``
    (``rnas.teachers.robustresnet.RobustResNet``), counted layer by layer."""
    side = size
    params, macs = 3 * 16 * 9, 3 * 16 * 9 * side * side
    c_in = 16
    for stage, (depth, c) in enumerate(zip(layout.depths, layout.channels, strict=True)):
        width, c_out = rr_width(c), RR_EXPANSION * c
        mid = width * RR_SCALES
        for block in range(depth):
            stride = 2 if block == 0 and stage > 0 else 1
            pixels_in, side = side * side, -(-side // stride)
            pixels = side * side
            reduce, hier, expand = c_in * mid, (RR_SCALES - 1) * width * width * 9, mid * c_out
            squeeze = 2 * c_out * (c_out // RR_SE_REDUCTION)
            shortcut = c_in * c_out if stride != 1 or c_in != c_out else 0
            params += reduce + hier + expand + squeeze + shortcut + 2 * (c_in + mid + (RR_SCALES - 1) * width + c_out)
            macs += reduce * pixels_in + (hier + expand + shortcut) * pixels + squeeze
            c_in = c_out
    params += 2 * c_in + c_in * num_classes + num_classes
    return params, macs + c_in * num_classes


@dataclass(frozen=True)
class Base:
    cost: object  # (layout, num_classes, size) -> (params, MACs)
    prefix: str  # the zoo's name of a layout: <prefix>-<d1>-...-<w3>; a preset is <prefix><n>
    description: str


BASES = {
    "wrn": Base(wrn_a_cost, "wrn-a", "WRN-A: pre-activation basic blocks, SiLU"),
    "robust_res": Base(robust_res_cost, "robustresnet-a", "RobustResNet-A: RobustResBlocks, ReLU"),
}


def layout_at(scale: float) -> Layout:
    """The rule's layout for a (continuous) widening scale w: widening factors WIDTH_RATIO·w, depths
    DEPTH_RATIO·d with sum(D) / sum(W) = 7/3, each rounded (at least 1)."""
    d = DEPTH_TO_WIDTH * sum(WIDTH_RATIO) * scale / sum(DEPTH_RATIO)
    depths = tuple(max(1, round(r * d)) for r in DEPTH_RATIO)
    return Layout(depths, tuple(max(1, round(r * scale)) for r in WIDTH_RATIO))


def robust_scaling(target_macs: float, num_classes: int = 10, size: int = 32, base: str = "wrn") -> Layout:
    """The rule's layout whose MACs (built from ``base`` blocks) come closest to ``target_macs`` (the
    largest on a tie), over the widening scales 0.25 ... 64 in steps of 1 %."""
    best, scale = None, 0.25
    while scale <= 64:
        layout = layout_at(scale)
        macs = BASES[base].cost(layout, num_classes, size)[1]
        if best is None or abs(macs - target_macs) <= abs(best[1] - target_macs):
            best = (layout, macs)
        scale *= 1.01
    return best[0]


def preset_for(target_macs: float, tolerance: float = 0.05) -> str | None:
    """The paper's preset scaled for this budget (within ``tolerance`` of its target), if any."""
    return next((name for name, p in PRESETS.items() if abs(target_macs / p.target - 1) <= tolerance), None)


def scale_report(target_macs: float, num_classes: int = 10, size: int = 32, base: str = "wrn") -> dict:
    """What ``rnas scale --flops`` prints: the rule's layout for the budget and, when the budget is one the
    paper scaled for, its preset (the table's layout), each with its parameters and MACs, built from
    ``base`` blocks (``BASES``)."""
    def entry(layout: Layout, name: str) -> dict:
        params, macs = BASES[base].cost(layout, num_classes, size)
        return {"teacher": name, "depths": list(layout.depths), "widths": list(layout.widths),
                "channels": list(layout.channels), "params": params, "macs": macs}

    rule = robust_scaling(target_macs, num_classes, size, base)
    out = {"target_macs": target_macs, "base": base, "rule": entry(rule, rule.teacher(base))}
    if (name := preset_for(target_macs)) is not None:
        preset = PRESETS[name]
        table = entry(Layout(preset.depths, preset.widths), f"{BASES[base].prefix}{name[1:]}")
        out["preset"] = {**table, "name": name, "paper_params": preset.params, "paper_flops": preset.flops}
    return out


def format_scale_report(report: dict) -> str:
    def line(label: str, e: dict) -> str:
        depths, widths = "-".join(map(str, e["depths"])), "-".join(map(str, e["widths"]))
        return (f"{label:14s} depths {depths:10s} widening {widths:8s}"
                f" channels {'-'.join(map(str, e['channels'])):12s} {e['params'] / 1e6:7.2f}M params "
                f"{e['macs'] / 1e9:7.3f}G MACs  --teacher {e['teacher']}")
    lines = [f"RobustScaling for {report['target_macs'] / 1e9:g}G MACs (sum D : sum W = 7 : 3, D 2:2:1, W 2:2.5:1), "
             f"{BASES[report['base']].description}",
             line("rule", report["rule"])]
    if "preset" in report:
        p = report["preset"]
        lines.append(line(f"paper's {p['name']}", p))
        lines.append(f"{'':14s} the paper's table: {p['paper_params'] / 1e6:g}M params, {p['paper_flops'] / 1e9:g}G "
                     f"FLOPs ({100 * (p['params'] / p['paper_params'] - 1):+.1f} % / "
                     f"{100 * (p['macs'] / p['paper_flops'] - 1):+.1f} % here)")
        if (p["depths"], p["widths"]) != (report["rule"]["depths"], report["rule"]["widths"]):
            lines.append(f"{'':14s} the table rounds the ratios its own way: the preset follows the table")
    return "\n".join(lines)


# ---- growing a derived rnas net ------------------------------------------------------------------------------

def _with_widths(spec: dict, widths: list[int]) -> dict:
    """A copy of ``spec`` whose blocks have the single width choices ``widths`` (in block order)."""
    out, start = {**spec, "stages": [dict(s) for s in spec["stages"]]}, 0
    for stage in out["stages"]:
        stage["widths"] = [[w] for w in widths[start:start + stage["depth"]]]
        start += stage["depth"]
    return out


def _grown_spec(arch: dict, scale: float, width_only: bool = False) -> tuple[dict, list[int]]:
    """The spec and widths of ``arch`` grown by ``scale``: the net's total depth times ``scale``,
    distributed 2 : 2 : 1 over three stages (over any other number of stages: as the net had it), each
    block's width times ``scale`` rounded to a multiple of 4 (at least 4; a new block takes the width of its
    stage's last block), stem and head unchanged. At scale 1 a three-stage net keeps its widths and moves
    its depth into the paper's proportions. ``width_only``: the depths stay, only the widths grow."""
    stages = arch["spec"]["stages"]
    total = sum(s["depth"] for s in stages)
    shares = DEPTH_RATIO if len(stages) == 3 else tuple(s["depth"] for s in stages)
    depths = ([s["depth"] for s in stages] if width_only else
              [max(1, round(scale * total * r / sum(shares))) for r in shares])
    widths, start = [], 0
    for stage, depth in zip(stages, depths, strict=True):
        own = arch["widths"][start:start + stage["depth"]]
        start += stage["depth"]
        grown = [max(4, 4 * round(w * scale / 4)) for w in own]
        widths += (grown + [grown[-1]] * depth)[:depth]
    spec = {**arch["spec"], "stages": [{**s, "depth": d} for s, d in zip(stages, depths, strict=True)]}
    return _with_widths(spec, widths), widths


def _tutors_by_depth(tutors: list[int], n_new: int) -> list[int]:
    """Student tap i of n_new takes the tutor of the original tap at the same relative depth."""
    n_old = len(tutors)
    if n_new == 1 or n_old == 1:
        return [tutors[-1]] * n_new
    return [tutors[round(i * (n_old - 1) / (n_new - 1))] for i in range(n_new)]


def _fill(candidate: tuple, target_macs: float, source: str, num_classes: int) -> tuple:
    """Widen single blocks by 4 channels (each at most once: the common scale leaves up to one rounding
    step of every block unused, and no block should outgrow the others), the one adding the fewest MACs
    first, while the net stays within the budget."""
    from search_spaces import parse_space
    from supernets import Network

    spec, widths, net, params, macs = candidate
    widened: set[int] = set()
    while True:
        trials = []
        for i in (i for i in range(len(widths)) if i not in widened):
            wider = widths[:i] + [widths[i] + 4] + widths[i + 1:]
            trial_spec = _with_widths(spec, wider)
            trial = Network(parse_space(trial_spec, f"{source}: grown spec"), num_classes)
            cost = trial.cost([])
            if cost[1] <= target_macs:
                trials.append((cost[1], i, trial_spec, wider, trial, cost[0]))
        if not trials:
            return spec, widths, net, params, macs
        macs, i, spec, widths, net, params = min(trials, key=lambda t: t[:2])
        widened.add(i)


def _grown(arch: dict, scale: float, width_only: bool, source: str) -> tuple:
    """(spec, widths, net, params, MACs) of ``arch`` grown by ``scale``."""
    from search_spaces import parse_space
    from supernets import Network

    spec, widths = _grown_spec(arch, scale, width_only)
    net = Network(parse_space(spec, f"{source}: grown spec"), arch["num_classes"])
    return spec, widths, net, *net.cost([])


def smallest_growth(arch: dict, source: str = "<arch>") -> int:
    """The MACs of ``arch``'s own depth laid out 2 : 2 : 1 at its own widths: the least RobustScaling can grow
    it to (widening alone starts from the net's own MACs)."""
    return _grown(arch, 1.0, False, source)[4]


def scale_arch(arch: dict, target_macs: float, source: str = "<arch>", width_only: bool = False) -> dict:
    """``arch`` (an rnas arch.json) grown to the largest RobustScaling-shaped net whose MACs do not exceed
    ``target_macs``: one scale for depth and width together (sum of depths and sum of widths grow alike, as
    the rule keeps their 7 : 3 ratio fixed), depth distributed 2 : 2 : 1 over the stages (``_grown_spec``),
    exact params and MACs, tutors of new taps carried over by relative depth. ``width_only``: the same budget
    reached by widening alone (the comparison the rule is judged against). Raises UserError for a budget
    below the net's own cost."""
    from rnas.errors import UserError

    def build(scale: float):
        return _grown(arch, scale, width_only, source)

    own = arch.get("macs")
    if not isinstance(own, int) or own <= 0:
        raise UserError(f"{source}: macs: not an arch.json with an exact MAC count (write it with rnas derive)")
    if target_macs < own:
        raise UserError(f"--macs {target_macs / 1e6:g}M: below the net's own {own / 1e6:.4g}M MACs "
                        "(rnas scale grows a net)")
    if (smallest := build(1.0)[4]) > target_macs:
        raise UserError(f"--macs {target_macs / 1e6:g}M: even the net's own depth in the 2 : 2 : 1 layout costs "
                        f"{smallest / 1e6:.4g}M MACs; give a larger budget, or --width-only to widen the net as it is")
    low, high = 1.0, 2.0  # the cost only grows with the scale: bisect for the largest scale within the budget
    while build(high)[4] <= target_macs and high < 64:
        low, high = high, 2 * high
    for _ in range(24):
        middle = (low + high) / 2
        low, high = (middle, high) if build(middle)[4] <= target_macs else (low, middle)
    best = _fill(build(low), target_macs, source, arch["num_classes"])
    spec, widths, net, params, macs = best
    rule = "width only" if width_only else "RobustScaling"
    if isinstance(spec.get("description"), str):  # it named the searched depths; say what the net is now
        depths = "-".join(str(stage["depth"]) for stage in spec["stages"])
        spec = {**spec, "description": f"{spec['description']}; grown by {rule} to depth {depths}, "
                                       f"{macs / 1e6:.2f}M MACs"}
    student_layers = [name for name, _ in net.tap_layers()]
    grown = {**arch, "spec": spec, "widths": widths, "width_choices": [[w] for w in widths],
             "probabilities": [[1.0] for _ in widths], "params": params, "macs": macs,
             "student_layers": student_layers,
             "scaled_from": {"source": source, "macs": own, "params": arch.get("params"), "target_macs": target_macs,
                             "rule": rule}}
    if isinstance(arch.get("tutors"), list) and arch["tutors"]:
        grown["tutors"] = _tutors_by_depth(arch["tutors"], len(student_layers))
        grown.pop("tutor_probabilities", None)  # the searched probabilities belong to the original taps
        if "tutor_diversity" in arch:
            from rnas.method.tutors import tutor_diversity

            grown["tutor_diversity"] = tutor_diversity(grown["tutors"])
    return grown
