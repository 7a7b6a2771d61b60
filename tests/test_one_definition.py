"""One definition per default and per table: the library's objects and the CLI share their defaults, the
baselines and the study's step kinds are tables, the files' format tags and atomic writes live in one module,
and the old flat module paths still import (with a warning) as the same module."""
import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from rnas.config import defaults
from rnas.engine.retrain import RetrainConfig
from rnas.engine.search import SearchConfig
from rnas.engine.teacher_train import TeacherTrainConfig
from rnas.engine.trainer import Objective, Trainer
from rnas.errors import UserError
from rnas.method import distill
from rnas.method.baselines import BASELINES
from rnas.moved import MOVED
from rnas.robust import adversarial

ROOT = Path(__file__).resolve().parent.parent


def _default(func, name):
    return inspect.signature(func).parameters[name].default


def test_the_library_objective_and_the_cli_share_their_defaults():
    objective, retrain = Objective(), RetrainConfig()
    assert objective.gamma == retrain.gamma_t == defaults.GAMMA_T
    pairs = [("kl", "kl"), ("kd_temperature", "kd_temperature"), ("eps", "eps"), ("step", "step"),
             ("steps", "steps"), ("beta", "beta"), ("map_size", "map_size"), ("nfgsm_noise", "nfgsm_noise")]
    assert [getattr(objective, a) for a, _ in pairs] == [getattr(retrain, b) for _, b in pairs]
    teacher = TeacherTrainConfig()
    assert (teacher.eps, teacher.step, teacher.steps, teacher.beta) == (objective.eps, objective.step,
                                                                        objective.steps, objective.beta)
    search = SearchConfig()
    assert (search.gamma_s, search.kd_temperature, search.map_size, search.kl, search.tutor_eps) == (
        defaults.GAMMA_S, defaults.KD_TEMPERATURE, defaults.MAP_SIZE, defaults.KL, defaults.EPS)


def test_the_loss_functions_default_to_the_same_values():
    assert _default(distill.rnas_loss, "gamma") == RetrainConfig().gamma_t
    assert _default(distill.rnas_loss, "temperature") == _default(distill.kl_divergence, "temperature") \
        == RetrainConfig().kd_temperature
    assert [_default(distill.flop_factor, k) for k in ("exponent", "alpha", "beta")] == [
        SearchConfig().mac_exponent, SearchConfig().flop_alpha, SearchConfig().flop_beta]
    assert _default(distill.teacher_targets, "map_size") == SearchConfig().map_size
    assert _default(adversarial.nfgsm_examples, "noise_scale") == RetrainConfig().nfgsm_noise


def test_the_baselines_are_one_table():
    from rnas.report.collect import _model_of_run  # noqa: F401 - the report reads the same table
    from rnas.study.plan import ARMS

    field = next(f for f in dataclasses.fields(RetrainConfig) if f.name == "baseline")
    assert tuple(field.metadata["choices"]) == tuple(BASELINES)
    assert {b.arm: {"baseline": b.name} for b in BASELINES.values()}.items() <= ARMS.items()
    assert [b.distill for b in BASELINES.values()] == ["cl", "none", "kd", "cl"]


def test_every_step_kind_a_study_plans_is_in_the_table():
    from rnas.study.plan import Step
    from rnas.study.steps import STEP_KINDS

    kinds = set(re.findall(r'Step\([^,]+, "(\w+)"', (ROOT / "rnas" / "study" / "plan.py").read_text()))
    assert kinds and kinds <= set(STEP_KINDS), kinds
    assert {k for k, v in STEP_KINDS.items() if v.trains} == {"search", "retrain", "finetune"}
    assert Step is not None


def test_trainer_from_config_has_a_builder_per_config_and_refuses_others():
    assert set(Trainer.BUILDERS) == {RetrainConfig, TeacherTrainConfig}
    with pytest.raises(TypeError, match="no builder for SearchConfig"):
        Trainer.from_config(SearchConfig())


def test_format_tags_and_atomic_renames_live_in_the_run_directory_module():
    tags = {}
    renames = []
    for path in (ROOT / "rnas").rglob("*.py"):
        text = path.read_text()
        for tag in re.findall(r'"(rnas-(?:search|train|study)-\d+)"', text):
            tags.setdefault(tag, set()).add(path.relative_to(ROOT).as_posix())
        if "os.replace(" in text:
            renames.append(path.relative_to(ROOT).as_posix())
    assert tags == {"rnas-search-1": {"rnas/runtime/rundir.py"}, "rnas-train-1": {"rnas/runtime/rundir.py"},
                    "rnas-study-1": {"rnas/runtime/rundir.py"}}
    # export publishes its verified file by a rename of its own (a hard link where it can): see export.py
    assert sorted(renames) == ["rnas/evaluation/export.py", "rnas/runtime/rundir.py"]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_imports_the_moved_module_with_a_warning(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert any(issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught)


def test_a_teacher_for_other_image_sizes_names_the_data_flag():
    from rnas.teachers import teacher_arch

    with pytest.raises(UserError, match=r"not cifar10; use --data imagenet100 or imagenet$"):
        teacher_arch("wrt50", "cifar10")


def test_specs_parse_without_torch():
    code = ("import sys, search_spaces\nspec = search_spaces.load_space('s5')\n"
            "assert 'torch' not in sys.modules and spec.num_blocks > 0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-500:]


def test_both_jobs_of_the_loop_have_every_member_of_its_protocol():
    from rnas.engine.loop import Job
    from rnas.engine.search import Searcher

    members = {name for name in vars(Job) if not name.startswith("_")} | set(Job.__annotations__)
    assert {"dist", "log_tables", "loader", "train_step", "state"} <= members
    for job in (Searcher, Trainer):
        instance_fields = set(inspect.getsource(job.__init__).split("self.")[1:])  # attributes set in __init__
        missing = [m for m in members if not hasattr(job, m)
                   and not any(part.startswith(m) for part in instance_fields)]
        assert missing == [], (job.__name__, missing)


def test_data_and_cost_helpers_take_their_settings_by_keyword():
    from rnas.data import make_loaders

    for func, first_keyword in ((make_loaders, "val_size"), (distill.flop_factor, "exponent"),
                                (distill.rnas_loss, "gamma")):
        kinds = {name: p.kind for name, p in inspect.signature(func).parameters.items()}
        assert kinds[first_keyword] is inspect.Parameter.KEYWORD_ONLY, func.__name__
