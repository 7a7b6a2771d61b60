"""Adversarial training of the student (`rnas retrain --at`) combined with distillation, and what training
costs (rnas/cost.py): examples inside their budgets, the combined objective equal to its terms computed
apart (with and without Mixture BN), measured pass counts equal to a hand count for a 2-step run of each
mode, exact resume."""
import json

import pytest
import torch
from helpers import main_in_process, tiny_derived, tiny_retrain_config, whole_and_resumed
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from rnas.engine.cost import passes_per_image
from rnas.engine.retrain import RetrainConfig, build_retrain
from rnas.method.distill import attention_maps, kl_divergence, paired_attention_loss, teacher_targets
from rnas.robust.adversarial import MixtureBatchNorm2d, bn_route, nfgsm_examples, pgd_examples, trades_examples

BATCH, IMAGES = 10, 20  # two steps an epoch


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return tiny_derived(tmp_path_factory.mktemp("cost"), IMAGES, BATCH)


def config(root, **overrides) -> RetrainConfig:
    return tiny_retrain_config(root, IMAGES, BATCH, **{"steps": 2, **overrides})


def last_record(run) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


# per image and step, written out by hand for --steps 2: (student forwards, student backwards)
HAND = {"none": (1, 1), "trades": (1 + 2 + 2, 2 + 2), "pgd": (2 + 1, 2 + 1), "nfgsm": (1 + 1, 1 + 1),
        "pgd+mbn": (2 + 1 + 1, 2 + 1 + 1), "nfgsm+mbn": (1 + 1 + 1, 1 + 1 + 1),
        "trades+mbn": (1 + 2 + 2, 2 + 2)}  # TRADES has its clean pass already: Mixture BN only routes it


@pytest.mark.parametrize("mode", list(HAND))
@pytest.mark.parametrize("baseline", ["cl", "ce", "kd", "fixed"])
def test_measured_passes_equal_a_hand_count(arch, tmp_path, mode, baseline):
    at, _, mbn = mode.partition("+")
    run = tmp_path / "run"
    cfg = config(arch, at=at, baseline=baseline, mbn=bool(mbn), from_scratch=at != "none")
    trainer = build_retrain(cfg)
    model_macs = trainer.meter.student_macs
    assert model_macs == json.loads((arch / "search" / "arch.json").read_text())["macs"]  # the derived net's own count
    teacher_macs = trainer.meter.teacher_macs
    if baseline == "cl":
        with FlopCounterMode(display=False) as counter, torch.no_grad(), trainer.meter.paused():
            size = json.loads((arch / "search" / "arch.json").read_text())["spec"]["input_size"]
            trainer.teacher(torch.zeros(1, 3, size, size))
        assert teacher_macs == counter.get_total_flops() // 2 > 0
    trainer.fit(run)
    record = last_record(run)
    fwd, bwd = HAND[mode]
    images = 2 * BATCH
    assert record["cost/student_fwd_images"] == fwd * images
    assert record["cost/student_bwd_images"] == bwd * images
    teacher = baseline != "ce"  # one teacher forward per image for the attention and / or KL terms
    assert record["cost/teacher_fwd_images"] == (images if teacher else 0)
    assert passes_per_image(at, 2, bool(mbn), teacher) == {
        "student_fwd_images": fwd, "student_bwd_images": bwd, "teacher_fwd_images": int(teacher)}
    teacher_images = record["cost/teacher_fwd_images"]
    assert record["cost/train_macs"] == (fwd + 2 * bwd) * images * model_macs + teacher_images * teacher_macs
    assert record["cost/ce_epochs"] == pytest.approx(record["cost/train_macs"] / (3 * model_macs * images), rel=1e-6)
    # the run's totals in RUN/cost.json: the same counts, what they are counted in, and the wall-clock
    summary = json.loads((run / "cost.json").read_text())
    assert summary == {"format": "rnas-cost-1", "epochs_done": 1, "epochs": 1, "finished": True,
                       "student_fwd_images": fwd * images, "student_bwd_images": bwd * images,
                       "teacher_fwd_images": teacher_images, "train_macs": record["cost/train_macs"],
                       "ce_epochs": record["cost/ce_epochs"], "seconds": record["cost/total_seconds"],
                       "mac_epochs": round(record["cost/train_macs"] / images, 1),  # training MACs per image
                       "student_macs": model_macs, "teacher_macs": teacher_macs, "train_images": images}
    assert summary["seconds"] > 0


