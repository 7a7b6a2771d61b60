"""Exact resume on folder data: each sample's augmentation (random-resized crop, flip) is a function of
(seed, epoch, sample) alone, so an epoch's batches do not depend on the number of DataLoader workers nor
on the step the epoch starts at, and an ImageFolder search killed with SIGKILL resumes bit-identical."""
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import wait_for, write_space
from torchvision import transforms
from torchvision.datasets import ImageFolder

from rnas.data import DATASETS, DatasetInfo, FolderLoader, SeededSamples, register_dataset

FOLDER = "tinyfolder"
CLASSES = 4
TRAIN_TRANSFORM = transforms.Compose([transforms.RandomResizedCrop(32, scale=(0.3, 1.0)),
                                      transforms.RandomHorizontalFlip(), transforms.ToTensor()])
EVAL_TRANSFORM = transforms.Compose([transforms.CenterCrop(32), transforms.ToTensor()])
WALL_CLOCK = ("seconds", "images_per_s", "cost/total_seconds")


def write_folder(root: Path, per_class: int, seed: int) -> Path:
    """ImageFolder layout root/c<k>/<i>.png: 40x40 PNGs of a class colour plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in range(CLASSES):
        folder = root / f"c{label}"
        folder.mkdir(parents=True)
        colour = np.array([60 * label, 255 - 60 * label, 128])
        for i in range(per_class):
            pixels = np.clip(colour + rng.integers(-50, 50, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def read_folder(data_dir, split: str, download: bool) -> ImageFolder:
    """train/ with random-resized crops and flips; val/ (the held-out split, read for 'test') center-cropped."""
    root = DATASETS[FOLDER].need_dir(data_dir)
    if split == "train":
        return ImageFolder(str(root / "train"), transform=TRAIN_TRANSFORM)
    return ImageFolder(str(root / "val"), transform=EVAL_TRANSFORM)


def register_folder_dataset() -> DatasetInfo:
    """What the launcher does in the `rnas` subprocess before running the CLI."""
    return register_dataset(DatasetInfo(FOLDER, CLASSES, 32, "Tiny folder", read_folder, val_size=0,
                                        test_name="val/ folder", test_path=lambda root: root / "val",
                                        held_out_val=True, data_dir="an ImageFolder root with train/ and val/"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    write_folder(root / "train", 16, seed=0)
    write_folder(root / "val", 3, seed=1)
    return root


def epoch_batches(dataset, workers: int, start_step: int = 0, epoch: int = 1, shuffle: bool = True) -> list:
    loader = FolderLoader(dataset, 6, "cpu", seed=3, workers=workers, shuffle=shuffle)
    return list(loader.epoch(epoch, start_step))


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_an_epoch_is_the_same_with_any_workers_and_from_any_step(data_root):
    train = ImageFolder(str(data_root / "train"), transform=TRAIN_TRANSFORM)
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    full = epoch_batches(train, workers=0)
    assert len(full) == 10  # 64 images, batches of 6
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state  # untouched
    for workers in (1, 2):
        assert_same_batches(epoch_batches(train, workers), full)
    assert_same_batches(epoch_batches(train, workers=2, start_step=4), full[4:])
    assert_same_batches(epoch_batches(train, workers=1, start_step=9), full[9:])


def test_a_sample_is_augmented_anew_each_epoch_and_alike_in_a_subset(data_root):
    train = ImageFolder(str(data_root / "train"), transform=TRAIN_TRANSFORM)
    epoch1, epoch2 = SeededSamples(train, 3, 1), SeededSamples(train, 3, 2)
    assert torch.equal(epoch1[5][0], epoch1[5][0])
    assert not torch.equal(epoch1[5][0], epoch2[5][0])
    subset = torch.utils.data.Subset(train, range(20))  # what --limit 20 reads
    in_subset = SeededSamples(subset, 3, 1)
    assert all(torch.equal(in_subset[i][0], epoch1[i][0]) for i in range(20))
    assert_same_batches(epoch_batches(subset, workers=2, start_step=1), epoch_batches(subset, workers=0)[1:])


def test_validation_batches_are_the_plain_images_in_order(data_root):
    val = ImageFolder(str(data_root / "val"), transform=EVAL_TRANSFORM)
    batches = epoch_batches(val, workers=2, epoch=0, shuffle=False)
    assert torch.equal(torch.cat([x for x, _ in batches]), torch.stack([val[i][0] for i in range(len(val))]))
    assert torch.cat([y for _, y in batches]).tolist() == val.targets


LAUNCHER = """import sys
sys.path.insert(0, {tests!r})
from test_folder_resume import register_folder_dataset
from rnas.cli import main
register_folder_dataset()
sys.exit(main(sys.argv[1:]))
"""


def launcher_cmd(tmp_path: Path, *args) -> list[str]:
    """`rnas ARGS` in a fresh interpreter that has the test's folder dataset registered."""
    launcher = tmp_path / "launcher.py"
    if not launcher.exists():
        launcher.write_text(LAUNCHER.format(tests=str(Path(__file__).parent)))
    return [sys.executable, str(launcher), *map(str, args)]


