"""A dataset is one registry entry: registered in this file (its reader, classes, image side, validation size
and retrain recipe), it is trained as a teacher, searched, derived, retrained with its own recipe and
evaluated on its own test split through the CLI, with no other edit."""
import json

import numpy as np
import pytest
import torch
import yaml
from helpers import main_in_process, write_space

from rnas.data import (
    DATASETS,
    TRAINABLE,
    DatasetInfo,
    ImageTensors,
    Recipe,
    dataset_info,
    register_dataset,
    unregister_dataset,
)
from rnas.errors import UserError

RECIPE = Recipe(epochs=2, batch_size=20, lr=0.05, weight_decay=1e-4, cosine=True)
SEARCH_RECIPE = Recipe(epochs=1, batch_size=20, lr=0.02, weight_decay=3e-4, cosine=True)


def write_stripes(root, n: int, split: str, seed: int) -> None:
    """4 classes: horizontal stripes of period 2, 4, 8 or 16 pixels, plus noise, as uint8 in an .npz."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    rows = np.arange(32)[None, :] // (2 ** (labels[:, None] + 1)) % 2  # (n, 32)
    images = rows[:, None, :, None] * 160 + rng.integers(0, 90, (n, 3, 32, 32))
    np.savez(root / f"stripes_{split}.npz", images=images.astype(np.uint8), labels=labels)


def read_stripes(data_dir, split: str, download: bool) -> ImageTensors:
    root = DATASETS["stripes"].need_dir(data_dir)
    path = root / f"stripes_{split}.npz"
    if not path.is_file():
        raise UserError(f"--data-dir {root}: no {path.name}")
    with np.load(path) as npz:
        return ImageTensors(torch.from_numpy(npz["images"]), torch.from_numpy(npz["labels"]).long())


@pytest.fixture
def stripes(tmp_path):
    info = register_dataset(DatasetInfo("stripes", 4, 32, "Stripes", read_stripes, val_size=40,
                                        test_name="stripes_test.npz",
                                        test_path=lambda root: root / "stripes_test.npz",
                                        data_dir="stripes_{train,test}.npz", recipe=RECIPE,
                                        search_recipe=SEARCH_RECIPE))
    data = tmp_path / "data"
    data.mkdir()
    write_stripes(data, 200, "train", 0)
    write_stripes(data, 30, "test", 1)
    yield info, data
    unregister_dataset("stripes")


def test_a_registered_dataset_runs_every_command_with_its_own_entry(stripes, tmp_path):
    info, data = stripes
    assert "stripes" in TRAINABLE and dataset_info("stripes") is info
    models = tmp_path / "models"
    code, err = main_in_process("teacher", "train", "--data", "stripes", "--data-dir", data, "--arch", "wrn-10-1",
                                "--at", "nfgsm", "--epochs", 1, "--batch-size", 40, "--eval-n", 20,
                                "--out", tmp_path / "teacher", "--model-dir", models)
    assert code == 0, err
    ckpt = models / "stripes" / "Linf" / "wrn-10-1-nfgsm.pt"
    assert torch.load(ckpt, weights_only=True)["state_dict"]["fc.weight"].shape[0] == 4  # the entry's classes

    write_space(tmp_path / "tiny.yaml")
    code, err = main_in_process("search", "--data", "stripes", "--data-dir", data, "--space", tmp_path / "tiny.yaml",
                                "--teacher", "wrn-10-1", "--teacher-ckpt", "wrn-10-1-nfgsm", "--model-dir", models,
                                "--out", tmp_path / "search")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "search" / "config.yaml").read_text())  # the entry's search recipe
    assert (config["epochs"], config["batch_size"], config["lr"], config["weight_decay"], config["cosine"]) == \
        (1, 20, 0.02, 3e-4, True)
    assert main_in_process("derive", tmp_path / "search")[0] == 0
    arch = json.loads((tmp_path / "search" / "arch.json").read_text())
    assert arch["data"] == "stripes" and arch["num_classes"] == 4

    code, err = main_in_process("retrain", tmp_path / "search" / "arch.json", "--data-dir", data,
                                "--out", tmp_path / "retrain")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "retrain" / "config.yaml").read_text())
    assert config["data"] == "stripes"  # from arch.json, and the recipe's defaults with it
    assert (config["epochs"], config["batch_size"], config["lr"], config["weight_decay"], config["cosine"]) == \
        (2, 20, 0.05, 1e-4, True)
    epochs = [json.loads(line) for line in (tmp_path / "retrain" / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if "val_acc" in e] == [0, 1]  # epochs 1 and 2 (0-based)

    out = tmp_path / "eval.json"
    ckpt = tmp_path / "retrain" / "checkpoint.pt"
    code, err = main_in_process("eval", ckpt, "--attacks", "clean,pgd20", "--json", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert (result["data"], result["split"], result["n"]) == ("stripes", "test", 30)
    assert result["split_source"] == "official test split (stripes_test.npz found)"
    code, err = main_in_process("eval", ckpt, "--split", "val", "--attacks", "clean", "--json", out)
    assert code == 0 and json.loads(out.read_text())["n"] == 40  # the entry's validation size
    # AutoAttack on a 4-class model: tests/test_attacks.py (here its cost would hang on whether the 2-epoch
    # model happens to be robust on an image: Square's 5,000 queries run only for the images APGD leaves)


def test_unknown_and_teacher_only_datasets_are_one_line_errors(stripes, tmp_path):
    code, err = main_in_process("search", "--data", "imagenet", "--out", tmp_path / "x")
    assert code == 2 and "--data: invalid choice: 'imagenet'" in err and "stripes" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError, match=r"--data stripes needs --data-dir \(stripes_\{train,test\}\.npz\)"):
        dataset_info("stripes").read(None, "train", False)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DatasetInfo("stripes", 4, 32))


def test_the_built_in_entries():
    assert list(TRAINABLE) == ["cifar10", "cifar100", "imagenet100", "digits"]
    assert [(DATASETS[d].num_classes, DATASETS[d].input_size, DATASETS[d].val_size) for d in DATASETS] == \
        [(10, 32, 5000), (100, 32, 5000), (100, 224, 0), (1000, 224, 0), (10, 32, 297)]
    assert DATASETS["imagenet100"].recipe == Recipe(200, 256, 0.05, 4e-5, True)
    assert DATASETS["imagenet100"].search_recipe == Recipe(100, 256, 0.05, 4e-5, True)  # the paper's search
    assert DATASETS["cifar10"].search_recipe == Recipe(100, 128, 0.1, 2e-4, False)
    assert DATASETS["cifar10"].recipe == Recipe(100, 128, 0.1, 2e-4, False) and DATASETS["imagenet"].read is None
