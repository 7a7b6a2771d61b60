"""What the search and retrain steps may and may not touch, checked tensor by tensor on tiny in-process
objects: the 80/20 split, one teacher forward per batch, weights vs logits per step, a frozen teacher,
both temperatures, the searched tutors in retrain, and the TRADES inner maximisation."""
import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_search_config, write_tiny_setup
from torch import nn
from torch.nn import functional as F

from rnas.engine.loop import run_job
from rnas.engine.retrain import RetrainConfig, build_retrain
from rnas.engine.search import SearchConfig, Searcher
from rnas.method.distill import attention_maps, channel_energy, teacher_targets
from rnas.nets.derivation import write_arch
from rnas.robust.adversarial import trades_examples
from rnas.robust.attacks import project_linf
from rnas.runtime.rundir import load_checkpoint
from rnas.teachers import load_teacher

RETRAIN_FIELDS = {f.name for f in dataclasses.fields(RetrainConfig)}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("semantics"))


def search_config(env, **overrides) -> SearchConfig:
    return tiny_search_config(env, **overrides)


@pytest.fixture
def make_searcher(env):
    made = []

    def make(**overrides) -> Searcher:
        searcher = Searcher.from_config(search_config(env, **overrides))
        made.append(searcher)
        return searcher

    yield make
    for searcher in made:
        searcher.close()


def clones(tensors) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(before: dict, module: nn.Module):
    after = module.state_dict()
    assert list(after) == list(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], changed


def assert_frozen_teacher(teacher: nn.Module):
    assert [name for name, m in teacher.named_modules() if m.training] == []
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())


def first_batch(searcher: Searcher):
    return next(iter(searcher.loader.epoch(0)))


# ---- 1. each step moves only its own parameters ----------------------------------------------------

def test_weight_step_changes_every_weight_with_a_gradient_and_no_logit(make_searcher):
    s = make_searcher()
    x, y = first_batch(s)
    s.train_step(x, y)  # non-zero logits and Adam moments: a stray arch-optimizer step would move them
    q, maps = s.teacher_targets(x)
    weights, logits, teacher = clones(s.weight_params), clones(s.arch_params), state_copy(s.teacher)
    assert len(logits) == len(s.supernet.searched_blocks) + 1 and s.arch_params[-1] is s.tutor.tutor_logits

    s.weight_step(x[:8], y[:8], (q[:8], maps[:8]))
    received = [p.grad is not None for p in s.weight_params]
    assert sum(received) == len(s.weight_params)  # sample mode: every weight of the supernet is in the graph
    unchanged = [i for i, (p, p0) in enumerate(zip(s.weight_params, weights, strict=True))
                 if received[i] and torch.equal(p, p0)]
    assert unchanged == []
    assert all(torch.equal(p, p0) for p, p0 in zip(s.arch_params, logits, strict=True))
    assert all(p.requires_grad for p in s.arch_params)  # unfrozen again after the step
    assert_same_state(teacher, s.teacher)


def test_arch_step_changes_every_width_and_tutor_logit_and_no_weight(make_searcher):
    s = make_searcher()
    x, y = first_batch(s)
    s.train_step(x, y)  # every weight now holds a .grad and a momentum buffer: a stray SGD step would move them
    q, maps = s.teacher_targets(x)
    weights, logits, teacher = clones(s.weight_params), clones(s.arch_params), state_copy(s.teacher)

    s.arch_step(x[8:], y[8:], (q[8:], maps[8:]))
    for i, (p, p0) in enumerate(zip(s.arch_params, logits, strict=True)):
        assert torch.all(p != p0), f"arch parameter {i}: {p0} -> {p}"  # every single logit moved
    assert all(torch.equal(p, p0) for p, p0 in zip(s.weight_params, weights, strict=True))
    assert all(p.requires_grad for p in s.weight_params)
    assert_same_state(teacher, s.teacher)


def test_arch_step_leaves_bn_running_statistics_alone(make_searcher):
    s = make_searcher()
    x, y = first_batch(s)
    q, maps = s.teacher_targets(x)
    buffers = {k: v.clone() for k, v in s.supernet.named_buffers()}
    s.arch_step(x[8:], y[8:], (q[8:], maps[8:]))
    changed = [k for k, v in s.supernet.named_buffers() if not torch.equal(v, buffers[k])]
    assert changed == []


