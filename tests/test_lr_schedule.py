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


@pytest.mark.parametrize(("epochs", "per_step", "milestones"), [
    (1, True, None), (2, True, None), (5, True, None),  # per epoch: [1, 1], [2, 2], [4, 4]: never or twice at once
    (6, False, [4, 5]), (15, False, [11, 14]), (100, False, [75, 90])])  # per epoch finishes: unchanged
def test_by_default_a_run_too_short_for_its_per_epoch_schedule_steps_its_lr_per_step(epochs, per_step, milestones):
    cfg = RetrainConfig(arch="a.json", epochs=epochs)
    fill_recipe(cfg)
    assert (cfg.lr_per_step, cfg.milestones) == (per_step, milestones)
    used = lrs_per_step(cfg, 10)
    assert used[-1] == pytest.approx(0.001, rel=1e-9)  # the schedule finishes within the run's own epochs
    given = RetrainConfig(arch="a.json", epochs=2, milestones=[1])  # a schedule asked for is kept as it is
    fill_recipe(given)
    assert (given.lr_per_step, given.milestones) == (False, [1])
    budget = RetrainConfig(arch="a.json", budget=2.0)  # the epochs a budget buys are known later
    fill_recipe(budget)
    assert budget.lr_per_step is None and budget.milestones is None
    budget.epochs = 2
    fill_recipe(budget)
    assert (budget.lr_per_step, budget.milestones) == (True, None)


def test_a_run_written_before_the_default_changed_resumes_as_it_ran(arch, tmp_path):
    """A one-epoch run's config.yaml: false (written since --lr-per-step exists), or no lr_per_step at all
    (written before): both read back per epoch, and a study asking for nothing keeps it."""
    from rnas.config import changed_setting, read_run_config

    run = tmp_path / "old"
    build_retrain(config(arch, lr_per_step=False)).fit(run)
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["lr_per_step"] is False
    del written["lr_per_step"]
    (run / "config.yaml").write_text(yaml.safe_dump(written))
    base = read_run_config(RetrainConfig, run / "config.yaml", "retrain")
    assert base["lr_per_step"] is False
    study_now = config(arch, lr_per_step=None)  # a study's retrain section that leaves it to the default
    assert changed_setting(base, study_now, unset_ok=True) is None
    fresh = tmp_path / "new"
    build_retrain(config(arch, lr_per_step=None)).fit(fresh)
    assert yaml.safe_load((fresh / "config.yaml").read_text())["lr_per_step"] is True  # one epoch: per step
