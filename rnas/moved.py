"""The flat module paths of rnas 0.1 (``rnas.search``, ``rnas.taps``, ...) still import, for one release, as
the module in its room, with a DeprecationWarning naming the new path."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "rnas.adversarial": "rnas.robust.adversarial", "rnas.attacks": "rnas.robust.attacks",
    "rnas.cost": "rnas.engine.cost", "rnas.datasets": "rnas.data.registry",
    "rnas.derivation": "rnas.nets.derivation", "rnas.device": "rnas.runtime.device",
    "rnas.distill": "rnas.method.distill", "rnas.distributed": "rnas.runtime.distributed",
    "rnas.eval_state": "rnas.evaluation.eval_state", "rnas.evaluate": "rnas.evaluation.evaluate",
    "rnas.export": "rnas.evaluation.export", "rnas.graph": "rnas.nets.graph", "rnas.loop": "rnas.engine.loop",
    "rnas.optim": "rnas.engine.optim", "rnas.quickstart": "rnas.commands.quickstart",
    "rnas.report_figures": "rnas.report.figures", "rnas.report_html": "rnas.report.html",
    "rnas.report_tables": "rnas.report.tables", "rnas.retrain": "rnas.engine.retrain",
    "rnas.rundir": "rnas.runtime.rundir", "rnas.scaling": "rnas.nets.scaling", "rnas.search": "rnas.engine.search",
    "rnas.sections": "rnas.config.sections", "rnas.spaces_report": "rnas.report.spaces",
    "rnas.study_runner": "rnas.study.runner", "rnas.taps": "rnas.method.taps",
    "rnas.teacher_train": "rnas.engine.teacher_train", "rnas.trainer": "rnas.engine.trainer",
    "rnas.tutor_robust": "rnas.method.tutor_robust", "rnas.tutors": "rnas.method.tutors",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new path (the same module object)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):  # the module at the new path has run already
        pass


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