# ---- 2. the 80/20 split and one teacher forward per batch --------------------------------------------

@pytest.mark.parametrize(("batch", "arch_split", "sizes"), [
    (10, 0.2, (8, 2)), (128, 0.2, (102, 26)), (10, 0.5, (5, 5)), (128, 0.5, (64, 64)), (3, 0.2, (2, 1)),
])
def test_train_step_splits_the_batch_and_runs_the_teacher_once(make_searcher, batch, arch_split, sizes):
    s = make_searcher(arch_split=arch_split)
    calls, teacher_runs = [], []

    def spy(name, step):
        def wrapped(x, y, targets, *args, **kwargs):
            calls.append(SimpleNamespace(name=name, x=x.clone(), y=y.clone(), q=targets[0].clone(),
                                         maps=targets[1].clone()))
            return step(x, y, targets, *args, **kwargs)
        return wrapped

    s.weight_step, s.arch_step = spy("weight", s.weight_step), spy("arch", s.arch_step)
    handle = s.teacher.register_forward_hook(lambda _m, inputs, out: teacher_runs.append((inputs[0].clone(),
                                                                                          out.clone())))
    gen = torch.Generator().manual_seed(batch)
    x, y = torch.rand(batch, 3, 32, 32, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    try:
        terms = s.train_step(x, y)
    finally:
        handle.remove()
    n_weight, n_arch = sizes
    assert [(c.name, len(c.x), len(c.y), len(c.q), len(c.maps)) for c in calls] == [
        ("weight", n_weight, n_weight, n_weight, n_weight), ("arch", n_arch, n_arch, n_arch, n_arch)]
    assert len(teacher_runs) == 1 and torch.equal(teacher_runs[0][0], x)  # once, on the whole batch
    weight, arch = calls
    assert torch.equal(weight.x, x[:n_weight]) and torch.equal(arch.x, x[n_weight:])
    assert torch.equal(weight.y, y[:n_weight]) and torch.equal(arch.y, y[n_weight:])
    q = teacher_runs[0][1].float()
    assert torch.equal(weight.q, q[:n_weight]) and torch.equal(arch.q, q[n_weight:])
    _, maps = s.teacher_targets(x)  # the frozen teacher is deterministic: the same maps, sliced the same way
    assert torch.equal(torch.cat([weight.maps, arch.maps]), maps)
    assert {k for k in terms if k.startswith("weight/")} and {k for k in terms if k.startswith("arch/")}


# ---- 3. the teacher is never modified -----------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(env, tmp_path_factory):
    """A one-epoch search run in this process (the same calls as run_search), derived to arch.json, with
    the teacher's state before and after."""
    run = tmp_path_factory.mktemp("searched") / "run"
    searcher = Searcher.from_config(search_config(env, limit=30, out=str(run), arch_lr=0.05))
    before = state_copy(searcher.teacher)
    run_job(searcher, run, resume=False)
    path, arch = write_arch(run)
    return SimpleNamespace(run=run, arch_path=path, arch=arch, teacher=searcher.teacher, teacher_before=before)


def test_teacher_unchanged_by_a_search(env, searched):
    assert load_checkpoint(searched.run / "checkpoint.pt")["epoch"] == 1  # the epoch ran (with its validation)
    assert_same_state(searched.teacher_before, searched.teacher)
    assert_same_state(state_copy(load_teacher("wrn-10-1", "tiny", env / "models")), searched.teacher)
    assert_frozen_teacher(searched.teacher)


@pytest.mark.parametrize(("baseline", "trades"), [("cl", False), ("kd", True)])
def test_teacher_unchanged_by_a_retrain(env, searched, tmp_path, baseline, trades):
    run = tmp_path / "retrain"
    extra = {"from_scratch": True} if trades and "from_scratch" in RETRAIN_FIELDS else {}  # TRADES without --init
    trainer = build_retrain(RetrainConfig(arch=str(searched.arch_path), data_dir=str(env / "data"), val_size=50,
                                          limit=30, batch_size=10, epochs=1, out=str(run), workers=0,
                                          baseline=baseline, trades=trades, steps=2, **extra))
    before, student = state_copy(trainer.teacher), state_copy(trainer.model)
    run_job(trainer, run, resume=False)
    trained = trainer.model.state_dict()
    assert trainer.epoch == 1 and any(not torch.equal(v, trained[k]) for k, v in student.items())
    assert_same_state(before, trainer.teacher)
    assert_same_state(searched.teacher_before, trainer.teacher)
    assert_frozen_teacher(trainer.teacher)


# ---- 4. retrain --baseline cl follows arch.json's tutors ---------------------------------------------

def retrain_trainer(env, arch_path, out):
    return build_retrain(RetrainConfig(arch=str(arch_path), data_dir=str(env / "data"), val_size=50, limit=20,
                                       batch_size=10, epochs=1, out=str(out), workers=0, baseline="cl"))


def trainer_pairs(trainer) -> list[tuple[str, str]]:
    teachers = trainer.teacher_taps.names
    return [(s, teachers[j]) for s, j in zip(trainer.student_taps.names, trainer.tutor_index.tolist(), strict=True)]


def arch_pairs(arch) -> list[tuple[str, str]]:
    return [(s, arch["teacher_layers"][j]) for s, j in zip(arch["student_layers"], arch["tutors"], strict=True)]


def assert_tutor_maps_follow(trainer, arch):
    """The maps the Eq. (3) loss compares student layer i with are those of the teacher module named
    arch["teacher_layers"][arch["tutors"][i]], captured here by hooks of our own."""
    modules = dict(trainer.teacher.named_modules())
    energy = {}
    names = sorted({arch["teacher_layers"][j] for j in arch["tutors"]})
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: energy.__setitem__(n, channel_energy(out)))
               for n in names]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    try:
        _, t_maps = teacher_targets(trainer.teacher, x, trainer.teacher_taps, trainer.obj.map_size)
    finally:
        for h in handles:
            h.remove()
    used = t_maps.index_select(1, trainer.tutor_index)
    with torch.inference_mode():
        expected = torch.stack([attention_maps([energy[arch["teacher_layers"][j]]], trainer.obj.map_size)[:, 0]
                                for j in arch["tutors"]], 1)
    assert used.shape == expected.shape == (3, len(arch["student_layers"]), trainer.obj.map_size ** 2)
    assert torch.allclose(used, expected, rtol=0, atol=1e-6)


