"""What a user sees: the version, every choice and budget in --help, the device it resolves, the AutoAttack
versions, a refused --n beyond the split, epoch lines that stay on a terminal with the run's ETA, and the
rows of rnas eval announced while they run."""
import contextlib
import io
import sys

import pytest
import torch

from rnas.cli import main
from rnas.commands.training import ConsoleProgress, duration, epoch_line
from rnas.config.sections import RuntimeSection
from rnas.data import ImageTensors
from rnas.errors import UserError
from rnas.evaluation.evaluate import EvalConfig, RowWatch, eval_batches, evaluate
from rnas.robust.attacks import ATTACKS
from rnas.runtime.distributed import SINGLE, Dist, device_name
from rnas.study.plan import Step
from rnas.study.runner import StudyConsole


def _help(*command) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(out.getvalue().split())


def test_version():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and out.getvalue().startswith("rnas ")


@pytest.mark.parametrize(("command", "shown"), [
    (("retrain",), ["choices: cl, ce, kd, fixed", "choices: paper, hinton", "(default: 8/255; range: > 0)",
                    "choices: cifar10, cifar100, imagenet100, digits"]),
    (("search",), ["choices: power, linear, fbnetv2, none", "(default: 8/255"]),
    (("teacher", "train"), ["--teacher TEACHER", "(also --arch)", "--n N", "(also --eval-n)"]),
    (("eval",), ["choices: auto, val, select, report, test", "choices: pixel, normalized",
                 "choices: standard, rand, plus", "(default: 8/255; range: >= 0)", "--teacher TEACHER",
                 "(also --teacher-arch)"]),
])
def test_help_lists_every_choice_and_shows_budgets_as_fractions(command, shown):
    text = _help(*command)
    for piece in shown:
        assert piece in text, piece
    assert "0.0313725" not in text


def test_device_defaults_to_auto_and_a_run_records_what_it_resolved_to():
    assert RuntimeSection.__dataclass_fields__["device"].default == EvalConfig().device == "auto"
    assert device_name(torch.device("cpu"), SINGLE) == "cpu"
    assert device_name(torch.device("cuda", 1), SINGLE) == "cuda:1"
    assert device_name(torch.device("cuda", 1), Dist(1, 2, 1)) == "cuda"  # each rank takes its local GPU


def test_autoattack_versions_are_attacks_of_their_own():
    cfg = EvalConfig(attacks="clean,pgd20,autoattack", aa_version="plus")
    assert cfg.attack_list() == ["clean", "pgd20", "autoattack-plus"]
    assert ATTACKS["autoattack-rand"].call_kwargs == {"version": "rand"}
    assert ATTACKS["autoattack-plus"].call_kwargs == {"version": "plus"}
    assert EvalConfig(attacks="autoattack").attack_list() == ["autoattack"]


def test_n_beyond_the_split_is_refused():
    with pytest.raises(UserError, match=r"^--n 298: the val split has only 297 images"):
        eval_batches("digits", None, "val", None, 298, 500, "cpu")
    assert eval_batches("digits", None, "val", None, 297, 500, "cpu")[1] == 297


def test_epoch_lines_carry_the_run_eta():
    record = {"epoch": 1, "weight/total": 0.5, "val_acc": 61.25, "images_per_s": 900.0}
    assert epoch_line("search", record, 10, [30.0, 50.0]) == \
        "search epoch 2/10: loss 0.5000 val_acc 61.25 (900.0 img/s, ETA 5 min)"
    assert epoch_line("search", {**record, "epoch": 9}, 10, [40.0]).endswith("(900.0 img/s, done)")
    assert (duration(42), duration(3 * 3600 + 300)) == ("42 s", "3 h 05 min")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Job:
    command, epoch, step = "retrain", 0, 1
    loader = [None] * 4

    class cfg:
        epochs = 3


