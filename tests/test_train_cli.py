"""`rnas retrain`, `rnas teacher train`, `rnas eval` and `rnas.load_model` on tiny generated data."""
import json
import os
import signal
import subprocess
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import main_in_process, rnas_cmd, run_rnas, write_cifar10, write_space, write_teacher

import rnas
import rnas.engine.retrain
from rnas.robust.adversarial import MixtureBatchNorm2d

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_cifar10(root / "data", test=True)
    write_teacher(root / "models")
    write_space(root / "tiny.yaml")
    code, err = main_in_process("search", "--space", root / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt",
                                "tiny", "--model-dir", root / "models", "--data-dir", root / "data", "--val-size", 50,
                                "--batch-size", 25, "--epochs", 1, "--out", root / "search")
    assert code == 0, err
    assert main_in_process("derive", root / "search")[0] == 0
    return root


def retrain_args(root, out, *extra):
    return ["retrain", root / "search" / "arch.json", "--data-dir", root / "data", "--val-size", 50,
            "--batch-size", 25, "--epochs", 1, "--out", out, *extra]


@pytest.mark.parametrize("baseline", ["cl", "ce", "kd", "fixed"])
def test_retrain_each_baseline_and_load_model(searched, tmp_path, baseline):
    run = tmp_path / baseline
    code, err = main_in_process(*retrain_args(searched, run, "--baseline", baseline))
    assert code == 0, err
    record = json.loads((run / "metrics.jsonl").read_text())
    assert ("attn" in record) == (baseline in ("cl", "fixed")) and ("kl" in record) == (baseline != "ce")
    gamma_t = rnas.config.defaults.GAMMA_T  # the default, written out in config.yaml
    assert yaml.safe_load((run / "config.yaml").read_text())["gamma_t"] == gamma_t == 1000.0
    assert record["total"] == pytest.approx(record["base"] + record.get("kl", 0) + gamma_t * record.get("attn", 0),
                                            rel=1e-4)
    if baseline in ("cl", "fixed"):
        assert record["attn_weighted"] == pytest.approx(gamma_t * record["attn"], rel=1e-4)
        assert 0 < record["attn_grad_share"] < 1
    model = rnas.load_model(run / "checkpoint.pt")
    arch = json.loads((searched / "search" / "arch.json").read_text())
    assert not model.training and [b.cout.size for b in model.blocks] == arch["widths"]
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    if baseline == "fixed":
        tutors = torch.load(run / "checkpoint.pt", weights_only=True)["tutors"]
        assert tutors["mapping"] == rnas.method.distill.uniform_mapping(len(tutors["student_layers"]),
                                                                  len(tutors["teacher_layers"]))


def test_trades_fine_tune_with_mixture_bn(searched, tmp_path):
    base = tmp_path / "base"
    assert main_in_process(*retrain_args(searched, base))[0] == 0
    run = tmp_path / "trades"
    code, err = main_in_process(*retrain_args(searched, run, "--trades", "--init", base / "checkpoint.pt", "--mbn",
                                              "--steps", 2, "--beta", 3))
    assert code == 0, err
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["base"] == pytest.approx(record["natural"] + 3 * record["robust"], rel=1e-4)
    model = rnas.load_model(run / "checkpoint.pt")
    assert any(isinstance(m, MixtureBatchNorm2d) for m in model.modules())
    code, err = main_in_process(*retrain_args(searched, tmp_path / "x", "--mbn"))
    assert code == 2 and "--mbn" in err and "needs --at trades|pgd|nfgsm" in err


