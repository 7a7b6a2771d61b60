"""How tutors are searched and derived, and how diverse an assignment is.

*Objectives* (``rnas search --tutor-objective``) decide what the arch step's gradient on the tutor logits
is; the weight step and the width logits' gradients are the same for all of them:

- ``paper``: Eq. (1) as written. It is linear in the tutor weights g and no term couples the rows, so each
  row's optimum is the teacher tap nearest to that student layer; the flattest teacher map, near the centroid
  every student map is pulled to while g is uniform, becomes every row's nearest (a collapse onto one tap).
- ``standardised``: the arch step scores the tutors by each teacher column's distances z-scored over the
  student rows (per sample), so a teacher tap counts as a student layer's tutor when that layer matches it
  *better than the other student layers do*, not when its map is easy for everyone to match. The z-scores
  of a column sum to zero over the rows, so no column can be strictly best for every row.
- ``robust``: the tutor logits follow the student's adversarial loss on the arch slice after a look-ahead
  weight step (``rnas.method.tutor_robust``): a tutor is kept because training towards it makes the student harder
  to attack.
- ``robust-standardised``: the same look-ahead signal (how much a step down the adversarial loss moves each
  student map towards each teacher map), z-scored per teacher column over the student rows first, so a
  teacher map that every layer moves towards when it grows robust cannot take every row.

*Derivations* (``rnas derive --tutor-derive``) turn the searched scores (log tutor probabilities) into one
teacher tap per student tap: ``argmax`` per row (the paper), ``balanced`` (each tap used at most
⌈n_s/n_t⌉ times, the best such assignment by the Hungarian method) and ``monotone`` (tutor depth never
decreases with student depth, the best such assignment by dynamic programming). ``balanced`` is the
default (``rnas.config.defaults.TUTOR_DERIVE``); an arch.json without ``tutor_derive`` (written before the
field) is argmax.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# ---- objectives -------------------------------------------------------------------------------------------


def weighted_distance(weights: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Eq. (1): 1/(n_s n_t) sum_ij g_ij d_ij, batch mean. ``weights`` (B | 1, n_s, n_t), ``distances``
    (B, n_s, n_t)."""
    n_s, n_t = distances.shape[-2:]
    return (weights * distances).sum((1, 2)).mean() / (n_s * n_t)


def standardise_columns(distances: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, n_s, n_t) distances -> each sample's teacher columns z-scored over the student rows."""
    mean = distances.mean(1, keepdim=True)
    std = distances.std(1, keepdim=True, unbiased=False)
    return (distances - mean) / (std + eps)


def gradient_only(term: torch.Tensor) -> torch.Tensor:
    """A zero-valued tensor with ``term``'s gradient: added to a loss, it changes no reported value."""
    return term - term.detach()


@dataclass(frozen=True)
class TutorObjective:
    """One way to move the tutor logits in the arch step. ``arch_attention(g, d)`` returns the attention
    term that enters the arch step's Eq. (2) (its gradient reaches the width logits) and a surrogate whose
    gradient alone reaches the tutor logits (None: the attention term's own gradient does).
    ``hypergradient``: the tutor logits' gradient is computed apart (``rnas.method.tutor_robust``)."""

    name: str
    description: str
    hypergradient: bool = False
    standardised: bool = False

    def arch_attention(self, weights: torch.Tensor, distances: torch.Tensor):
        if self.name == "paper":
            return weighted_distance(weights, distances), None
        attention = weighted_distance(weights.detach(), distances)  # the width logits' gradient, unchanged
        if self.standardised and not self.hypergradient:
            return attention, weighted_distance(weights, standardise_columns(distances.detach()))
        return attention, None  # robust: the tutor logits get the look-ahead hypergradient instead


TUTOR_OBJECTIVES: dict[str, TutorObjective] = {}


def register_tutor_objective(objective: TutorObjective) -> TutorObjective:
    TUTOR_OBJECTIVES[objective.name] = objective
    return objective


register_tutor_objective(TutorObjective(
    "paper", "Eq. (1) as written: each student layer's nearest teacher map (collapses onto one tap)"))
register_tutor_objective(TutorObjective(
    "standardised", "arch step scores each teacher column's distances z-scored over the student layers",
    standardised=True))
