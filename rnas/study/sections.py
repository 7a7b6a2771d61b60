"""The arms and eval sections of a study file (``rnas study``), checked and turned into what the plan needs:
the arms with their adversarial training, compute budgets and fine-tunes, and the evaluation configs. Every
problem is a one-line ``UserError`` naming the field."""
from __future__ import annotations

import dataclasses

from rnas.config import coerce_field, validate
from rnas.engine.retrain import AT_MODES
from rnas.errors import UserError
from rnas.evaluation.evaluate import EvalConfig
from rnas.method.baselines import BASELINES
from rnas.robust.attacks import check_attack, parse_eps
from rnas.study.cluster import ARM_KINDS, fail, mapping, resources

ARMS = {**{b.arm: {"baseline": b.name} for b in BASELINES.values()},
        "control-teacher": {"baseline": "cl"}}  # RNAS-CL from the study's control teacher
FINETUNES = {"trades": {"trades": True}, "trades+mbn": {"trades": True, "mbn": True}}
EVAL_KEYS = ("attacks", "eps", "n", "batch_size", "seed", "normalized", "sweep")


def as_list(value, where: str) -> list:
    if isinstance(value, (str, int, float)):
        return [value]
    if not isinstance(value, list) or not value:
        raise fail(where, "expected a non-empty list")
    return value


def build_config(cls, values: dict, where: str):
    """``cls(**values)`` validated; a range error names the section."""
    try:
        config = cls(**values)
        validate(config)
    except UserError as err:
        raise fail(where, str(err)) from None
    except TypeError as err:
        raise fail(where, f"not a setting of this step ({err})") from None
    return config


def arm_name(arm: str, at: str, compute: float | None) -> str:
    """rnas-cl, ce-pgd, rnas-cl-nfgsm-15ce: the arm's run directory under its net."""
    return arm + ("" if at == "none" else f"-{at}") + ("" if compute is None else f"-{compute:g}ce")


def read_arms(value, where: str, have_control: bool, base_seed: int = 0,
              study_seeds: list[int] | None = None) -> list[tuple[str, str, float | None, list[str], dict, int | None]]:
    """[(arm, at, compute budget, [fine-tune variants], resources, seed)], one per budget and seed, from
    entries ``rnas-cl`` or ``{arm: ce, at: pgd, budget: [15, 30], seeds: [0, 1, 2], finetune: [trades,
    trades+mbn], resources: {retrain: {gpus: 2}}}`` (seed None: the retrain section's, ``base_seed``).
    ``study_seeds``: the study's ``seeds:``, every arm's (an arm's own ``seeds:`` beside them is refused)."""
    arms = []
    for i, entry in enumerate(as_list(value, where)):
        here = f"{where}[{i}]"
        at, budgets, res, seeds = "none", [None], {}, [None] if study_seeds is None else list(study_seeds)
        if isinstance(entry, dict):
            unknown = [k for k in entry if k not in ("arm", "finetune", "at", "budget", "seeds", "resources")]
            if unknown:
                raise fail(f"{here}.{unknown[0]}", "unknown key (arm, at, budget, seeds, finetune, resources)")
            if entry.get("seeds") is not None and study_seeds is not None:
                raise fail(f"{here}.seeds", "beside the study's seeds: (every arm runs under those); drop one of them")
            if entry.get("seeds") is not None:
                seeds = [_seed(v, f"{here}.seeds") for v in as_list(entry["seeds"], f"{here}.seeds")]
                if len(set(seeds)) != len(seeds):
                    raise fail(f"{here}.seeds", f"{seeds}: each seed once")
            res = resources(entry.get("resources"), f"{here}.resources", ARM_KINDS)
            arm, tunes = entry.get("arm"), as_list(entry.get("finetune") or [], f"{here}.finetune") \
                if entry.get("finetune") else []
            at = entry.get("at", "none")
            if at not in AT_MODES:
                raise fail(f"{here}.at", f"{at!r}: one of {', '.join(AT_MODES)}")
            if entry.get("budget") is not None:
                budgets = [_compute(b, f"{here}.budget") for b in as_list(entry["budget"], f"{here}.budget")]
        else:
            arm, tunes = entry, []
        if not isinstance(arm, str) or arm not in ARMS:
            raise fail(here, f"{arm!r}: not an arm (one of {', '.join(ARMS)})")
        if arm == "control-teacher" and not have_control:
            raise fail(here, "control-teacher needs a control_teacher section")
        for tune in tunes:
            if not isinstance(tune, str) or tune not in FINETUNES:
                raise fail(f"{here}.finetune", f"{tune!r}: one of {', '.join(FINETUNES)}")
        for compute in dict.fromkeys(budgets):
            for seed in seeds:
                same = base_seed if seed is None else seed
                twin = next((a for a in arms if a[:3] == (arm, at, compute)
                             and (base_seed if a[5] is None else a[5]) == same), None)
                if twin is not None:
                    seeded = "" if seed is None and twin[5] is None else f" with seed {same}"
                    raise fail(here, f"{arm_name(arm, at, compute)} is listed twice{seeded}")
                arms.append((arm, at, compute, list(dict.fromkeys(tunes)), res, seed))
    return arms