def search_args(data_root: Path, space: Path, out: Path) -> list:
    """8 steps per epoch (64 images, batches of 8), a checkpoint after each, 2 DataLoader workers."""
    return ["search", "--data", FOLDER, "--data-dir", data_root, "--space", space, "--teacher", "wrn-10-1",
            "--random-teacher", "--batch-size", 8, "--epochs", 2, "--workers", 2, "--checkpoint-every", 1,
            "--arch-lr", 0.05, "--seed", 5, "--out", out]


def run_launcher(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONHASHSEED="0"))
    assert result.returncode == 0, result.stderr


def checkpoint_place(run: Path) -> tuple[int, int]:
    """(epoch, step) of the run's checkpoint; (-1, -1) before the first one is written."""
    try:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
    except (OSError, RuntimeError, EOFError):  # not there yet (it is replaced atomically)
        return -1, -1
    return state["epoch"], state["step"]


def kill_mid_epoch(cmd: list[str], run: Path) -> None:
    """Start ``cmd`` and SIGKILL it once a checkpoint at step 2 or later of the first epoch is on disk."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONHASHSEED="0"))
    try:
        assert wait_for(lambda: checkpoint_place(run) >= (0, 2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL


def metrics_without_wall_clock(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k not in WALL_CLOCK} for record in records]


def assert_same_final_state(a: Path, b: Path) -> None:
    sa, sb = (torch.load(run / "checkpoint.pt", weights_only=True) for run in (a, b))
    assert (sa["epoch"], sa["step"]) == (sb["epoch"], sb["step"]) == (2, 0)
    assert sa["supernet"].keys() == sb["supernet"].keys()
    for key in sa["supernet"]:
        assert torch.equal(sa["supernet"][key], sb["supernet"][key]), key
    assert torch.equal(sa["tutor"]["tutor_logits"], sb["tutor"]["tutor_logits"])
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])


@pytest.mark.slow
def test_a_killed_folder_search_resumes_bit_identical(data_root, tmp_path):
    """SIGKILL in the middle of epoch 1 of an ImageFolder search read by 2 workers, then --resume (with 1
    worker): the final weights, logits, RNG state and metrics equal an uninterrupted run's."""
    space = write_space(tmp_path / "tiny.yaml")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run_launcher(launcher_cmd(tmp_path, *search_args(data_root, space, reference)))
    kill_mid_epoch(launcher_cmd(tmp_path, *search_args(data_root, space, killed)), killed)
    epoch, step = checkpoint_place(killed)
    assert epoch in (0, 1) and 0 < step < 8, (epoch, step)  # the resume starts in the middle of an epoch
    # at once: the killed run's orphaned DataLoader workers do not hold its lock (RunLock is a POSIX lock)
    run_launcher(launcher_cmd(tmp_path, "search", "--resume", killed, "--workers", 1))
    assert_same_final_state(reference, killed)
    assert metrics_without_wall_clock(killed) == metrics_without_wall_clock(reference)
    assert [record["epoch"] for record in metrics_without_wall_clock(killed)] == [0, 1]