register_tutor_objective(TutorObjective(
    "robust", "tutor logits follow the adversarial loss after a look-ahead weight step", hypergradient=True))
register_tutor_objective(TutorObjective(
    "robust-standardised", "the robust look-ahead signal z-scored per teacher column over the student layers",
    hypergradient=True, standardised=True))

# ---- derivations ------------------------------------------------------------------------------------------


def derive_argmax(scores: np.ndarray) -> list[int]:
    """j* = argmax_j score_ij per student layer (the paper)."""
    return [int(j) for j in np.asarray(scores).argmax(1)]


def derive_balanced(scores: np.ndarray) -> list[int]:
    """The assignment of largest total score that uses each teacher tap at most ⌈n_s/n_t⌉ times
    (Hungarian method on the score matrix with each column repeated ⌈n_s/n_t⌉ times)."""
    from scipy.optimize import linear_sum_assignment

    scores = np.asarray(scores, dtype=np.float64)
    n_s, n_t = scores.shape
    cap = math.ceil(n_s / n_t)
    rows, cols = linear_sum_assignment(np.repeat(scores, cap, axis=1), maximize=True)
    tutors = [0] * n_s
    for i, c in zip(rows.tolist(), cols.tolist(), strict=True):
        tutors[i] = c // cap
    return tutors


def derive_monotone(scores: np.ndarray) -> list[int]:
    """The assignment of largest total score whose tutor depth never decreases with student depth
    (j*(i) <= j*(i+1)), by dynamic programming over (student layer, teacher tap) in O(n_s n_t)."""
    scores = np.asarray(scores, dtype=np.float64)
    n_s, n_t = scores.shape
    best = scores[0].copy()  # best[j]: the best total of rows 0..i with row i on tap j
    back = np.zeros((n_s, n_t), dtype=np.int64)
    for i in range(1, n_s):
        prefix_arg = np.array([int(np.argmax(best[:j + 1])) for j in range(n_t)])  # first index of the max
        back[i] = prefix_arg
        best = best[prefix_arg] + scores[i]
    tutors = [int(np.argmax(best))]
    for i in range(n_s - 1, 0, -1):
        tutors.append(int(back[i, tutors[-1]]))
    return tutors[::-1]


TUTOR_DERIVATIONS = {"argmax": derive_argmax, "balanced": derive_balanced, "monotone": derive_monotone}


def derive_tutors(logits: torch.Tensor | np.ndarray, how: str = "argmax") -> list[int]:
    """Tutors from tutor logits (n_s, n_t): the scores are the rows' log-probabilities."""
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    return TUTOR_DERIVATIONS[how](logits.log_softmax(1).numpy())

# ---- diversity --------------------------------------------------------------------------------------------


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0.0 when either side is constant."""
    ra, rb = (torch.as_tensor(_average_ranks(v), dtype=torch.float64) for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.square().sum() * rb.square().sum()).sqrt()
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def _average_ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda k: values[k])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in order[start:end + 1]:
            ranks[k] = (start + end) / 2
        start = end + 1
    return ranks


def tutor_diversity(tutors: list[int], probs: torch.Tensor | None = None) -> dict[str, float]:
    """How spread an assignment is: ``tutors_distinct`` (teacher taps used), ``tutors_largest_share``
    (fraction of student layers on the most used tap), ``tutors_depth_rank_corr`` (Spearman correlation of
    tutor depth with student depth) and, with ``probs`` (n_s, n_t), ``tutor_entropy`` (mean row entropy in
    nats; log n_t is uniform, 0 is one-hot)."""
    counts = np.bincount(np.asarray(tutors, dtype=np.int64))
    out = {"tutors_distinct": int((counts > 0).sum()),
           "tutors_largest_share": round(float(counts.max() / len(tutors)), 6),
           "tutors_depth_rank_corr": round(spearman(list(range(len(tutors))), [float(t) for t in tutors]), 6)}
    if probs is not None:
        p = torch.as_tensor(probs, dtype=torch.float64)
        out["tutor_entropy"] = round(float(-(p * p.clamp_min(1e-300).log()).sum(1).mean()), 6)
    return out