def test_search_passes_are_counted_and_totals_carry_over_epochs(arch, tmp_path):
    run = tmp_path / "search"
    code, err = main_in_process("search", "--space", arch / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt",
                                "tiny", "--model-dir", arch / "models", "--data-dir", arch / "data", "--val-size", 50,
                                "--limit", IMAGES, "--batch-size", BATCH, "--epochs", 2, "--out", run)
    assert code == 0, err
    first, second = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    # weight part (8 images) and arch part (2): one forward and one backward each; the teacher once per batch
    for record in (first, second):
        assert record["cost/student_fwd_images"] == record["cost/student_bwd_images"] == 2 * BATCH
        assert record["cost/teacher_fwd_images"] == 2 * BATCH
    assert second["cost/total_student_fwd_images"] == 4 * BATCH
    assert second["cost/total_train_macs"] == first["cost/train_macs"] + second["cost/train_macs"]
    summary = json.loads((run / "cost.json").read_text())
    assert (summary["epochs_done"], summary["finished"], summary["student_fwd_images"]) == (2, True, 4 * BATCH)
    assert summary["train_macs"] == second["cost/total_train_macs"]


def tell_routes_apart(model) -> None:
    """Mixture BN's two BNs start as copies; make them differ so that a forward through the wrong one shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MixtureBatchNorm2d):
                m.adv.weight.mul_(1.5)
                m.adv.bias.add_(0.1)


@pytest.mark.parametrize("mbn", [False, True])
@pytest.mark.parametrize("at", ["pgd", "nfgsm"])
def test_combined_objective_is_the_sum_of_its_terms(arch, at, mbn):
    trainer = build_retrain(config(arch, at=at, baseline="cl", from_scratch=True, gamma_t=50.0, mbn=mbn))
    x, y = next(iter(trainer.loader.epoch(0)))
    model, o = trainer.model, trainer.obj
    tell_routes_apart(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # the step's forwards move BN statistics
    torch.manual_seed(3)
    terms = trainer.objective(x, y)
    model.load_state_dict(before)
    torch.manual_seed(3)
    x_adv = (pgd_examples(model, x, y, o.eps, o.step, o.steps) if at == "pgd"
             else nfgsm_examples(model, x, y, o.eps, o.nfgsm_noise))
    with bn_route(model, "adv"):
        logits = model(x_adv)
    s_maps = attention_maps(trainer.student_taps.collect(), o.map_size)  # the student on the adversarial images
    adversarial = F.cross_entropy(logits, y)
    ce = adversarial
    if mbn:  # Mixture BN: the clean images through the clean BNs too, the base term the mean of the two
        with bn_route(model, "clean"), trainer.student_taps.paused():
            natural = F.cross_entropy(model(x), y)
        ce = (natural + adversarial) / 2
        torch.testing.assert_close(terms["natural"], natural, rtol=0, atol=1e-6)
        torch.testing.assert_close(terms["adversarial"], adversarial, rtol=0, atol=1e-6)
    q, t_maps = teacher_targets(trainer.teacher, x, trainer.teacher_taps, o.map_size)  # the teacher on the clean ones
    kl = kl_divergence(logits, q, o.kl, o.kd_temperature)
    attention = paired_attention_loss(s_maps, t_maps.index_select(1, trainer.tutor_index), trainer.n_teacher)
    torch.testing.assert_close(terms["base"], ce, rtol=0, atol=1e-6)
    torch.testing.assert_close(terms["kl"], kl, rtol=0, atol=1e-6)
    torch.testing.assert_close(terms["attn"], attention, rtol=0, atol=1e-7)
    torch.testing.assert_close(terms["total"], ce + kl + 50.0 * attention, rtol=0, atol=1e-5)
    trainer.close()


@pytest.mark.parametrize("mbn", [False, True])
def test_trades_combined_with_distillation_keeps_its_terms_on_the_clean_forward(arch, mbn):
    trainer = build_retrain(config(arch, at="trades", baseline="cl", from_scratch=True, beta=3.0, mbn=mbn))
    x, y = next(iter(trainer.loader.epoch(0)))
    model, o = trainer.model, trainer.obj
    tell_routes_apart(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    terms = trainer.objective(x, y)
    model.load_state_dict(before)
    torch.manual_seed(5)
    x_adv = trades_examples(model, x, o.eps, o.step, o.steps)
    with bn_route(model, "adv"):  # with Mixture BN the adversarial forward uses the adversarial BNs
        logits_adv = model(x_adv)
    with bn_route(model, "clean"):  # and the clean forward, which the attention and KL terms see, the clean ones
        logits = model(x)
    s_maps = attention_maps(trainer.student_taps.collect(), o.map_size)
    q, t_maps = teacher_targets(trainer.teacher, x, trainer.teacher_taps, o.map_size)
    natural = F.cross_entropy(logits, y)
    robust = F.kl_div(logits_adv.log_softmax(1), logits.softmax(1), reduction="batchmean")
    attention = paired_attention_loss(s_maps, t_maps.index_select(1, trainer.tutor_index), trainer.n_teacher)
    kl = kl_divergence(logits, q, o.kl, o.kd_temperature)
    torch.testing.assert_close(terms["total"], natural + 3.0 * robust + kl + o.gamma * attention, rtol=0, atol=1e-5)
    trainer.close()


@pytest.mark.parametrize("at", ["trades", "pgd", "nfgsm"])
def test_each_modes_examples_stay_in_their_budget_and_the_image_range(arch, at):
    trainer = build_retrain(config(arch, at=at, baseline="ce", from_scratch=True, steps=3))
    x, y = next(iter(trainer.loader.epoch(0)))
    eps = trainer.obj.eps
    model = trainer.model
    x_adv = {"trades": lambda: trades_examples(model, x, eps, trainer.obj.step, 3),
             "pgd": lambda: pgd_examples(model, x, y, eps, trainer.obj.step, 3),
             "nfgsm": lambda: nfgsm_examples(model, x, y, eps, trainer.obj.nfgsm_noise)}[at]()
    # N-FGSM does not project back (de Jorge et al.): noise of radius 2 eps, then a step of eps
    radius = (trainer.obj.nfgsm_noise + 1) * eps if at == "nfgsm" else eps
    assert float((x_adv - x).abs().max()) <= radius + 1e-6
    assert float((x_adv - x).abs().max()) > 0.5 * eps
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    trainer.close()


def test_resumed_combined_run_is_bit_identical(arch, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    a, b = whole_and_resumed(lambda: config(arch, at="nfgsm", baseline="cl", from_scratch=True, epochs=2),
                             whole, split, stop=(1, 1))
    wall = ("seconds", "images_per_s", "cost/total_seconds")
    assert {**a["cost"], "seconds": 0} == {**b["cost"], "seconds": 0}  # the counts; seconds are wall-clock

    def strip(path):
        return [{k: v for k, v in json.loads(line).items() if k not in wall} for line in path.read_text().splitlines()]
    assert strip(whole / "metrics.jsonl") == strip(split / "metrics.jsonl")
    # the run's wall-clock total carries over the resume: the sum of its epochs' own seconds
    records = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["cost/total_seconds"] == pytest.approx(sum(r["seconds"] for r in records), abs=2e-3)
    assert b["cost"]["seconds"] == pytest.approx(records[-1]["cost/total_seconds"], abs=1e-3)
    # and so do the totals of RUN/cost.json, written by the resumed run
    summaries = [json.loads((r / "cost.json").read_text()) for r in (whole, split)]
    assert summaries[0]["epochs_done"] == 2 and summaries[0]["finished"]
    assert {**summaries[0], "seconds": 0} == {**summaries[1], "seconds": 0}
    assert summaries[1]["seconds"] == records[-1]["cost/total_seconds"]


@pytest.mark.parametrize(("at", "baseline", "budget"), [("nfgsm", "ce", 4.0), ("none", "cl", 3.0), ("pgd", "cl", 8.0)])
def test_a_compute_budget_buys_the_epochs_its_cost_allows(arch, tmp_path, at, baseline, budget):
    trainer = build_retrain(config(arch, at=at, baseline=baseline, from_scratch=at != "none", epochs=None,
                                   budget=budget))
    per_image = passes_per_image(at, 2, False, baseline == "cl")
    meter = trainer.meter
    epoch_cost = ((per_image["student_fwd_images"] + 2 * per_image["student_bwd_images"]) * meter.student_macs
                  + per_image["teacher_fwd_images"] * meter.teacher_macs) / (3 * meter.student_macs)
    assert trainer.cfg.epochs == max(1, round(budget / epoch_cost))
    per_epoch = [round(0.75 * trainer.cfg.epochs), round(0.9 * trainer.cfg.epochs)]
    # the epochs it buys decide the schedule: per step when per-epoch milestones would not fall inside the run
    assert (trainer.cfg.lr_per_step, trainer.cfg.milestones) == \
        ((True, None) if not 0 < per_epoch[0] < per_epoch[1] < trainer.cfg.epochs else (False, per_epoch))
    trainer.fit(tmp_path / "run")
    # what it measured is the budget up to the rounding of the epochs
    assert last_record(tmp_path / "run")["cost/ce_epochs"] == pytest.approx(trainer.cfg.epochs * epoch_cost, abs=1e-6)


def test_epochs_and_a_budget_that_disagree_are_one_line(arch, tmp_path):
    code, err = main_in_process("retrain", arch / "search" / "arch.json", "--data-dir", arch / "data", "--val-size", 50,
                                "--limit", IMAGES, "--batch-size", BATCH, "--budget", 3, "--epochs", 7, "--baseline",
                                "ce", "--out", tmp_path / "run")
    assert code == 2 and "--epochs 7 and --budget 3 (3 epochs of this training): give one" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_shipped_study_of_adversarial_training_at_equal_compute_plans(tmp_path):
    """studies/cifar10-vs-at.yaml: every arm at both budgets, from scratch, each model evaluated; RNAS-CL and
    the fixed mapping at 15 under a second seed too."""
    from helpers import plan_shipped_study

    plan = plan_shipped_study("cifar10-vs-at", tmp_path)
    retrains = {s.path: s.config for s in plan.steps() if s.kind == "retrain"}
    arms = ["ce-pgd", "ce-trades", "ce-nfgsm", "rnas-cl", "fixed", "rnas-cl-nfgsm", "rnas-cl-trades"]
    seeded = ["s3/rnas-cl-15ce-s1", "s3/fixed-15ce-s1"]
    assert list(retrains) == [f"s3/{a}-{b}ce" for a in arms for b in (15, 30)] + seeded
    assert [retrains[p].seed for p in seeded] == [1, 1] and retrains["s3/rnas-cl-15ce"].seed == 0
    for cfg in retrains.values():
        assert cfg.budget in (15, 30) and cfg.epochs is None and cfg.from_scratch == (cfg.at is not None)
    evals = [s for s in plan.steps() if s.kind == "eval"]
    assert len(evals) == len(retrains) and all(e.config.attack_list() == ["clean", "pgd20", "autoattack"]
                                               for e in evals)


def test_the_total_seconds_carry_over_a_resume_and_are_left_out_when_earlier_ones_are_unknown():
    from rnas.engine.cost import COUNTS, CostMeter

    meter = CostMeter(torch.nn.Linear(2, 2), None, 1, 0, 10)
    counts = {"epoch": dict.fromkeys(COUNTS, 0), "total": dict.fromkeys(COUNTS, 4)}
    meter.load_state({**counts, "seconds": 2.0})
    assert meter.add_seconds(1.5) == 3.5 and meter.state()["seconds"] == 3.5
    meter.load_state(counts)  # a checkpoint written before the total was kept
    assert meter.add_seconds(1.5) is None and meter.state()["seconds"] is None
