"""Runs that cannot lose work: non-finite losses stop the run, nothing is clobbered, a live run directory is
locked, unreadable checkpoints say what they are."""
import json

import pytest
import torch
from helpers import TINY_SPACE, main_in_process, search_args, trained_checkpoint, write_tiny_setup

from rnas.errors import UserError
from rnas.runtime.rundir import RunLock, load_checkpoint

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


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


def test_fp16_steps_the_scaler_skips_are_not_a_divergence(root, tmp_path):
    """Under --amp fp16 the first steps overflow at the scaler's initial 2**16 (the gradient share of the
    attention term is then NaN): the scaler skips them and backs off; the search goes on and checkpoints it."""
    run = tmp_path / "fp16"
    code, err = main_in_process(*search_args(root, run, "--epochs", 1, "--amp", "fp16"))
    assert code == 0, err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] < 2.0 ** 16
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(v == v for v in record.values() if isinstance(v, float))  # no NaN reached the record


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


@pytest.fixture(scope="module")
def derived(root, finished):
    assert main_in_process("derive", finished)[0] == 0
    arch = json.loads((finished / "arch.json").read_text())
    retrain = root / "retrained"
    code, err = main_in_process("retrain", finished / "arch.json", "--data-dir", root / "data", "--val-size", 50,
                                "--batch-size", 25, "--epochs", 1, "--out", retrain)
    assert code == 0, err
    return arch, retrain


def _arch_variant(tmp_path, arch, **changes):
    path = tmp_path / "arch.json"
    variant = {k: v for k, v in arch.items() if changes.get(k, 0) is not None}
    variant.update({k: v for k, v in changes.items() if v is not None})
    path.write_text(json.dumps(variant))
    return path


@pytest.mark.parametrize("changes,message", [
    ({"tutors": None}, "tutors / teacher_layers: missing, or not one tutor per student layer"),
    ({"tutors": "tutor999"}, "tutors: 999 is not an index of its"),
    ({"teacher_layers": "unknown"}, "teacher_layers: 'net.nowhere' is not a conv layer of teacher wrn-10-1"),
])
def test_retrain_with_broken_tutors_is_one_line(root, derived, tmp_path, changes, message):
    arch, _ = derived
    if changes.get("tutors") == "tutor999":
        changes = {"tutors": [999] + arch["tutors"][1:]}
    if changes.get("teacher_layers") == "unknown":
        changes = {"teacher_layers": ["net.nowhere"] + arch["teacher_layers"][1:]}
    path = _arch_variant(tmp_path, arch, **changes)
    out = tmp_path / "run"
    code, err = main_in_process("retrain", path, "--data-dir", root / "data", "--val-size", 50, "--batch-size", 25,
                                "--epochs", 1, "--out", out)
    assert code == 2 and message in one_line(err) and not out.exists()


def test_resume_of_the_wrong_kind_of_run_is_one_line(finished, derived):
    _, retrain = derived
    code, err = main_in_process("search", "--resume", retrain)
    assert code == 2 and "not a setting of rnas search (a run of another command" in one_line(err)
    code, err = main_in_process("retrain", "--resume", finished)
    assert code == 2 and "not a setting of rnas retrain (a run of another command" in one_line(err)


@pytest.mark.parametrize("content,message", [(b"\x00\x01\xff", "not readable YAML"),
                                             (b"- a\n- b\n", "expected a mapping")])
def test_resume_with_a_broken_config_is_one_line(root, tmp_path, content, message):
    run = tmp_path / "run"
    assert main_in_process(*search_args(root, run, "--epochs", 1))[0] == 0
    (run / "config.yaml").write_bytes(content)
    code, err = main_in_process("search", "--resume", run, "--epochs", 2)
    assert code == 2 and message in one_line(err)


def test_unwritable_out_and_quickstart_out_a_file_are_refused_first(root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    code, err = main_in_process(*search_args(root, blocker / "run"))
    assert code == 2 and one_line(err) == (f"rnas: error: --out {blocker / 'run'}: {blocker} is not a writable "
                                           "directory (checked before anything runs)")
    code, err = main_in_process("teacher", "train", "--arch", "wrn-10-1", "--data-dir", root / "data",
                                "--model-dir", blocker / "models", "--epochs", 1)
    assert code == 2 and one_line(err) == (f"rnas: error: --model-dir {blocker / 'models'}: {blocker} is not a "
                                           "writable directory (checked before anything runs)")
    code, err = main_in_process("quickstart", "--out", blocker)
    assert code == 2 and "exists and is not a directory" in one_line(err) and blocker.read_text() == "mine"


def test_a_batch_larger_than_the_training_set_is_one_line(root, tmp_path):
    code, err = main_in_process(*search_args(root, tmp_path / "run", "--batch-size", 1000))
    assert code == 2 and "--batch-size 1000: larger than the 250 training images" in one_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,message", [(b"", "empty file (0 bytes)"),
                                             (b"teacher weights\n", "not a torch checkpoint")])
