"""`rnas eval --json OUT --resume`: an evaluation interrupted after some batches continues from OUT.state.json
without redoing its finished batches or rows, and ends with the JSON of an uninterrupted run (seconds apart),
random starts and AutoAttack included."""
import hashlib
import importlib.util
import json
import os

import pytest
from helpers import TINY_SPACE, main_in_process, trained_checkpoint, write_cifar10

import rnas.evaluation.evaluate
from rnas.robust.attacks import run_attack

HAS_AUTOATTACK = importlib.util.find_spec("pyautoattack") is not None
ATTACKS = ["clean", "fgsm", "pgd3"] + (["autoattack"] if HAS_AUTOATTACK else [])  # pgd3: a uniform random start
BATCHES = 4  # --n 40 at --batch-size 10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A retrain-format checkpoint of the tiny space, trained a little so that the attacks matter, evaluated on
    its validation split (the last 60 training images)."""
    root = tmp_path_factory.mktemp("eval_resume")
    write_cifar10(root / "data")
    arch = {"spec": TINY_SPACE, "widths": [8, 16, 16], "num_classes": 10}
    return trained_checkpoint(root, arch, images=200, steps=20)


class CountedAttacks:
    """evaluate.run_attack, recorded: (attack, labels of the batch, digest of x_adv's bytes) per call; the
    call number ``stop_at`` (1-based) raises KeyboardInterrupt before attacking, as a Ctrl-C would."""

    def __init__(self, monkeypatch, stop_at: int | None = None):
        self.calls, self.stop_at = [], stop_at
        monkeypatch.setattr(rnas.evaluation.evaluate, "run_attack", self.run)

    def run(self, name, model, x, y, eps, **kwargs):
        if len(self.calls) + 1 == self.stop_at:
            raise KeyboardInterrupt
        x_adv = run_attack(name, model, x, y, eps, **kwargs)
        self.calls.append((name, y.tolist(), hashlib.sha256(x_adv.detach().numpy().tobytes()).hexdigest()))
        return x_adv


def eval_args(checkpoint, out, *extra, attacks=ATTACKS):
    return ["eval", checkpoint, "--attacks", ",".join(attacks), "--eps", "48/255", "--n", 40, "--batch-size", 10,
            "--split", "val", "--json", out, *extra]


def state_file(out):
    return out.with_name(out.name + ".state.json")


def without_seconds(result: dict) -> dict:
    return {**result, "results": [{k: v for k, v in row.items() if k != "seconds"} for row in result["results"]]}


def interrupt(monkeypatch, args, stop_after: int) -> CountedAttacks:
    """Run ``rnas eval args``, stopped by a KeyboardInterrupt once ``stop_after`` batches are attacked."""
    counted = CountedAttacks(monkeypatch, stop_at=stop_after + 1)
    code, err = main_in_process(*args)
    assert code == 130 and err.splitlines()[-1].startswith("rnas: interrupted; ") and "--resume" in err, err
    return counted


def test_interrupted_eval_resumes_to_the_uninterrupted_json(checkpoint, tmp_path, monkeypatch):
    reference = tmp_path / "reference.json"
    full = CountedAttacks(monkeypatch)
    code, err = main_in_process(*eval_args(checkpoint, reference))
    assert code == 0, err
    assert len(full.calls) == len(ATTACKS) * BATCHES and not state_file(reference).exists()
    expected = json.loads(reference.read_text())

    out = tmp_path / "resumed.json"
    # stopped in pgd3 after 2 of its batches (random starts from batch 2 on), then in autoattack after 1
    stops = [2 * BATCHES + 2] + ([3 * BATCHES + 1] if HAS_AUTOATTACK else [])
    done = 0
    for number, stop in enumerate(stops):
        runs = interrupt(monkeypatch, eval_args(checkpoint, out, *(["--resume"] if number else [])), stop - done)
        assert runs.calls == full.calls[done:stop]  # only the batches not done before, the same bit for bit
        done = stop
        state = json.loads(state_file(out).read_text())
        assert [r["attack"] for r in state["rows"]] == ATTACKS[:stop // BATCHES]
        assert without_seconds({"results": state["rows"]})["results"] == \
            without_seconds(expected)["results"][:stop // BATCHES]
        assert state["current"]["attack"] == ATTACKS[stop // BATCHES] and state["current"]["batches"] == stop % BATCHES
        assert state["current"]["n"] == 10 * (stop % BATCHES) and not out.exists()
    recorded = state["current"]["seconds"]

    rest = CountedAttacks(monkeypatch)
    code, err = main_in_process(*eval_args(checkpoint, out, "--resume"))
    assert code == 0, err
    assert rest.calls == full.calls[done:]
    said = [line for line in err.splitlines() if not line.startswith("rnas eval: ")]  # progress: timing-dependent
    assert len(said) == 1 and said[0].startswith(f"rnas: resuming from {state_file(out)}: "), err
    result = json.loads(out.read_text())
    assert without_seconds(result) == without_seconds(expected)
    assert result["results"][stops[-1] // BATCHES]["seconds"] >= round(recorded, 2)  # the parts' sum
    assert not state_file(out).exists()


@pytest.fixture
def interrupted(checkpoint, tmp_path, monkeypatch):
    """OUT of a clean-only evaluation stopped after 2 of its 4 batches (its state file on disk)."""
    out = tmp_path / "clean.json"
    interrupt(monkeypatch, eval_args(checkpoint, out, attacks=["clean"]), 2)
    monkeypatch.undo()
    assert json.loads(state_file(out).read_text())["current"]["batches"] == 2
    return out


@pytest.mark.parametrize("change,field", [
    (["--seed", 1], "seed 0 there, 1 now"),
    (["--attacks", "clean,fgsm"], 'attacks ["clean"] there, ["clean", "fgsm"] now'),
    (["--batch-size", 20], "batch_size 10 there, 20 now"),
    (["--n", 30], "n 40 there, 30 now"),
    (["--split", "test"], None),  # no test split on disk: an error of its own, before the state is read
], ids=["seed", "attacks", "batch-size", "n", "split"])
def test_resume_of_another_request_is_one_line_and_keeps_the_state(checkpoint, interrupted, change, field):
    before = state_file(interrupted).read_bytes()
    args = eval_args(checkpoint, interrupted, "--resume", attacks=["clean"])
    code, err = main_in_process(*args, *change)  # a repeated flag: the last one counts
    assert code == 2 and err.count("\n") == 1 and err.startswith("rnas: error: "), err
    if field:
        assert f"--resume: {state_file(interrupted)} is the progress of another evaluation ({field})" in err
    assert state_file(interrupted).read_bytes() == before and not interrupted.exists()


def test_resume_after_the_checkpoint_changed_is_refused(checkpoint, interrupted):
    stat = checkpoint.stat()
    try:
        checkpoint.touch()
        code, err = main_in_process(*eval_args(checkpoint, interrupted, "--resume", attacks=["clean"]))
    finally:
        os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert code == 2 and err.count("\n") == 1 and "(checkpoint_mtime_ns " in err


def test_resume_without_json_is_one_line(checkpoint):
    code, err = main_in_process("eval", checkpoint, "--attacks", "clean", "--resume")
    assert code == 2 and err.count("\n") == 1 and "--resume" in err and "--json" in err, err


def test_resume_without_state_starts_over_and_a_new_run_replaces_the_state(checkpoint, interrupted, tmp_path):
    fresh = tmp_path / "fresh.json"
    code, err = main_in_process(*eval_args(checkpoint, fresh, "--resume", attacks=["clean"]))
    assert code == 0 and err == f"rnas: --resume: no {state_file(fresh)}, so no interrupted evaluation to " \
                                "continue: evaluating from the start\n"
    code, err = main_in_process(*eval_args(checkpoint, interrupted, "--seed", 1, attacks=["clean"]))
    assert code == 0 and err.count("\n") == 1 and err.startswith(f"rnas: note: replacing {state_file(interrupted)}")
    assert not state_file(interrupted).exists() and not state_file(fresh).exists()
    assert without_seconds(json.loads(interrupted.read_text())) == \
        {**without_seconds(json.loads(fresh.read_text())), "seed": 1}


@pytest.mark.parametrize("edit", [
    lambda s: s["current"].update(correct=s["current"]["correct"] + 5),  # fabricated counts
    lambda s: s["rows"].append({"attack": "clean", "eps": 0.0, "accuracy": 99.0, "n": 40}),  # a fabricated row
    lambda s: s["current"].update(batches="two"),
    lambda s: s.update(rows=7),
    lambda s: s.pop("digest"),
], ids=["counts", "row", "string-position", "rows-type", "no-digest"])
def test_an_edited_progress_file_is_refused_not_reported(checkpoint, interrupted, edit):
    state = json.loads(state_file(interrupted).read_text())
    edit(state)
    state_file(interrupted).write_text(json.dumps(state))
    before = state_file(interrupted).read_bytes()
    code, err = main_in_process(*eval_args(checkpoint, interrupted, "--resume", attacks=["clean"]))
    assert code == 2 and err.count("\n") == 1 and "its rows do not match their digest" in err, err
    assert state_file(interrupted).read_bytes() == before and not interrupted.exists()
