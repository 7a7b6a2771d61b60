"""--val-select / --val-report: two disjoint held-out splits drawn from train by a recorded seed; the training
set holds neither; runs record them; rnas eval reports on the report split and says so."""
import json

import pytest
import torch
import yaml
from helpers import main_in_process, tiny_derived, tiny_retrain_config, write_cifar10

from rnas.data import make_loaders
from rnas.data.readers import ImageTensors
from rnas.data.splits import HeldOut, carve
from rnas.errors import UserError


def test_the_three_sets_are_disjoint_cover_the_training_file_and_follow_the_seed():
    parts = HeldOut(100, 250, seed=3).positions(1000)
    sets = {k: set(v.tolist()) for k, v in parts.items()}
    assert [len(sets[k]) for k in ("train", "select", "report")] == [650, 100, 250]
    assert not sets["train"] & sets["select"] and not sets["train"] & sets["report"]
    assert not sets["select"] & sets["report"]
    assert sets["train"] | sets["select"] | sets["report"] == set(range(1000))
    again = HeldOut(100, 250, seed=3).positions(1000)
    assert all(torch.equal(parts[k], again[k]) for k in parts)  # a function of (sizes, seed) alone
    other = HeldOut(100, 250, seed=4).positions(1000)
    assert not torch.equal(parts["report"], other["report"])
    # the select split of N + M draws the same first N whatever M is: a bigger report split keeps selection
    assert torch.equal(HeldOut(100, 300, seed=3).positions(1000)["select"], parts["select"])


def test_a_pool_draws_both_splits_from_the_last_images_only():
    parts = HeldOut(30, 40, seed=2, pool=100).positions(1000)
    held = set(parts["select"].tolist()) | set(parts["report"].tolist())
    assert len(held) == 70 and min(held) >= 900  # the last 100 (say, those the teacher never trained on)
    assert len(parts["train"]) == 930 and set(parts["train"].tolist()) == set(range(1000)) - held
    assert HeldOut(30, 40, seed=2, pool=100).record() == {"val_select": 30, "val_report": 40, "split_seed": 2,
                                                          "split_pool": 100}
    with pytest.raises(UserError, match="fit in the 50 images they are drawn from"):
        HeldOut(30, 40, pool=50).positions(1000)


def test_limit_takes_the_first_training_images_in_file_order_and_bad_sizes_are_one_line():
    data = ImageTensors(torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 2, 2).clone(),
                        torch.arange(20))
    parts = carve(data, HeldOut(4, 6, seed=0), limit=5)
    assert len(parts["train"]) == 5 and parts["train"].labels.tolist() == sorted(parts["train"].labels.tolist())
    held = set(parts["select"].labels.tolist()) | set(parts["report"].labels.tolist())
    assert not held & set(parts["train"].labels.tolist())
    with pytest.raises(UserError, match=r"--val-select 12 \+ --val-report 8: must leave training images"):
        HeldOut(12, 8).positions(20)


def test_loaders_validate_on_the_select_split_and_never_hold_the_report_split(tmp_path):
    write_cifar10(tmp_path)
    raw = make_loaders("cifar10", str(tmp_path), 10, "cpu", val_size=0).train.images  # all 300, file order
    splits = HeldOut(40, 60, seed=1)
    bundle = make_loaders("cifar10", str(tmp_path), 10, "cpu", splits=splits)
    positions = splits.positions(300)
    assert torch.equal(bundle.train.images, raw[positions["train"]])
    assert torch.equal(bundle.val.images, raw[positions["select"]])
    report = {bytes(img.numpy()) for img in raw[positions["report"]]}
    assert not report & {bytes(img.numpy()) for img in torch.cat([bundle.train.images, bundle.val.images])}
    with pytest.raises(UserError, match="--val-size with --val-select"):
        from rnas.data.loaders import loaders_for

        loaders_for(tiny_retrain_config(tmp_path, 40, 10, val_select=10), "cpu")


@pytest.mark.slow
def test_a_run_records_its_splits_and_rnas_eval_reports_on_the_report_split(tmp_path):
    root = tiny_derived(tmp_path, 40, 10)
    code, err = main_in_process("retrain", root / "search" / "arch.json", "--data-dir", root / "data", "--epochs", 1,
                                "--batch-size", 20, "--limit", 40, "--val-select", 30, "--val-report", 50,
                                "--split-seed", 7, "--workers", 0, "--log-every", 0, "--out", tmp_path / "r")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (config["val_select"], config["val_report"], config["split_seed"], config["val_size"]) == (30, 50, 7, None)
    ckpt = tmp_path / "r" / "checkpoint.pt"
    code, err = main_in_process("eval", ckpt, "--attacks", "clean", "--json", tmp_path / "e.json")
    assert code == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert (result["split"], result["n"], result["val_select"], result["val_report"], result["split_seed"]) == \
        ("report", 50, 30, 50, 7)
    assert "report split: 50 training images drawn by --split-seed 7" in result["split_source"]
    code, err = main_in_process("eval", ckpt, "--attacks", "clean", "--split", "select", "--json",
                                tmp_path / "s.json")
    assert code == 0, err
    assert (json.loads((tmp_path / "s.json").read_text())["split"], json.loads((tmp_path / "s.json").read_text())
            ["n"]) == ("select", 30)
    code, err = main_in_process("compare", tmp_path / "e.json", tmp_path / "s.json")
    assert code == 2 and "evaluated different images (split 'report' in A, 'select' in B)" in err, err
    # a run without the splits: --split report is one line, exit 2
    code, err = main_in_process("retrain", root / "search" / "arch.json", "--data-dir", root / "data", "--epochs", 1,
                                "--batch-size", 20, "--val-size", 50, "--limit", 40, "--workers", 0, "--log-every", 0,
                                "--out", tmp_path / "plain")
    assert code == 0, err
    code, err = main_in_process("eval", tmp_path / "plain" / "checkpoint.pt", "--attacks", "clean", "--split",
                                "report")
    assert code == 2 and "--split report: the run has no held-out report split" in err, err
