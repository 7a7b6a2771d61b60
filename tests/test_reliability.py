"""Runs that cannot lose work: non-finite losses stop the run, nothing is clobbered, a live run directory is
locked, unreadable checkpoints say what they are."""
import json

import pytest
import torch
from helpers import write_tiny_setup
from test_search_cli import main_in_process, search_args

from rnas.errors import UserError
from rnas.rundir import RunLock, load_checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("reliability"))


@pytest.fixture(scope="module")
def finished(root):
    run = root / "finished"
    code, err = main_in_process(*search_args(root, run, "--epochs", 1))
    assert code == 0, err
    return run


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(root, tmp_path):
    run = tmp_path / "nan"
    code, err = main_in_process(*search_args(root, run, "--lr", 1e12, "--epochs", 1))
    line = one_line(err)
    assert code == 3 and "non-finite loss at epoch 1, step" in line and "is kept" in line
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["supernet"].values()
                                      if v.is_floating_point())
    metrics = run / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text().strip()  # no epoch was reported as done
    assert main_in_process("derive", run)[0] == 0  # the kept checkpoint is a sane (untrained) one


def test_derive_refuses_non_finite_logits(finished, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    ckpt = torch.load(finished / "checkpoint.pt", weights_only=True)
    key = next(k for k in ckpt["supernet"] if k.endswith("width_logits"))
    ckpt["supernet"][key][0] = float("nan")
    torch.save(ckpt, broken / "checkpoint.pt")
    code, err = main_in_process("derive", broken)
    assert code == 2 and "logits are not finite" in one_line(err)
    assert not (broken / "arch.json").exists()


def test_resume_refuses_another_out_dir(finished, tmp_path):
    before = (finished / "config.yaml").read_text()
    code, err = main_in_process("search", "--resume", finished, "--out", tmp_path / "elsewhere", "--epochs", 2)
    assert code == 2 and "a resumed run continues in its own directory" in one_line(err)
    assert not (tmp_path / "elsewhere").exists() and (finished / "config.yaml").read_text() == before


def test_resume_cannot_shorten_a_run(root, tmp_path):
    run = tmp_path / "two"
    assert main_in_process(*search_args(root, run, "--epochs", 2))[0] == 0
    before = (run / "config.yaml").read_text()
    code, err = main_in_process("search", "--resume", run, "--epochs", 1)
    assert code == 2 and "has already done 2 epochs" in one_line(err)
    assert (run / "config.yaml").read_text() == before


def test_a_live_run_directory_is_locked(finished):
    with RunLock(finished):
        code, err = main_in_process("search", "--resume", finished, "--epochs", 2)
    assert code == 2 and "in use by another rnas process" in one_line(err)
    assert json.loads((finished / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 0


def test_teacher_train_never_replaces_an_earlier_teacher(root, tmp_path):
    models = tmp_path / "models"
    target = models / "cifar10" / "Linf" / "mine.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"earlier teacher")
    code, err = main_in_process("teacher", "train", "--arch", "wrn-10-1", "--at", "nfgsm", "--data-dir", root / "data",
                                "--val-size", 50, "--batch-size", 25, "--epochs", 1, "--name", "mine",
                                "--model-dir", models, "--out", tmp_path / "run")
    assert code == 2 and "a teacher of that name is already there" in one_line(err)
    assert target.read_bytes() == b"earlier teacher" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file (0 bytes), not a checkpoint"),
    (b"epochs: 3\n", "not a torch checkpoint (no torch.save zip or pickle header)"),
    (bytes(range(256)) * 4, "not a torch checkpoint (no torch.save zip or pickle header)"),
    ("zip", "damaged or truncated checkpoint"),
])
def test_unreadable_checkpoints_say_what_they_are(tmp_path, content, reason):
    path = tmp_path / "checkpoint.pt"
    if content == "zip":  # a real checkpoint cut in half
        torch.save({"x": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert reason in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path)