def test_unreadable_teacher_files_say_what_they_are(root, tmp_path, content, message):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(content)
    out = tmp_path / "run"
    code, err = main_in_process("search", "--space", root / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt", bad,
                                "--data-dir", root / "data", "--val-size", 50, "--batch-size", 25, "--out", out)
    assert code == 2 and message in one_line(err) and not out.exists()


def test_a_space_too_large_for_memory_is_refused_before_allocating(root, tmp_path):
    import yaml

    spec = yaml.safe_load((root / "tiny.yaml").read_text())
    spec["stages"] = [{"depth": 64, "stride": 1, "widths": [8192, 4096]}] * 3  # ~150 billion parameters
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    code, err = main_in_process("search", "--space", path, "--teacher", "wrn-10-1", "--teacher-ckpt", "tiny",
                                "--model-dir", root / "models", "--data-dir", root / "data", "--val-size", 50,
                                "--batch-size", 25, "--out", out)
    line = one_line(err)
    assert code == 2 and f"--space {path}: the network has" in line and "GiB free on cpu" in line
    assert not out.exists()


def _nan_weight(state):
    key = next(k for k, v in state.items() if v.is_floating_point() and k.endswith("weight"))
    state[key] = state[key].clone().fill_(float("nan"))
    return state


TEACHER_VALUES = {
    "nan-weight": (_nan_weight, "hold NaN or inf values (saved after its training diverged?); refused"),
    "zero-std": (lambda s: {**s, "mu": torch.zeros(1, 3, 1, 1), "sigma": torch.tensor([0.2, 0.0, 0.2])},
                 "every value must be finite and every std above 0"),
    "inf-mean": (lambda s: {**s, "mu": torch.tensor([0.5, float("inf"), 0.5]), "sigma": torch.ones(3)},
                 "every value must be finite and every std above 0"),
    "2-channel": (lambda s: {**s, "mu": torch.zeros(2), "sigma": torch.ones(2)},
                  "mean has 2 and std 2 values; RGB images need 3 each (or 1)"),
}


@pytest.mark.parametrize("how", list(TEACHER_VALUES))
def test_a_teacher_that_cannot_teach_is_refused_as_bad_input(root, tmp_path, how):
    """NaN weights or an unusable normalisation: exit 2 before training, not a divergence (exit 3) later."""
    edit, message = TEACHER_VALUES[how]
    folder = root / "models" / "cifar10" / "Linf"
    checkpoint = torch.load(folder / "tiny.pt", weights_only=True)  # RobustBench's {'state_dict': ...}
    torch.save({"state_dict": edit(checkpoint["state_dict"])}, folder / f"bad-{how}.pt")
    code, err = main_in_process(*search_args(root, tmp_path / "run", "--teacher-ckpt", f"bad-{how}"))
    assert code == 2 and message in one_line(err), err
    assert not (tmp_path / "run").exists()


def test_eval_refuses_a_model_with_nan_weights(root, tmp_path):
    arch = {"spec": TINY_SPACE, "widths": [8, 16, 16], "num_classes": 10}
    path = trained_checkpoint(root, arch, images=100, steps=1)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = _nan_weight(ckpt["model"])
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    code, err = main_in_process("eval", tmp_path / "checkpoint.pt", "--attacks", "clean", "--n", 10)
    assert code == 2 and "hold NaN or inf values" in one_line(err), err


def test_a_resumed_retrain_refuses_an_arch_file_whose_tutors_changed(root, derived, tmp_path):
    """The arch file of a retrain re-derived with other tutors meanwhile (e.g. an old argmax arch.json
    replaced by balanced tutors) is one line on --resume, and the run's checkpoint is left as it was; the
    same tutors resume."""
    arch, _ = derived
    path, run = tmp_path / "arch.json", tmp_path / "run"
    path.write_text(json.dumps(arch))
    code, err = main_in_process("retrain", path, "--data-dir", root / "data", "--val-size", 50, "--batch-size", 25,
                                "--epochs", 1, "--out", run)
    assert code == 0, err
    before = (run / "checkpoint.pt").read_bytes()
    n_t = len(arch["teacher_layers"])
    path.write_text(json.dumps({**arch, "tutors": [(j + 1) % n_t for j in arch["tutors"]], "tutor_derive": "monotone"}))
    code, err = main_in_process("retrain", "--resume", run, "--epochs", 2)
    assert code == 2 and one_line(err) == (
        f"rnas: error: {path}: its tutors changed since this run started ({len(arch['tutors'])} of "
        f"{len(arch['tutors'])} student layers; now monotone); resume with the file it was started with, or "
        "retrain into a new --out")
    assert (run / "checkpoint.pt").read_bytes() == before
    path.write_text(json.dumps(arch))
    code, err = main_in_process("retrain", "--resume", run, "--epochs", 2)
    assert code == 0, err
