"""The learning-rate schedule of rnas retrain, stepped per epoch (the default) or per training step
(--lr-per-step): exact learning rates step by step, what a run records and writes, exact resume."""
import json
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import tiny_derived, tiny_retrain_config, whole_and_resumed

from rnas.engine.optim import fill_recipe, make_scheduler
from rnas.engine.retrain import RetrainConfig, build_retrain

BATCH, IMAGES = 5, 20  # four steps an epoch


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return tiny_derived(tmp_path_factory.mktemp("schedule"), IMAGES, BATCH)


def config(root, **overrides) -> RetrainConfig:
    return tiny_retrain_config(root, IMAGES, BATCH, **{"baseline": "ce", "lr_per_step": True, **overrides})


def lrs_per_step(cfg, steps_per_epoch: int) -> list[float]:
    """The learning rate each training step of ``cfg`` uses, stepping the scheduler as the loop does."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    used = []
    for _epoch in range(cfg.epochs):
        for _step in range(steps_per_epoch):
            used.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if cfg.lr_per_step:
                scheduler.step()
        if not cfg.lr_per_step:
            scheduler.step()
    return used


def schedule_config(**values) -> SimpleNamespace:
    cfg = SimpleNamespace(lr=0.1, lr_decay=0.1, cosine=False, milestones=None, **values)
    fill_recipe(cfg)
    return cfg


def test_per_step_default_milestones_decay_a_one_epoch_run_at_75_and_90_percent_of_its_steps():
    cfg = schedule_config(epochs=1, lr_per_step=True)
    assert cfg.milestones is None  # left to the steps: 75 % and 90 % of them
    used = lrs_per_step(cfg, 352)
    assert used == pytest.approx([0.1] * 264 + [0.01] * 53 + [0.001] * 35, rel=1e-9)
    # per epoch, the same one-epoch run never decays: its milestones are epochs 1 and 1
    per_epoch = schedule_config(epochs=1, lr_per_step=False)
    assert per_epoch.milestones == [1, 1] and set(lrs_per_step(per_epoch, 352)) == {0.1}


def test_per_step_explicit_milestones_are_epochs_of_steps_and_cosine_runs_over_all_steps():
    cfg = schedule_config(epochs=3, lr_per_step=True)
    cfg.milestones = [2]
    assert lrs_per_step(cfg, 4) == pytest.approx([0.1] * 8 + [0.01] * 4, rel=1e-9)
    cosine = schedule_config(epochs=2, lr_per_step=True)
    cosine.cosine = True
    used = lrs_per_step(cosine, 4)
    expected = [0.05 * (1 + torch.cos(torch.tensor(torch.pi * t / 8))).item() for t in range(8)]
    assert used == pytest.approx(expected, rel=1e-6)


def test_a_per_step_run_records_its_last_steps_lr_and_writes_no_milestones(arch, tmp_path):
    run = tmp_path / "run"
    build_retrain(config(arch)).fit(run)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # four steps: milestones at steps round(3.0) = 3 and round(3.6) = 4, so the last step runs at 0.01
    assert record["lr"] == pytest.approx(0.01, rel=1e-9)
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["lr_per_step"] is True and written["milestones"] is None
    # the default per-epoch run of one epoch keeps 0.1 throughout
    build_retrain(config(arch, lr_per_step=False)).fit(tmp_path / "epoch")
    record = json.loads((tmp_path / "epoch" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["lr"] == pytest.approx(0.1, rel=1e-9)


@pytest.mark.parametrize(("milestones", "stop", "expected"), [
    (None, (1, 2), [0.1, 0.001]),  # 8 steps: decays at steps 6 and 7; stopped after step 6, past the first
    ([1], (0, 3), [0.1, 0.01]),    # a milestone on the epoch boundary, stopped after the epoch's last step
])
def test_a_per_step_run_resumed_mid_epoch_is_bit_identical(arch, tmp_path, milestones, stop, expected):
    whole, split = tmp_path / "whole", tmp_path / "split"
    # the stop is polled after each step, before the step count moves on: (0, 3) is after epoch 0's 4th step
    a, b = whole_and_resumed(lambda: config(arch, epochs=2, milestones=milestones), whole, split, stop)
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["last_epoch"] == 8
    lrs = [json.loads(line)["lr"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [json.loads(line)["lr"] for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx(expected, rel=1e-9)