def test_trades_needs_init_or_from_scratch(searched, tmp_path):
    run = tmp_path / "t"
    code, err = main_in_process(*retrain_args(searched, run, "--trades"))
    assert code == 2 and err == ("rnas: error: --at trades fine-tunes a trained net: give --init CKPT (a retrain "
                                 "checkpoint), or --from-scratch\n")
    assert not run.exists()
    for extra in (["--from-scratch"], ["--trades", "--from-scratch", "--init", run / "x.pt"]):
        code, err = main_in_process(*retrain_args(searched, run, *extra))
        assert code == 2 and err.count("\n") == 1 and "--from-scratch goes with --at and without --init" in err
        assert not run.exists()
    code, err = main_in_process(*retrain_args(searched, run, "--trades", "--from-scratch", "--baseline", "ce",
                                              "--steps", 1, "--limit", 50))
    assert code == 0, err
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["base"] == pytest.approx(record["natural"] + 6 * record["robust"], rel=1e-4)


@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_retrain_resume_after_sigterm_is_bit_identical(searched, tmp_path, amp):
    """fp16 included: its gradient scaler backs off from 2**16 through skipped (overflowed) steps, and only a
    resume that restores the scaler's scale and growth tracker repeats the uninterrupted run."""
    args = ["--epochs", 2, "--milestones", 1, "--limit", 120, "--batch-size", 10, "--amp", amp]
    reference = tmp_path / "reference"
    assert main_in_process(*retrain_args(searched, reference, *args))[0] == 0
    run = tmp_path / "stopped"
    # SIGTERM arrives as global step 17 (epoch 2, step 6 of 12) begins: that step is the last one taken
    proc = subprocess.run(rnas_cmd(*retrain_args(searched, run, *args)), capture_output=True, timeout=300,
                          env=dict(os.environ, PYTHONHASHSEED="0", RNAS_TERM_RANK_AT_STEP="0:17"))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert proc.returncode == 128 + signal.SIGTERM and (state["epoch"], state["step"]) == (1, 6), proc.stderr
    assert run_rnas("retrain", "--resume", run).returncode == 0
    a = torch.load(reference / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["scaler"] == b["scaler"]
    if amp == "fp16":
        assert a["scaler"]["scale"] < 2.0 ** 16  # overflowed steps were skipped and the run went on


def test_teacher_train_writes_robustbench_layout(searched, tmp_path):
    code, err = main_in_process("teacher", "train", "--arch", "wrn-10-1", "--at", "pgd", "--steps", 2,
                                "--data-dir", searched / "data", "--val-size", 50, "--limit", 100, "--epochs", 1,
                                "--batch-size", 25, "--eval-n", 20, "--out", tmp_path / "t")
    assert code == 0, err
    folder = tmp_path / "t" / "models" / "cifar10" / "Linf"
    summary = json.loads((folder / "wrn-10-1-pgd.json").read_text())
    assert summary["val"]["n"] == 20 and 0 <= summary["val"]["pgd10"] <= summary["val"]["clean"] <= 100
    teacher = rnas.load_teacher("wrn-10-1", "wrn-10-1-pgd", model_dir=tmp_path / "t" / "models")
    model = rnas.load_model(tmp_path / "t" / "checkpoint.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(teacher(x), model(x))


def test_eval_table_and_json(searched, tmp_path):
    run = tmp_path / "r"
    assert main_in_process(*retrain_args(searched, run))[0] == 0
    out = tmp_path / "eval.json"
    code, err = main_in_process("eval", run / "checkpoint.pt", "--attacks", "clean,fgsm,pgd5,mifgsm,cw",
                                "--eps-sweep", "2/255", "8/255", "--n", 40, "--json", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    arch = json.loads((searched / "search" / "arch.json").read_text())
    assert result["n"] == 40 and result["params"] == arch["params"] and result["macs"] == arch["macs"]
    rows = {(r["attack"], round(r["eps"] * 255)): r for r in result["results"]}
    assert set(rows) == {("clean", 0)} | {(a, e) for a in ("fgsm", "pgd5", "mifgsm", "cw") for e in (2, 8)}
    assert all(r["n"] == 40 and 0 <= r["accuracy"] <= 100 and r["seconds"] >= 0 for r in rows.values())
    assert rows[("pgd5", 8)]["accuracy"] <= rows[("pgd5", 2)]["accuracy"] <= rows[("clean", 0)]["accuracy"]
    code, err = main_in_process("eval", run / "checkpoint.pt", "--attacks", "clean,pgd", "--n", 5)
    assert code == 2 and "unknown attack 'pgd'" in err
    code, err = main_in_process("eval", run / "checkpoint.pt", "--attacks", "clean", "--split", "test",
                                "--data-dir", tmp_path)
    assert code == 2 and "the test split is absent" in err
    code, err = main_in_process("eval", run / "checkpoint.pt", "--attacks", "clean", "--split", "test")
    assert code == 0, err  # the generated data has a test_batch


@pytest.fixture(scope="module")
def retrained(searched):
    run = searched / "retrain-ce"
    code, err = main_in_process(*retrain_args(searched, run, "--baseline", "ce", "--limit", 50))
    assert code == 0, err
    return run / "checkpoint.pt"


def test_eval_split_auto_is_the_test_split_when_on_disk(searched, retrained, tmp_path, capsys):
    """The checkpoint's data dir has a test_batch (60 images); a copy without one falls back to val (50)."""
    from rnas.evaluation.evaluate import resolve_split

    expected = {(): ("test", "official test split (test_batch found)", 60),
                ("--split", "val"): ("val", "validation split: last 50 training images (--split val)", 50),
                ("--data-dir", write_cifar10(tmp_path / "notest")):
                    ("val", "validation split: last 50 training images (no official test split on disk)", 50)}
    for extra, (split, source, n) in expected.items():
        capsys.readouterr()
        code, err = main_in_process("eval", retrained, "--attacks", "clean", "--json", tmp_path / "e.json", *extra)
        assert code == 0, err
        result = json.loads((tmp_path / "e.json").read_text())
        assert (result["split"], result["split_source"], result["n"], result["seed"]) == (split, source, n, 0)
        assert capsys.readouterr().out.splitlines()[0].endswith(f"; cifar10 {split}: {source}; n={n}, seed 0")
    assert resolve_split("digits", None, "auto", None) == (
        "val", "validation split: last 297 training images (digits has no official test split)", 297)


def test_eval_cw_steps_and_seed_reach_the_attacks(retrained, tmp_path, monkeypatch):
    import pyautoattack

    import rnas.robust.attacks

    grads, seeds = [], []
    input_grad = rnas.robust.attacks._input_grad
    monkeypatch.setattr(rnas.robust.attacks, "_input_grad", lambda *a: grads.append(1) or input_grad(*a))

    class Recorder:
        def __init__(self, model, **kwargs):
            seeds.append(kwargs["seed"])
            self.apgd_targeted, self.fab = SimpleNamespace(n_target_classes=9), SimpleNamespace(n_target_classes=9)

        def run_standard_evaluation(self, x, y, batch_size):
            return x.clone(), None

    monkeypatch.setattr(pyautoattack, "AutoAttack", Recorder)
    results = {}
    for extra in ([], ["--cw-steps", 5], ["--cw-steps", 5], ["--cw-steps", 5, "--seed", 7]):
        grads.clear()
        out = tmp_path / "e.json"
        code, err = main_in_process("eval", retrained, "--attacks", "cw,autoattack", "--n", 20, "--json", out, *extra)
        assert code == 0, err
        result = json.loads(out.read_text())
        assert len(grads) == (5 if extra else 40) and result["results"][0]["steps"] == len(grads)  # one batch
        results.setdefault(tuple(map(str, extra)), []).append(result)
    assert seeds == [0, 0, 0, 7] and results[("--cw-steps", "5", "--seed", "7")][0]["seed"] == 7
    a, b = results[("--cw-steps", "5")]
    assert [{**r, "seconds": 0} for r in a["results"]] == [{**r, "seconds": 0} for r in b["results"]]