def test_retrain_cl_uses_exactly_the_arch_json_tutors(env, searched, tmp_path):
    arch = json.loads(searched.arch_path.read_text())
    trainer = retrain_trainer(env, searched.arch_path, tmp_path / "a")
    try:
        assert trainer.student_taps.names == arch["student_layers"]
        assert trainer_pairs(trainer) == arch_pairs(arch)
        assert trainer.n_teacher == len(arch["teacher_layers"])
        assert_tutor_maps_follow(trainer, arch)
    finally:
        trainer.close()

    n_t = len(arch["teacher_layers"])
    shifted = [(j + 1) % n_t for j in arch["tutors"]]  # differs from the searched tutor at every layer
    single = [n_t - 1 - arch["tutors"][0]] * len(arch["tutors"])  # everyone taught by one layer
    for name, mapping in (("shifted", shifted), ("single", single)):
        edited = {**arch, "tutors": mapping}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(edited))
        trainer = retrain_trainer(env, path, tmp_path / name)
        try:
            assert trainer_pairs(trainer) == arch_pairs(edited) != arch_pairs(arch)
            assert len(trainer.teacher_taps.names) == len(set(mapping))  # only the tutor layers are tapped
            assert_tutor_maps_follow(trainer, edited)
        finally:
            trainer.close()


# ---- 5. both temperatures, every epoch, and across a resume -------------------------------------------

