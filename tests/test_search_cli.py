"""End-to-end `rnas search` / `rnas derive` on tiny generated data: results, resume, bad input."""
import json
import math
import os
import pickle
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import main_in_process, rnas_cmd, run_rnas, search_args, write_tiny_setup

import rnas
from rnas.method.tutors import derive_tutors
from search_spaces import parse_space
from supernets import Network

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("search"))


def test_search_then_derive_end_to_end(setup, tmp_path):
    run = tmp_path / "run"
    result = run_rnas(*search_args(setup, run, "--seed", 3))
    assert result.returncode == 0, result.stderr
    assert (run / "config.yaml").is_file() and (run / "checkpoint.pt").is_file() and list((run / "tb").iterdir())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert lines[1]["tau"] == pytest.approx(5.0 * 2.718281828459045 ** -0.045)
    assert lines[1]["tutor_tau"] == pytest.approx(5.0 * 2.718281828459045 ** -0.045)
    assert lines[0]["weight/n_f"] <= 1.0
    # val_acc: the argmax net of the final checkpoint on the last 50 training images, recomputed here
    final = torch.load(run / "checkpoint.pt", weights_only=True)
    supernet = Network(parse_space(final["spec"], "checkpoint"), final["num_classes"])
    supernet.load_state_dict(final["supernet"])
    x, y = last_cifar_images(setup / "data", 50)
    with torch.no_grad():
        correct = (supernet.eval()(x).argmax(1) == y).sum().item()
    assert lines[1]["val_acc"] == 100.0 * correct / 50
    for record in lines:  # 250 training images per epoch (300 - 50 for validation), timed
        seconds = record["seconds"]
        slack = 0.05 + 250 * 5e-4 / (seconds - 5e-4) ** 2  # both numbers are rounded (to 0.1 and to 1 ms)
        assert record["images_per_s"] == pytest.approx(250 / seconds, abs=slack)
    derived = run_rnas("derive", run)
    assert derived.returncode == 0, derived.stderr
    assert "student layer -> tutor" in derived.stdout
    arch = json.loads((run / "arch.json").read_text())
    assert arch["space"] == "T" and arch["seed"] == 3 and arch["teacher"]["name"] == "wrn-10-1"
    assert len(arch["tutors"]) == len(arch["student_layers"]) == len(arch["tutor_probabilities"])
    assert all(0 <= j < len(arch["teacher_layers"]) for j in arch["tutors"])
    logits = final["tutor"]["tutor_logits"]
    assert arch["tutor_derive"] == "balanced" and arch["tutors"] == derive_tutors(logits, "balanced")  # the default
    cap = math.ceil(len(arch["tutors"]) / len(arch["teacher_layers"]))
    assert max(arch["tutors"].count(j) for j in arch["tutors"]) <= cap
    assert main_in_process("derive", run, "--tutor-derive", "argmax")[0] == 0
    argmax = json.loads((run / "arch-argmax.json").read_text())
    assert argmax["tutors"] == logits.argmax(1).tolist()  # the paper's j* = argmax_j of the searched logits
    model = rnas.build_model(run / "arch.json")
    assert sum(p.numel() for p in model.parameters()) == arch["params"]
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def last_cifar_images(root: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``n`` images of the training split (the validation split), read from the pickle directly."""
    with open(root / "cifar-10-batches-py" / "data_batch_5", "rb") as fh:
        batch = pickle.load(fh)
    x = torch.from_numpy(batch["data"][-n:]).view(n, 3, 32, 32).float() / 255
    return x, torch.tensor(batch["labels"][-n:])


def test_same_seed_same_arch_json(setup, tmp_path):
    texts = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert main_in_process(*search_args(setup, tmp_path / name, "--seed", seed, "--epochs", 1))[0] == 0
        assert main_in_process("derive", tmp_path / name)[0] == 0
        texts.append((tmp_path / name / "arch.json").read_text())
    assert texts[0] == texts[1]
    assert json.loads(texts[2])["seed"] == 2 and texts[2] != texts[0]
    assert main_in_process("derive", tmp_path / "a")[0] == 0  # derive twice: same file
    assert (tmp_path / "a" / "arch.json").read_text() == texts[0]


def final_state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def assert_same_final_state(a: Path, b: Path):
    sa, sb = final_state(a), final_state(b)
    assert sa["epoch"] == sb["epoch"] == 2
    for key in sa["supernet"]:
        assert torch.equal(sa["supernet"][key], sb["supernet"][key]), key
    assert torch.equal(sa["tutor"]["tutor_logits"], sb["tutor"]["tutor_logits"])
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])


def _metrics_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_resume_is_bit_identical(setup, tmp_path, how):
    """SIGKILL in epoch 2 (resume from the epoch-1 checkpoint) or SIGTERM mid-epoch (checkpoint at the
    current step): the resumed run ends with exactly the uninterrupted run's weights, logits and RNG."""
    slow = ["--limit", 120, "--batch-size", 10]  # 12 steps per epoch
    reference = tmp_path / "reference"
    assert run_rnas(*search_args(setup, reference, *slow)).returncode == 0
    run = tmp_path / "killed"
    # the signal arrives as global step 17 (epoch 2, step 6 of 12) begins, whatever the machine's speed
    variable = "RNAS_KILL_RANK_AT_STEP" if how == "sigkill" else "RNAS_TERM_RANK_AT_STEP"
    proc = subprocess.run(rnas_cmd(*search_args(setup, run, *slow)), capture_output=True, timeout=300,
                          env=dict(os.environ, PYTHONHASHSEED="0", **{variable: "0:17"}))
    state = final_state(run)
    if how == "sigkill":  # resumes from the checkpoint of the end of epoch 1
        assert proc.returncode == -signal.SIGKILL
        assert (state["epoch"], state["step"]) == (1, 0)
    else:  # takes the step it was in, checkpoints there and exits
        assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
        assert (state["epoch"], state["step"]) == (1, 6)
    assert _metrics_lines(run) == 1
    resumed = run_rnas("search", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_final_state(reference, run)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_bad_input_is_one_line_exit_2_and_leaves_run_dir_untouched(setup, tmp_path):
    fresh = tmp_path / "fresh"
    cases = [
        (("--space", "S9"), "unknown search space"),
        (("--data-dir", tmp_path / "nowhere"), "no such directory"),
        (("--teacher-ckpt", "absent"), "no file"),
        (("--val-size", 5000), "--val-size 5000: must be in [0, 300)"),
        (("--device", "gpu7"), "--device gpu7"),
        (("--epochs", "two"), "invalid int value"),
    ]
    for extra, message in cases:
        code, err = main_in_process(*search_args(setup, fresh, *extra))
        assert code == 2 and err.count("\n") == 1 and message in err, (extra, err)
    assert not fresh.exists()
    result = run_rnas(*search_args(setup, fresh, "--space", "S9"))  # the same through a real process
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "unknown search space" in result.stderr

    existing = tmp_path / "existing"
    assert run_rnas(*search_args(setup, existing, "--epochs", 1)).returncode == 0
    before = {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    resume_cases = [
        ((*search_args(setup, existing),), "already holds a run"),
        (("search", "--resume", existing, "--device", "gpu7"), "--device gpu7"),
        (("search", "--resume", existing, "--data-dir", tmp_path / "nowhere"), "no such directory"),
        (("search", "--resume", existing, "--space", "S5"), "--space cannot change when resuming"),
        (("search", "--resume", tmp_path / "nothing"), "not a run directory (no checkpoint.pt, no config.yaml)"),
    ]
    for args, message in resume_cases:
        code, err = main_in_process(*args)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before


def test_config_file_and_flag_precedence(setup, tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text("epochs: 1\nbatch-size: 20\ngamma-s: 3.5\ntutor-tau: 3\nweight_decay: 0.001\n")
    run = tmp_path / "run"
    code, err = main_in_process(*search_args(setup, run, "--config", config, "--gamma-s", 2.0, "--epochs", 1))
    assert code == 0, err
    import yaml

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["gamma_s"] == 2.0 and resolved["batch_size"] == 25 and resolved["epochs"] == 1  # flags win
    assert resolved["tutor_tau"] == 3.0 and resolved["weight_decay"] == 0.001  # from the file
    assert resolved["milestones"] == [75, 90] and resolved["arch_split"] == 0.2  # defaults written out
    config.write_text("epoch: 1\n")
    code, err = main_in_process(*search_args(setup, tmp_path / "x", "--config", config))
    assert code == 2 and "epoch: unknown key" in err


@pytest.mark.timeout(900)  # compiling on a CPU takes about a minute, more on a loaded machine
def test_compiled_search_checkpoints_load_eagerly(setup, tmp_path):
    """--compile (torch.compile of the supernet, hooks and custom autograd included) trains, and its
    checkpoint keeps the eager parameter names: the run resumes without --compile and derives."""
    run = tmp_path / "run"
    result = run_rnas(*search_args(setup, run, "--epochs", 1, "--compile"), timeout=600)
    assert result.returncode == 0, result.stderr
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert all(math.isfinite(v) for v in first.values() if isinstance(v, float))
    assert 0 < first["weight/ce"] < 5 and first["weight/attn"] > 0
    keys = torch.load(run / "checkpoint.pt", weights_only=False)["supernet"].keys()
    assert not any("_orig_mod" in k for k in keys)
    assert main_in_process("search", "--resume", run, "--epochs", 2, "--no-compile")[0] == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert main_in_process("derive", run)[0] == 0 and (run / "arch.json").is_file()
