"""The kinds of a study's steps (search, derive, grow, retrain, finetune, eval) as one table: how each runs through
the engine's Python API, and when its output is complete and made from its inputs as they are now."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rnas.errors import UserError
from rnas.runtime.rundir import atomic_write_json, atomic_write_text
from rnas.study.plan import Step


def epochs_done(run: Path) -> int:
    path = run / "checkpoint.pt"
    if not path.is_file():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is resumed (and reported) by the step itself
        return 0


def check_settings(step: Step, out: Path) -> None:
    """A run directory made with other settings than the study file's now is a one-line UserError (the
    study never silently reuses, nor overwrites, a run it did not ask for); more epochs are fine."""
    from rnas.config import changed_setting, read_run_config

    if not STEP_KINDS[step.kind].trains or not (out / step.path / "config.yaml").is_file():
        return
    base = read_run_config(type(step.config), out / step.path / "config.yaml", step.kind)
    # None: a default the run resolves itself (e.g. the dataset's learning rate), written out resolved
    if changed := changed_setting(base, step.config, unset_ok=True):
        key, was, now = changed
        raise UserError(f"{out / step.path} was run with {key} {was!r}, the study now asks for "
                        f"{now!r}; move the run away to run it again, or restore the study file")


def target_epochs(step: Step, out: Path) -> int | None:
    """The epochs a training step runs to: the study's, or when it leaves them to the recipe (None), what
    the run resolved (its config.yaml); None before such a run has started."""
    from rnas.config import read_run_config

    if step.config.epochs is not None:
        return step.config.epochs
    try:
        return int(read_run_config(type(step.config), out / step.path / "config.yaml")["epochs"])
    except (UserError, TypeError, KeyError, ValueError):
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def eval_request(config) -> dict:
    """What an evaluation was asked for, stored in its JSON: a later study asking for something else redoes it."""
    return {"attacks": config.attack_list(), "eps": [round(e, 10) for e in config.eps_values()], "n": config.n,
            "seed": config.seed, "eps_space": config.eps_space, "cw_steps": config.cw_steps}


def is_complete(step: Step, out: Path) -> bool:
    """Whether the step's output is there and was made from its inputs as they are now: an evaluation
    newer than its checkpoint and with the study's attacks / n / seed / eps protocol, arch files from the
    search's last epoch, a run trained to its epochs."""
    return STEP_KINDS[step.kind].complete(step, out)


def _evaluated(step: Step, out: Path) -> bool:
    result, checkpoint = _read_json(out / step.path), Path(step.config.checkpoint)
    return (result is not None and checkpoint.is_file() and result.get("requested") == eval_request(step.config)
            and (out / step.path).stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns)


def _derived(step: Step, out: Path) -> bool:
    from rnas.nets.derivation import arch_filename

    searched = epochs_done(out / step.path)
    how = step.extra["tutor_derive"]
    files = [arch_filename(b, how) for b in step.extra["budgets"]] + [name for name, *_ in _scaled(step.extra)]
    arch = [_read_json(out / step.path / name) for name in files]
    return searched > 0 and all(a is not None and a.get("search_epochs_done") == searched for a in arch)


def _trained(step: Step, out: Path) -> bool:
    target = target_epochs(step, out)
    return target is not None and epochs_done(out / step.path) >= target


def check_inputs(step: Step, out: Path) -> None:
    """A finished retrain or fine-tune made from inputs that have changed since (a longer search derived
    another net; the fine-tuned arm was extended) is refused for that step, never silently kept."""
    if not STEP_KINDS[step.kind].from_arch or not (out / step.path / "checkpoint.pt").is_file():
        return
    run = out / step.path
    arch = _read_json(Path(step.config.arch))
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True).get("arch") or {}
    if arch is not None and saved and (saved.get("widths"), saved.get("tutors")) != (arch.get("widths"),
                                                                                      arch.get("tutors")):
        raise UserError(f"{run} was trained on another net than {step.config.arch} describes now (the search was "
                        "extended?); move the run away to train the new one")
    if step.kind == "finetune" and Path(step.config.init).is_file() and \
            Path(step.config.init).stat().st_mtime_ns > (run / "checkpoint.pt").stat().st_mtime_ns and \
            is_complete(step, out):
        raise UserError(f"{run} fine-tuned an older {step.config.init} (the arm was trained further since); "
                        "move the run away to fine-tune the new one")


def _started(run: Path) -> bool:
    return (run / "config.yaml").is_file() or (run / "checkpoint.pt").is_file()


def _resumed_config(config, run: Path):
    """As ``rnas ... --resume`` does: the run's own resolved settings, with the study's explicit values on top
    (a default the run resolved, e.g. milestones from the epochs, stays what it was)."""
    import dataclasses

    from rnas.config import read_run_config

    if not (run / "config.yaml").is_file():
        return config
    base = read_run_config(type(config), run / "config.yaml")
    return type(config)(**{**base, **{k: v for k, v in dataclasses.asdict(config).items() if v is not None}})