def test_both_temperatures_decay_every_epoch_and_resume_exactly(make_searcher, tmp_path):
    s = make_searcher(tau=3.0, tutor_tau=7.0)  # different tau_0: a swapped or shared temperature shows
    for epoch in (0, 1, 2, 5):
        s.begin_epoch(epoch)
        assert s.supernet.tau == pytest.approx(3.0 * math.exp(-0.045 * epoch), rel=1e-12, abs=0)
        assert s.tutor.tau == pytest.approx(7.0 * math.exp(-0.045 * epoch), rel=1e-12, abs=0)
    tau, tutor_tau = s.supernet.tau, s.tutor.tau
    torch.save(s.state(), tmp_path / "checkpoint.pt")
    resumed = make_searcher(tau=3.0, tutor_tau=7.0)
    resumed.begin_epoch(0)
    assert (resumed.supernet.tau, resumed.tutor.tau) == (3.0, 7.0)
    resumed.load_state(load_checkpoint(tmp_path / "checkpoint.pt"))
    assert resumed.supernet.tau == tau and resumed.tutor.tau == tutor_tau  # bit-exact floats
    s.begin_epoch(0)
    s.load_state(load_checkpoint(tmp_path / "checkpoint.pt"))
    assert (s.supernet.tau, s.tutor.tau) == (tau, tutor_tau)


# ---- 6. the TRADES inner maximisation ---------------------------------------------------------------

def small_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():  # non-trivial running statistics, so eval- and train-mode BN differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.train()


def kl_sum(model, x, x_adv) -> float:
    """KL(f(x) || f(x_adv)) summed over the batch, both forwards in eval mode."""
    model.eval()
    try:
        with torch.no_grad():
            return F.kl_div(model(x_adv).log_softmax(1), model(x).softmax(1), reduction="sum").item()
    finally:
        model.train()


def test_trades_examples_ascend_the_kl_in_eval_mode_within_the_budget():
    model = small_model()
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(6, 3, 12, 12, generator=gen)
    x[0, :, :3] = 0.0  # pixels on both edges of [0, 1]: the projection must clamp there
    x[1, :, :3] = 1.0
    eps, step, steps = 8 / 255, 2 / 255, 10
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    modes = []
    handle = model.register_forward_hook(lambda m, _i, _o: modes.append([s.training for s in m.modules()]))
    try:
        x_adv = trades_examples(model, x, eps, step, steps, generator=torch.Generator().manual_seed(11))
        start = trades_examples(model, x, eps, step, 0, generator=torch.Generator().manual_seed(11))
    finally:
        handle.remove()
    # the starting point is x + 0.001 N(0, 1) (projected), drawn from the generator
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))
    assert torch.equal(start, project_linf(x + 0.001 * noise, x, eps))

    kl_start, kl_adv = kl_sum(model, x, start), kl_sum(model, x, x_adv)
    assert kl_adv > 100 * kl_start > 0, (kl_start, kl_adv)
    assert (x_adv - x).abs().max().item() == pytest.approx(eps, abs=1e-6)  # reaches the budget, never beyond
    assert x_adv.min().item() == 0.0 and x_adv.max().item() == 1.0 and torch.equal(x_adv.clamp(0, 1), x_adv)
    assert torch.equal(x_adv[0, :, :3].clamp(max=eps + 1e-6), x_adv[0, :, :3])  # never below 0
    assert len(modes) >= steps and all(not any(flags) for flags in modes)  # every inner forward in eval mode
    assert all(m.training for m in model.modules())  # train mode restored
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # BN statistics untouched
    assert all(p.grad is None for p in model.parameters())


def test_metrics_log_the_learning_rate_each_epoch_trained_at(env, searched, tmp_path):
    """lr in metrics.jsonl is the rate the epoch used (milestone 2: epochs 1-2 at 0.1, epoch 3 at 0.01), not
    the next epoch's, which it was when read after the scheduler's step."""
    run = tmp_path / "retrain"
    trainer = build_retrain(RetrainConfig(arch=str(searched.arch_path), data_dir=str(env / "data"), val_size=50,
                                          limit=20, batch_size=10, epochs=3, out=str(run), workers=0, baseline="ce",
                                          lr=0.1, milestones=[2], lr_decay=0.1))
    run_job(trainer, run, resume=False)
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.1, 0.1, 0.01])