def test_on_a_terminal_the_epoch_line_stays_after_the_bar(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    progress = ConsoleProgress()
    for _ in range(4):
        progress.on_step(_Job, {})
    progress.on_epoch(_Job, {"epoch": 0, "total": 1.25, "val_acc": 50.0, "images_per_s": 10.0, "seconds": 20.0})
    assert err.getvalue().rstrip().endswith("retrain epoch 1/3: loss 1.2500 val_acc 50 (10.0 img/s, ETA 40 s)")


def test_a_study_step_resumed_mid_epoch_paces_its_eta_from_its_first_batch():
    """The study's checkpoint scan sees whole epochs only: a retrain checkpointed ~0.1 epoch into its second
    epoch of 15 is announced at 1/15, its first batch (after 30 s of start-up) is at 1.1/15, it ends that
    epoch 100 s later, so 13 epochs of 100/0.9 s each remain (24 min); pacing from the scan's 1/15 and the
    process start would say 28 min, and the later in the epoch the checkpoint, the further off."""
    now = [0.0]
    err = io.StringIO()
    console = StudyConsole(9, stream=err, clock=lambda: now[0])
    step = Step("retrain/s7/rnas-cl", "retrain", "s7/rnas-cl")
    console.begin(3, step, 1 / 15)
    now[0] = 30.0
    console.progress(3, step, 1.1 / 15, None)
    now[0] = 130.0
    console.progress(3, step, 2 / 15, "epoch 2/15 val_acc 40")
    assert err.getvalue().splitlines()[-1] == "[3/9] retrain s7/rnas-cl: epoch 2/15 val_acc 40, ETA 24 min"
    now[0] = 200.0
    console.end(3, step, "done", None)
    assert err.getvalue().splitlines()[-1] == "[3/9] retrain s7/rnas-cl: done after 3 min"
    console.begin(4, Step("eval/s7", "eval", "s7/eval.json"), 0.0)  # eval rows: paced from the step's start
    now[0] = 260.0
    console.progress(4, Step("eval/s7", "eval", "s7/eval.json"), 0.5, "clean: 70.0")
    assert err.getvalue().splitlines()[-1] == "[4/9] eval s7/eval.json: clean: 70.0, ETA 60 s"


def test_rnas_eval_reports_a_long_row_as_it_goes(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    data = ImageTensors(torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 4, (10,)))

    def batches():
        for i in range(0, 10, 4):
            yield data.images[i:i + 4].float() / 255, data.labels[i:i + 4]
    with RowWatch(10) as watch:  # a log, rows faster than 10 s: nothing
        evaluate(model, batches, ["clean", "fgsm"], [8 / 255], watch=watch)
    assert err.getvalue() == ""
    with RowWatch(10, every=0.0) as watch:  # rows slower than that: a line per round but the last
        evaluate(model, batches, ["clean", "fgsm"], [8 / 255], watch=watch)
    assert [line.split(",")[0] for line in err.getvalue().splitlines()] == [
        "rnas eval: clean: 4/10 images", "rnas eval: clean: 8/10 images", "rnas eval: fgsm 8/255: 4/10 images",
        "rnas eval: fgsm 8/255: 8/10 images"]


def test_a_trainer_built_in_python_from_a_retrain_config_trains(tmp_path):
    """What a RetrainConfig leaves to its dataset (lr, milestones, ...) is filled as rnas retrain fills it."""
    import json

    from rnas.data import make_loaders
    from rnas.engine.retrain import RetrainConfig
    from rnas.engine.trainer import Objective, Trainer
    from supernets import build_model, build_supernet, derive

    model = build_model(derive(build_supernet("s3", 10)))
    data = make_loaders("digits", None, 64, "cpu", 0, limit=128)
    cfg = RetrainConfig(epochs=1, data="digits", out=str(tmp_path / "run"))
    Trainer("retrain", cfg, model, data, Objective(distill="none"), torch.device("cpu")).fit(tmp_path / "run")
    assert (cfg.lr, cfg.milestones, cfg.lr_per_step) == (0.1, None, True)  # one epoch: stepped per step
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 0 and record["lr"] == 0.1  # two steps: 75 % and 90 % of them is step 2, the end
