"""The arms a derived net is retrained with (``rnas retrain --baseline``): RNAS-CL itself and the three baselines
of the paper's comparison, one row each. The retrain objective, the study's arm names, the report and the
quickstart all read this table."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Baseline:
    name: str  # the --baseline value
    arm: str  # its arm in a study and in a report's table
    title: str  # its row in the quickstart's table
    distill: str  # the objective's distillation term: cl (KL + gamma·L_attn), kd (KL only), none
    tutors: str | None  # where the attention term's tutors come from: searched, uniform, or None (no term)

    @property
    def needs_teacher(self) -> bool:
        return self.distill != "none"


BASELINES = {b.name: b for b in (
    Baseline("cl", "rnas-cl", "RNAS-CL (searched tutors)", "cl", "searched"),
    Baseline("ce", "ce", "CE only", "none", None),
    Baseline("kd", "kd", "logit KD only", "kd", None),
    Baseline("fixed", "fixed", "fixed uniform mapping", "cl", "uniform"),
)}
