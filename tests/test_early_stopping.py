"""`rnas retrain --robust-val N` (Rice et al.'s early stopping): each epoch's PGD-10 accuracy on the end of the
validation split equals the attack computed by hand, best.pt holds the model of the best epoch, a resumed run
measures and keeps the same, and a run without a validation split is refused before it trains."""
import json

import pytest
import torch
from helpers import main_in_process, tiny_search_and_derive, write_tiny_setup

import rnas
from rnas.data import keyed_generator
from rnas.data.loaders import InMemoryLoader
from rnas.data.readers import ImageTensors
from rnas.engine.early_stopping import robust_accuracy
from rnas.robust.attacks import pgd

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"

EPS, STEP = 8 / 255, 2 / 255


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = write_tiny_setup(tmp_path_factory.mktemp("early"))
    tiny_search_and_derive(root, root / "search", "--limit", 50, "--batch-size", 25)
    return root


def retrain(root, out, *extra):
    return main_in_process("retrain", root / "search" / "arch.json", "--baseline", "ce", "--data-dir", root / "data",
                           "--val-size", 50, "--limit", 100, "--batch-size", 25, "--workers", 0, "--log-every", 0,
                           "--robust-val", 20, "--out", out, *extra)


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def by_hand(model, x, y, key) -> float:
    """PGD-10 at 8/255, step 2/255, with the random start of batch 0 of ``key``: accuracy in %."""
    x_adv = pgd(model, x, y, EPS, STEP, 10, generator=keyed_generator(x.device, *key, 0, 3))
    with torch.no_grad():
        return round(100.0 * (model(x_adv).argmax(1) == y).sum().item() / len(y), 4)


def val_images(root):
    from rnas.data import make_loaders

    (x, y), = make_loaders("cifar10", str(root / "data"), 25, "cpu", val_size=50, workers=0).val.epoch(0)
    return x, y


def test_robust_validation_is_pgd10_on_the_split_and_best_pt_is_its_best_epoch(root, tmp_path):
    run = tmp_path / "run"
    code, err = retrain(root, run, "--epochs", 4)
    assert code == 0, err
    assert "rnas: note: --robust-val 20: best.pt is chosen on all 50 validation images, so its accuracy on them " \
           "is optimistic; report on other images" in err.splitlines()
    history = records(run)
    assert [r["val_robust_n"] for r in history] == [50] * 4  # one validation batch of 50: all of it
    accuracies = [r["val_robust_acc"] for r in history]
    best = max(range(4), key=lambda e: (accuracies[e], -e))  # the first epoch of the highest accuracy
    assert history[-1]["best_epoch"] == best  # the record's own epoch index
    saved = torch.load(run / "best.pt", weights_only=True)
    assert saved["epoch"] == best + 1 and saved["best"] == {"epoch": best + 1, "val_robust_acc": accuracies[best]}
    x, y = val_images(root)
    assert by_hand(rnas.load_model(run / "best.pt"), x, y, (0, best)) == accuracies[best]
    assert by_hand(rnas.load_model(run / "checkpoint.pt"), x, y, (0, 3)) == accuracies[3]
    code, err = main_in_process("eval", run / "best.pt", "--attacks", "clean", "--n", 10)
    assert code == 0, err


def test_a_resumed_run_measures_and_keeps_the_same(root, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    schedule = ("--milestones", 2, 3)  # the 3-epoch run's, given to the 1-epoch run that is extended
    assert retrain(root, whole, "--epochs", 3, *schedule)[0] == 0
    assert retrain(root, parts, "--epochs", 1, *schedule)[0] == 0
    code, err = retrain(root, parts, "--epochs", 3, "--resume", parts)
    assert code == 0, err
    drop = ("seconds", "images_per_s", "cost/total_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in records(parts)] == \
        [{k: v for k, v in r.items() if k not in drop} for r in records(whole)]
    one, other = (torch.load(r / "best.pt", weights_only=True) for r in (whole, parts))
    assert one["epoch"] == other["epoch"] and one["best"] == other["best"]
    assert all(torch.equal(one["model"][k], other["model"][k]) for k in one["model"])


@pytest.mark.parametrize("size,asked,first", [(10, 5, 4), (13, 5, 8), (9, 6, 0), (10, 40, 0)])
def test_the_attacked_images_are_the_fewest_last_whole_batches_holding_n(size, asked, first):
    """Batches of 4: 5 of 10 images -> images 4..9; 5 of 13 -> 8..12; 6 of 9 -> all; more than there are -> all."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (size, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(size) % 3
    loader = InMemoryLoader(ImageTensors(images, labels), 4, "cpu", 0, augment=False, shuffle=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    accuracy, attacked = robust_accuracy(model, loader, asked, EPS, STEP, key=(7, 2))
    x, y = images.to(torch.get_default_dtype()) / 255, labels
    correct = 0
    for i, start in enumerate(range(first, size, 4)):
        part = slice(start, start + 4)
        x_adv = pgd(model, x[part], y[part], EPS, STEP, 10, generator=keyed_generator(x.device, 7, 2, i, 3))
        correct += (model(x_adv).argmax(1) == y[part]).sum().item()
    assert attacked == size - first >= min(asked, size)
    assert accuracy == round(100.0 * correct / attacked, 4)


def test_a_run_stopped_between_its_checkpoint_and_best_pt_gets_it_on_resume(root, tmp_path):
    run = tmp_path / "run"
    assert retrain(root, run, "--epochs", 1)[0] == 0
    (run / "best.pt").unlink()  # as if killed after the epoch's checkpoint, before best.pt was written
    code, err = retrain(root, run, "--epochs", 1, "--resume", run)
    assert code == 0, err
    best, last = (torch.load(run / name, weights_only=True) for name in ("best.pt", "checkpoint.pt"))
    assert best["epoch"] == last["epoch"] == 1 and best["best"] == last["best"]
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert "optimizer" not in best  # a model file, not a resume point


def test_no_validation_split_is_one_line_before_training(root, tmp_path):
    code, err = main_in_process("retrain", root / "search" / "arch.json", "--baseline", "ce", "--data-dir",
                                root / "data", "--val-size", 0, "--limit", 100, "--batch-size", 25, "--epochs", 1,
                                "--robust-val", 20, "--out", tmp_path / "run")
    assert code == 2 and err.strip() == ("rnas: error: --robust-val 20: needs a validation split of known size and "
                                         "batch size (--val-size 0, or a validation loader of unknown length?)"), err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