def _seed(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(where, f"{value!r}: a whole number >= 0 (rnas retrain --seed)")
    return value


def read_study_seeds(data: dict, where: str, sections: dict[str, dict]) -> tuple[list[int] | None, bool]:
    """The study's ``seeds:`` (None without) and ``share_search:``: each seed is a search ``--seed`` and every
    retrain's ``--seed`` of that search's nets, unless ``share_search: true`` (one search, its nets retrained
    under each seed). A section's own ``seed`` (``sections``: search / retrain / finetune flags) beside them is
    refused."""
    seeds, share = data.get("seeds"), data.get("share_search")
    if share is not None and not isinstance(share, bool):
        raise fail(f"{where}: share_search", f"{share!r}: true or false")
    if seeds is None:
        if share is not None:
            raise fail(f"{where}: share_search", "only with seeds: (whether the seeds share one search)")
        return None, False
    seeds = [_seed(v, f"{where}: seeds") for v in as_list(seeds, f"{where}: seeds")]
    if len(set(seeds)) != len(seeds):
        raise fail(f"{where}: seeds", f"{seeds}: each seed once")
    for section, flags in sections.items():
        if "seed" in flags:
            raise fail(f"{where}: {section}.seed", "set beside the study's seeds: (each of them is the --seed of its "
                                                   "search and retrains); drop one of them")
    return seeds, bool(share)


def seeded_name(run: str, seed: int | None, base_seed: int) -> str:
    """rnas-cl-s1: an arm's run under ``seed``; the retrain section's own seed (``base_seed``) keeps the plain
    name, so that adding ``seeds: [0, 1, 2]`` to a finished study only adds runs."""
    return run if seed is None or seed == base_seed else f"{run}-s{seed}"


def _compute(value, where: str) -> float:
    """A compute budget in CE-epoch equivalents: a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value \
            or value == float("inf"):
        raise fail(where, f"{value!r}: a number of CE-epoch equivalents > 0")
    return float(value)


def read_evals(value, where: str, shared: dict) -> dict[str, EvalConfig]:
    """The study's evaluations: ``pixel`` (the table), optionally ``normalized`` (the official protocol's
    attacks) and ``sweep`` (accuracy vs eps)."""
    value = mapping(value, where)
    for key in value:
        if key not in EVAL_KEYS:
            raise fail(f"{where}.{key}", f"unknown key (one of {', '.join(EVAL_KEYS)})")
    base = {k: v for k, v in shared.items() if k in ("data", "data_dir", "val_size", "val_select", "val_report",
                                                      "split_seed", "split_pool", "device") and v is not None}
    for key in ("n", "batch_size", "seed"):
        if key in value:
            base[key] = coerce_field(EvalConfig, key, value[key], where)
    if "eps" in value:
        base["eps"] = _eps(value["eps"], f"{where}.eps")
    evals = {"pixel": _eval_config({**base, "attacks": _attacks(value.get("attacks", ["clean", "pgd20"]),
                                                                 f"{where}.attacks")}, where)}
    if value.get("normalized"):
        attacks = _attacks(value["normalized"], f"{where}.normalized")
        if "eps_space" not in {f.name for f in dataclasses.fields(EvalConfig)}:
            raise fail(f"{where}.normalized", "this rnas has no --eps-space")
        evals["normalized"] = _eval_config({**base, "attacks": attacks, "eps_space": "normalized"},
                                           f"{where}.normalized")
    if value.get("sweep"):
        sweep = mapping(value["sweep"], f"{where}.sweep")
        unknown = [k for k in sweep if k not in ("attacks", "eps", "n")]
        if unknown:
            raise fail(f"{where}.sweep.{unknown[0]}", "unknown key (attacks, eps, n)")
        eps = [_eps(e, f"{where}.sweep.eps") for e in as_list(sweep.get("eps"), f"{where}.sweep.eps")]
        values = {**base, "attacks": _attacks(sweep.get("attacks", ["pgd20"]), f"{where}.sweep.attacks"),
                  "eps_sweep": [str(e) for e in eps]}
        if "n" in sweep:
            values["n"] = coerce_field(EvalConfig, "n", sweep["n"], f"{where}.sweep")
        evals["sweep"] = _eval_config(values, f"{where}.sweep")
    return evals


def _eval_config(values: dict, where: str) -> EvalConfig:
    config = build_config(EvalConfig, {"checkpoint": "-", **values}, where)
    config.attack_list()
    config.eps_values()
    return config


def _attacks(value, where: str) -> str:
    names = [str(a).strip() for a in as_list(value, where)]
    for name in names:
        try:
            check_attack(name)
        except UserError as err:
            raise fail(where, str(err)) from None
    return ",".join(names)


def _eps(value, where: str) -> float:
    try:
        return parse_eps(value)
    except UserError as err:
        raise fail(where, str(err)) from None
