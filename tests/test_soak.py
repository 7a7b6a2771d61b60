"""Kill/resume soak: a tiny search SIGKILLed at many moments (before its first checkpoint, inside checkpoint
writes, at chosen steps between them) and restarted the way a user would, ends bit-identical to an uninterrupted run,
metrics.jsonl included (but for its wall-clock fields)."""
import errno
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from helpers import main_in_process, rnas_cmd, search_args, write_tiny_setup

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


TIMING = ("seconds", "images_per_s", "cost/total_seconds")


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    root = write_tiny_setup(tmp_path_factory.mktemp("soak"))
    reference = root / "reference"
    code, err = main_in_process(*search_args(root, reference, "--checkpoint-every", 1))
    assert code == 0, err
    return root, reference


def command(root, run):
    return rnas_cmd(*search_args(root, run, "--checkpoint-every", 1))


def start(root, run, env=None):
    """What a user does after a crash: resume a run directory that holds a run, else start it."""
    holds_run = (run / "checkpoint.pt").exists() or (run / "config.yaml").exists()
    args = rnas_cmd("search", "--resume", run) if holds_run else command(root, run)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONHASHSEED="0", **(env or {})))


def finish(root, run) -> None:
    process = start(root, run)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def metrics(run):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_identical(run, reference):
    a, b = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (run, reference))
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 0
    for key in b["supernet"]:
        assert torch.equal(a["supernet"][key], b["supernet"][key]), key
    assert torch.equal(a["tutor"]["tutor_logits"], b["tutor"]["tutor_logits"])
    for opt in ("weight_opt", "arch_opt"):
        for k, state in b[opt]["state"].items():
            for name, value in state.items():
                assert torch.equal(a[opt]["state"][k][name], value), (opt, k, name)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert metrics(run) == metrics(reference)
    assert not (run / "checkpoint.pt.tmp").exists() or (run / "checkpoint.pt").exists()


def kill_and_restart(root, run, env: dict) -> None:
    """Start (or resume) the run with a fault point set; it must die there by SIGKILL."""
    process = start(root, run, env=env)
    _, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, f"the fault point {env} was not reached: {err[-300:]}"


@pytest.mark.timeout(400)
def test_killed_inside_checkpoint_writes_and_before_the_first_one(soak, tmp_path):
    """SIGKILL inside the 1st (step-0), 2nd, 5th and 11th checkpoint writes (temp file written, not yet
    renamed), and once while the interpreter is still importing: every time the run resumes."""
    root, reference = soak
    run = tmp_path / "run"
    process = start(root, run)
    time.sleep(0.3)  # still importing torch: nothing written yet
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoint.pt").exists()
    for save in (1, 2, 5, 11):
        kill_and_restart(root, run, {"RNAS_KILL_AT_SAVE": str(save)})
        assert (run / "checkpoint.pt.tmp").exists()  # killed mid-write: the temp file is the evidence
        if save == 1:  # the step-0 checkpoint of a fresh run: only its config.yaml is there
            assert not (run / "checkpoint.pt").exists() and (run / "config.yaml").exists()
        else:  # the previous checkpoint is intact
            assert torch.load(run / "checkpoint.pt", weights_only=True)["format"] == "rnas-search-1"
    finish(root, run)
    assert_identical(run, reference)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("steps", [(2, 9, 15), (5, 10, 17)])  # 10 steps per epoch
def test_killed_between_checkpoints(soak, tmp_path, steps):
    """SIGKILL at chosen global steps (between the every-step checkpoints' writes, mid-epoch and in the second
    epoch), each followed by a restart: the same moments every run, so a failure reproduces."""
    root, reference = soak
    run = tmp_path / "run"
    for step in steps:
        kill_and_restart(root, run, {"RNAS_KILL_RANK_AT_STEP": f"0:{step}"})
        assert torch.load(run / "checkpoint.pt", weights_only=True)["format"] == "rnas-search-1"
    finish(root, run)
    assert_identical(run, reference)


def test_a_run_stopped_before_its_first_checkpoint_restarts_either_way(soak, tmp_path):
    """A run directory with only config.yaml (killed before any checkpoint): --resume starts it from step 0,
    and a second process on a live run directory is refused by its lock."""
    root, reference = soak
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((reference / "config.yaml").read_text().replace(str(reference), str(run)))
    finish(root, run)
    assert_identical(run, reference)


@pytest.mark.parametrize("save", [1, 4, 13])
def test_a_full_disk_in_a_checkpoint_write_keeps_the_last_one_and_resumes_exactly(soak, tmp_path, monkeypatch, save):
    """ENOSPC inside the n-th checkpoint write (through fsync, as a full disk or quota reports it): one line
    naming the file, exit 2, the checkpoint before it intact, no temp file left; a resume ends identical."""
    root, reference = soak
    run = tmp_path / "run"
    fsync, seen = os.fsync, []

    def full_disk_at(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("checkpoint.pt.tmp"):
            seen.append(fd)
            if len(seen) == save:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_at)
    code, err = main_in_process(*search_args(root, run, "--checkpoint-every", 1))
    monkeypatch.setattr(os, "fsync", fsync)
    kept = "no checkpoint.pt was written" if save == 1 else "the previous checkpoint.pt is intact"
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"rnas: error: {run / 'checkpoint.pt'}: No space left on device while writing it; {kept} (free space, "
        "then run again; a run continues exactly with --resume)"), err
    assert not (run / "checkpoint.pt.tmp").exists()
    if save > 1:
        assert torch.load(run / "checkpoint.pt", weights_only=True)["format"] == "rnas-search-1"
    finish(root, run)
    assert_identical(run, reference)


def test_a_run_on_a_really_full_disk_stops_in_one_line_and_resumes_elsewhere(soak, tmp_path):
    """A tmpfs that holds the run's first checkpoint but not a second beside it (where the machine lets the
    tests mount one): the error names the file, the last checkpoint loads, and the copied run resumes exactly."""
    root, reference = soak
    disk = tmp_path / "disk"
    disk.mkdir()
    size = (reference / "checkpoint.pt").stat().st_size * 3 // 2
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", disk], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        process = subprocess.run(command(root, disk / "run"), capture_output=True, text=True, timeout=120)
        assert process.returncode == 2 and len(process.stderr.strip().splitlines()) == 1, process.stderr
        assert "No space left on device while writing it" in process.stderr and "intact" in process.stderr
        assert not (disk / "run" / "checkpoint.pt.tmp").exists()
        shutil.copytree(disk / "run", tmp_path / "run")
    finally:
        subprocess.run(["umount", disk], check=True)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["format"] == "rnas-search-1"
    finish(root, tmp_path / "run")
    assert_identical(tmp_path / "run", reference)
