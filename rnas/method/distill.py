"""Cross-layer attention distillation (RNAS-CL Sections 3.1-3.2, 3.4): attention maps, the tutor
search of Eq. (1), the logit KL term, and the search (Eq. 2) and train (Eq. 3) losses."""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from rnas.config import defaults
from rnas.method.tutors import weighted_distance
from rnas.runtime.device import full_precision
from supernets import gumbel_softmax


class _ChannelEnergy(torch.autograd.Function):
    """sum_c A^2 over dim 1 (at least float32): one pass forward (a norm, squared) and one pass backward
    2·A·g (autograd's pow-then-sum makes two forward and three backward passes over A; every tapped
    layer pays them)."""

    @staticmethod
    def forward(ctx, activation: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(activation)
        # one fused reduction pass, no A² temporary; accumulates bf16 in fp32, fp64 stays fp64
        dtype = torch.promote_types(activation.dtype, torch.float32)
        return torch.linalg.vector_norm(activation, 2, dim=1, keepdim=True, dtype=dtype).square()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (activation,) = ctx.saved_tensors
        return (2 * grad * activation).to(activation.dtype)  # in fp32 (or fp64), then the input's dtype


def channel_energy(activation: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) sum over channels of A^2 for (N, C, H, W) activations A (at least float32)."""
    return _ChannelEnergy.apply(activation)


def _resize(energy: torch.Tensor, size: int) -> torch.Tensor:
    """(N, L, H, W) -> (N, L, size, size): area-averaged when shrinking, bilinear when growing."""
    if energy.shape[-2:] == (size, size):
        return energy
    if energy.shape[-1] >= size and energy.shape[-2] >= size:
        return F.interpolate(energy, size=(size, size), mode="area")
    return F.interpolate(energy, size=(size, size), mode="bilinear", align_corners=False)


def attention_maps(energies: list[torch.Tensor], size: int) -> torch.Tensor:
    """F^(A) of many layers at once: (N, L, size*size) from L channel energies (N, 1, H_l, W_l)
    (``channel_energy`` of each layer's activation), each resized to size×size, flattened and
    L2-normalised *per sample and layer*.

    Layers of equal resolution are resized in one call and all are normalised in one call, so a
    network's few resolutions, not its many layers, set the number of operations (forward and backward).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, energy in enumerate(energies):
        groups.setdefault(tuple(energy.shape[-2:]), []).append(i)
    maps = torch.cat([_resize(torch.cat([energies[i] for i in index], 1), size) for index in groups.values()], 1)
    order = [i for index in groups.values() for i in index]
    if order != sorted(order):  # resolutions interleave: restore the layer order
        maps = maps[:, torch.tensor(order, device=maps.device).argsort()]
    return F.normalize(maps.flatten(2), dim=2, eps=1e-12)


def teacher_targets(teacher: nn.Module, x: torch.Tensor, taps=None, map_size: int = defaults.MAP_SIZE,
                    context=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher logits q (N, classes, float32) and the attention maps of its ``taps`` (N, n_t, map_size²;
    None without taps) from one inference-mode forward under ``context`` (e.g. autocast). Both are
    copied out of inference mode, so autograd can use them."""
    with torch.inference_mode(), context or contextlib.nullcontext():
        q = teacher(x)
        maps = attention_maps(taps.collect(), map_size) if taps is not None else None
    return full_precision(q).clone(), (maps.clone() if maps is not None else None)


def attention_map(activation: torch.Tensor, size: int) -> torch.Tensor:
    """F^(A) of one layer: sum_c A^2 of (N, C, H, W) activations, resized to size×size (area-averaged
    when shrinking, bilinear when growing), flattened and L2-normalised *per sample*: (N, size*size)."""
    return attention_maps([channel_energy(activation)], size)[:, 0]


class CrossLayerAttention(nn.Module):
    """Eq. (1) of the search: L = 1/(n_s n_t) sum_i sum_j g_ij || F^(A_s^i) - F^(A_t^j) ||_2, batch mean.

    Owns ``tutor_logits`` (n_s, n_t). Tutor weights g: ``sample`` draws per-sample Gumbel-softmax at this
    module's own temperature ``tau``; ``expected`` is softmax(logits). The Gumbel weight multiplies each
    *pair's* distance, so every tutor logit gets a gradient. With the one-hot tutors of a derived
    architecture Eq. (1) is Eq. (3)'s term, computed by ``paired_attention_loss`` on the n_s mapped pairs only.
    """

    def __init__(self, n_student: int, n_teacher: int, tau: float = 5.0):
        super().__init__()
        self.n_student, self.n_teacher, self.tau = n_student, n_teacher, tau
        self.tutor_logits = nn.Parameter(torch.zeros(n_student, n_teacher))
        self.mode = "sample"

    def tutors(self) -> list[int]:
        """j* = argmax_j g_ij for every student layer."""
        return self.tutor_logits.argmax(1).tolist()

    def tutor_probs(self) -> torch.Tensor:
        return self.tutor_logits.softmax(1)

    def tutor_weights(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch | 1, n_s, n_t) weights g_ij (sample mode: Gumbel noise from ``generator``, default global)."""
        if self.mode == "sample":
            return gumbel_softmax(self.tutor_logits, batch, self.tau, generator)
        if self.mode == "expected":
            return self.tutor_probs()[None]
        raise ValueError(f"unknown tutor mode {self.mode!r} (sample, expected)")

    def pair_distances(self, student_maps: torch.Tensor, teacher_maps: torch.Tensor) -> torch.Tensor:
        """(B, n_s, n_t) Euclidean distances between every student and teacher map, one batched op."""
        return torch.cdist(student_maps, teacher_maps, compute_mode="donot_use_mm_for_euclid_dist")

    def forward(self, student_maps: torch.Tensor, teacher_maps: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """``student_maps`` (B, n_s, D), ``teacher_maps`` (B, n_t, D): normalised attention maps;
        ``weights`` (B | 1, n_s, n_t): tutor weights to use instead of drawing them."""
        weights = self.tutor_weights(student_maps.shape[0]) if weights is None else weights
        return weighted_distance(weights, self.pair_distances(student_maps, teacher_maps))


def paired_attention_loss(student_maps: torch.Tensor, tutor_maps: torch.Tensor, n_teacher: int) -> torch.Tensor:
    """Eq. (1) with one-hot tutors (Eq. 3): 1/(n_s n_t) sum_i ||F^(A_s^i) - F^(A_t^{j*(i)})||_2, batch mean.
    ``tutor_maps[:, i]`` is the map of student layer i's tutor; ``n_teacher`` is the teacher's tap count."""
    return (student_maps - tutor_maps).norm(dim=-1).sum(1).mean() / (student_maps.shape[1] * n_teacher)


def uniform_mapping(n_student: int, n_teacher: int) -> list[int]:
    """Depth-proportional fixed mapping (the ablation baseline): student layer i -> teacher layer
    round(i (n_t - 1) / (n_s - 1))."""
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = defaults.KL,
                  temperature: float = defaults.KD_TEMPERATURE) -> torch.Tensor:
    """Logit term, mean over the batch. ``paper``: KL(p, q) = sum_i p_i log(p_i / q_i) with p the student
    (Eq. 2 as written). ``hinton``: T^2 · KL(q_T || p_T) at temperature T."""
    if kind == "paper":
        log_p, log_q = student_logits.log_softmax(-1), teacher_logits.log_softmax(-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    if kind == "hinton":
        log_p = (student_logits / temperature).log_softmax(-1)
        log_q = (teacher_logits / temperature).log_softmax(-1)
        return temperature ** 2 * (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    raise ValueError(f"unknown KL kind {kind!r} (paper, hinton)")


FLOP_KINDS = ("power", "linear", "fbnetv2", "none")


def flop_factor(macs: torch.Tensor, reference_macs: float, kind: str = "power", *,
                exponent: float = defaults.MAC_EXPONENT, alpha: float = defaults.FLOP_ALPHA,
                beta: float = defaults.FLOP_BETA, target_macs: float | None = None,
                target_exponent: float = 1.0) -> torch.Tensor:
    """n_f of Eq. (2): the batch mean of a cost factor of each sample's network, from ``macs`` ((N,) MACs
    of the networks the forward sampled, i.e. its Gumbel weights; a scalar also works).

    ``power`` (default): (MACs / reference)^exponent, reference = the max-width net. Multiplying the loss
    by it makes a 1 % cut in MACs worth ``exponent`` % of the loss, whatever the loss's scale, so the
    trade-off does not drift as the loss falls. ``linear`` is exponent 1 (the paper's plain factor:
    a 1 % MAC cut is worth 1 % of the loss, which drove every search to the minimum-width net).
    ``fbnetv2``: alpha · log(MACs)^beta (FBNetV2 and the official code: alpha 0.2, beta 0.5).
    With ``target_macs`` T: max(MACs / T, T / MACs)^target_exponent, a pull towards T from both sides.
    """
    macs = macs.to(torch.float64)
    if target_macs is not None:
        if kind in ("fbnetv2", "none"):
            raise ValueError(f"a MAC target needs the power or linear factor, not {kind!r}")
        ratio = macs / target_macs
        return torch.maximum(ratio, 1 / ratio).pow(target_exponent).mean()
    if kind == "power":
        return (macs / reference_macs).pow(exponent).mean()
    if kind == "linear":
        return (macs / reference_macs).mean()
    if kind == "fbnetv2":
        return (alpha * torch.log(macs) ** beta).mean()
    raise ValueError(f"unknown FLOP factor kind {kind!r} ({', '.join(FLOP_KINDS[:3])})")


def backward_with_share(total: torch.Tensor, part: torch.Tensor | None,
                        params: list[torch.Tensor]) -> torch.Tensor | None:
    """``total.backward()``; with ``part`` (a term of ``total``, e.g. gamma·L_attn) also its share of the
    gradient over ``params``: ||g_part|| / (||g_part|| + ||g_total - g_part||), in [0, 1] (one extra
    backward of ``part``). 0.5 means the term pulls the weights as hard as everything else together."""
    if part is None or not part.requires_grad:
        total.backward()
        return None
    params = [p for p in params if p.requires_grad]
    part_grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
    total.backward()
    own = rest = total.new_zeros((), dtype=torch.float64)
    for p, g in zip(params, part_grads, strict=True):
        g_total = p.grad if p.grad is not None else torch.zeros_like(p)
        g = torch.zeros_like(p) if g is None else g
        own = own + g.double().square().sum()
        rest = rest + (g_total - g).double().square().sum()
    own, rest = own.sqrt(), rest.sqrt()
    return (own / (own + rest).clamp_min(1e-30)).detach()


def rnas_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              attention: torch.Tensor, *, gamma: float = defaults.GAMMA_T, kl: str = defaults.KL,
              temperature: float = defaults.KD_TEMPERATURE,
              n_f: torch.Tensor | None = None, base: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Eq. (2) when ``n_f`` is given: (CE + KL + gamma·L_attn)·n_f; Eq. (3) otherwise: CE + KL + gamma·L_attn.
    ``base`` replaces the CE term (e.g. the TRADES objective). Returns every term, ``total`` and
    ``attn_weighted`` (the attention term as it enters ``total``)."""
    terms = {"ce": F.cross_entropy(student_logits, target) if base is None else base,
             "kl": kl_divergence(student_logits, teacher_logits, kl, temperature),
             "attn": attention}
    weighted = gamma * terms["attn"]
    total = terms["ce"] + terms["kl"] + weighted
    if n_f is not None:
        terms["n_f"] = n_f.to(total.dtype)
        total, weighted = total * terms["n_f"], weighted * terms["n_f"]
    terms["total"], terms["attn_weighted"] = total, weighted
    return terms
