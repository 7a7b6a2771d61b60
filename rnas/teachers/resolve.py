"""What a ``--teacher`` name denotes: a zoo architecture (``wrn-34-10``), a RobustBench leaderboard entry
(``robustbench:NAME`` or the bare NAME) or a timm model (``timm:NAME``)."""
from __future__ import annotations

from dataclasses import replace

from rnas.errors import UserError
from rnas.teachers import robustbench
from rnas.teachers.registry import TeacherArch, teacher_arch
from rnas.teachers.timm_models import PREFIX as TIMM
from rnas.teachers.timm_models import timm_arch


def resolve_teacher(name: str, dataset: str, threat: str = "Linf") -> TeacherArch:
    """The architecture to build for ``name`` on ``dataset``, with the normalisation its checkpoints expect."""
    if name.startswith(TIMM):
        return timm_arch(name)
    found = robustbench.entry_name(name, dataset, threat)
    if found is None:
        return teacher_arch(name, dataset)
    arch_name, (mean, std) = robustbench.ENTRIES[(dataset, threat)][found]
    arch = teacher_arch(arch_name, dataset)
    return replace(arch, description=f"RobustBench {found} ({arch.description})", mean=mean, std=std)


def require_weights(cfg) -> None:
    """A training command's teacher needs weights: ``--teacher-ckpt``, a RobustBench entry's own file, or
    ``--random-teacher`` (a smoke run); a one-line UserError otherwise."""
    if cfg.teacher_ckpt is None and not cfg.random_teacher and \
            default_checkpoint(cfg.teacher, cfg.data, cfg.threat) is None:
        raise UserError("no teacher checkpoint: give --teacher-ckpt (or --random-teacher for a smoke run)")


def default_checkpoint(name: str, dataset: str, threat: str = "Linf") -> str | None:
    """The checkpoint a RobustBench entry is read from when none is given: its name (in the model dir)."""
    return None if name.startswith(TIMM) else robustbench.entry_name(name, dataset, threat)