def _run_search(step: Step, out: Path, events, should_stop) -> None:
    from rnas.engine.search import run_search

    run = out / step.path
    run_search(_resumed_config(step.config, run), run, resume=_started(run), callbacks=[events],
               should_stop=should_stop)


def _run_retrain(step: Step, out: Path, events, should_stop) -> None:
    from rnas.engine.retrain import run_retrain

    run = out / step.path
    run_retrain(_resumed_config(step.config, run), run, resume=_started(run), callbacks=[events],
                should_stop=should_stop)


def _run_derive(step: Step, out: Path, events, should_stop) -> None:
    """The search's arch files (its ``tutor_derive``), then its own net grown to each ``scale`` budget by each
    rule (rnas scale)."""
    from rnas.nets.derivation import arch_filename, write_archs

    run, how = out / step.path, step.extra["tutor_derive"]
    archs = dict(write_archs(run, step.extra["budgets"], tutor_derive=how))
    if step.extra["scale"]:  # the plan then asks for the search's own net (budget None): the one grown
        own = run / arch_filename(None, how)
        _write_grown(run, archs[own], str(own), step.extra)


def _scaled(extra: dict) -> list[tuple[str, int, bool]]:
    """(file name, budget, width only) of each net a derive or grow step grows: every ``scale`` budget by each
    rule."""
    from rnas.study.plan import grown_files

    return [(filename, budget, width_only) for budget, _, filename, width_only in grown_files(extra.get("scale", []))]


def _write_grown(folder: Path, arch: dict, source: str, extra: dict) -> None:
    """``arch`` grown as ``extra["scale"]`` asks (rnas scale), every net grown (and checked) before any file is
    written."""
    from rnas.nets.scaling import scale_arch

    grown = [(name, scale_arch(arch, budget, source, width_only)) for name, budget, width_only in _scaled(extra)]
    for name, data in grown:
        atomic_write_json(folder / name, data)


def _grow_source(step: Step, out: Path) -> Path:
    """The ``archs`` file, or the study's copy of it once the file has been moved away."""
    source = Path(step.extra["source"])
    copy = out / step.path / "arch.json"
    return source if source.is_file() or not copy.is_file() else copy


def _grown(step: Step, out: Path) -> bool:
    """The study's copy of an ``archs`` net is the file as it is now, and every net grown from it is there."""
    folder, source = out / step.path, _grow_source(step, out)
    return (source.is_file() and (folder / "arch.json").is_file()
            and (folder / "arch.json").read_text() == source.read_text()
            and all(_read_json(folder / name) is not None for name, *_ in _scaled(step.extra)))


def _run_grow(step: Step, out: Path, events, should_stop) -> None:
    """An ``archs`` net copied into the study (arch-<name>/arch.json) and grown to each ``scale`` budget by
    each rule (rnas scale); every file checked before any is written, the copy last."""
    from supernets import read_arch

    folder, source = out / step.path, _grow_source(step, out)
    text = source.read_text()
    arch, _ = read_arch(source)
    folder.mkdir(parents=True, exist_ok=True)
    _write_grown(folder, arch, step.extra["source"], step.extra)
    atomic_write_text(folder / "arch.json", text)


def _run_eval(step: Step, out: Path, events, should_stop) -> None:
    import dataclasses

    from rnas.evaluation.evaluate import run_eval

    eps = step.config.eps_values()
    rows = sum(1 if a == "clean" else len(eps) for a in step.config.attack_list())
    done = []

    def row(result: dict) -> None:
        done.append(result)
        events.send("epoch", len(done) / rows, f"{result['attack']} eps {result['eps']:.4g}: "
                                               f"{result['accuracy']:.2f} %")
    result = run_eval(dataclasses.replace(step.config, json=None), out=lambda line: None, progress=row)
    atomic_write_json(out / step.path, {**result, "requested": eval_request(step.config)})  # whole, or not at all


@dataclass(frozen=True)
class StepKind:
    """What a kind of step does: ``run(step, out, events, should_stop)``; ``complete(step, out)``: its output
    is there and up to date; ``trains``: a training run that
    checkpoints, resumes and stops on a signal (its settings and epochs are checked against its run directory);
    ``from_arch``: it trains a derived net (refused when the net changed since)."""

    run: Callable
    complete: Callable
    trains: bool = False
    from_arch: bool = False


STEP_KINDS = {
    "search": StepKind(_run_search, _trained, trains=True),
    "derive": StepKind(_run_derive, _derived),
    "grow": StepKind(_run_grow, _grown),
    "retrain": StepKind(_run_retrain, _trained, trains=True, from_arch=True),
    "finetune": StepKind(_run_retrain, _trained, trains=True, from_arch=True),
    "eval": StepKind(_run_eval, _evaluated),
}
