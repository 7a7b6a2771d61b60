"""Teachers trained on more classes than the data has: a 1000-class ImageNet checkpoint (the `robustness`
library's layout) serving ImageNet-100, its logits picked by WordNet id in the data's label order."""
import collections
import json
import math

import pytest
import torch
from conftest import randomize_batchnorm
from helpers import main_in_process

from rnas.data import DatasetInfo, imagenet100_classes, imagenet_classes, register_dataset, unregister_dataset
from rnas.errors import UserError
from rnas.teachers import load_teacher

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
ROBIN, ROBIN_LABEL = 15, 26  # n01558993: ImageNet-1k output 15, ImageNet-100 label 26, its first class by wnid
TOILET_TISSUE = 999  # n15075141: not an ImageNet-100 class


@pytest.fixture(scope="module")
def imagenet100_root(tmp_path_factory):
    """ImageFolder root with train/ and val/: two 32x32 PNGs per ImageNet-100 class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet100")
    for split in ("train", "val"):
        for label, wnid in enumerate(imagenet100_classes()):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (label * 2, 60 + 90 * i, 200 - label)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def robust_r18(tmp_path_factory):
    """(net, path): a 1000-class ResNet-18 saved as the `robustness` library saves it. Its biases make it
    always predict toilet tissue among all 1000 classes, and robin (label 26) among ImageNet-100's."""
    import torchvision

    torch.manual_seed(0)
    net = randomize_batchnorm(torchvision.models.resnet18(num_classes=1000)).eval()
    with torch.no_grad():
        net.fc.weight.mul_(0.01)
        net.fc.bias.zero_()
        net.fc.bias[ROBIN], net.fc.bias[TOILET_TISSUE] = 8.0, 16.0
    state = collections.OrderedDict()
    state["module.normalizer.new_mean"], state["module.normalizer.new_std"] = MEAN.view(3, 1, 1), STD.view(3, 1, 1)
    for key, value in net.state_dict().items():
        state[f"module.model.{key}"] = value
        state[f"module.attacker.model.{key}"] = value
    state["module.attacker.normalize.new_mean"] = MEAN.view(3, 1, 1)
    path = tmp_path_factory.mktemp("models") / "imagenet_linf_4.pt"
    torch.save({"model": state, "optimizer": {}, "schedule": None, "epoch": 90}, path)
    return net, path


def test_imagenet1k_list_is_the_sorted_label_order_and_covers_imagenet100():
    wnids = imagenet_classes()
    assert len(wnids) == 1000 == len(set(wnids)) and wnids == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[999] == "n15075141"
    assert set(imagenet100_classes()) <= set(wnids)


def test_1000_class_checkpoint_gives_the_imagenet100_logits(robust_r18):
    net, path = robust_r18
    teacher = load_teacher("r18", path, dataset="imagenet100")
    full = load_teacher("r18", path, dataset="imagenet100", num_classes=1000)  # explicit: every output, as before
    wnids, cmc = imagenet_classes(), imagenet100_classes()
    index = teacher.class_index.tolist()
    assert teacher.class_subset == "imagenet" and "class_subset='imagenet'" in repr(teacher)
    assert index == [wnids.index(c) for c in cmc] and index[:3] == [452, 64, 374]  # n02869837, n01749939, n02488291
    assert full.class_index is None and full.class_subset is None
    x = torch.rand(3, 3, 64, 64)
    logits, all_logits = teacher(x), full(x)
    assert logits.shape == (3, 100) and all_logits.shape == (3, 1000)
    assert torch.equal(logits, all_logits[:, index])
    assert torch.equal(all_logits, net((x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)))
    assert all_logits.argmax(1).tolist() == [TOILET_TISSUE] * 3 and logits.argmax(1).tolist() == [ROBIN_LABEL] * 3


def test_subset_follows_the_student_label_order(robust_r18):
    cmc = imagenet100_classes()
    register_dataset(DatasetInfo("imagenet3", 3, 224, "three ImageNet classes (test)",
                                 classes=lambda: [cmc[2], "n01440764", cmc[0]]))
    try:
        teacher = load_teacher("r18", robust_r18[1], dataset="imagenet3")
    finally:
        unregister_dataset("imagenet3")
    assert teacher.class_index.tolist() == [374, 0, 452] and teacher(torch.rand(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("names, expected", [
    (["n02869837", "n99999999", "n01440764"], "imagenet4's class n99999999 is not a class of imagenet "
                                              "(datasets tried: imagenet)"),
    (None, "imagenet4 registers no class names")])
def test_classes_the_checkpoint_lacks_are_one_line(robust_r18, names, expected):
    register_dataset(DatasetInfo("imagenet4", 3, 224, "test classes", classes=names and (lambda: names)))
    try:
        with pytest.raises(UserError) as info:
            load_teacher("r18", robust_r18[1], dataset="imagenet4")
    finally:
        unregister_dataset("imagenet4")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{robust_r18[1]}: the classifier of r18 has 1000 outputs")
    assert expected in message


@pytest.mark.slow  # a CLI run
def test_eval_of_the_teacher_reports_imagenet100_accuracy(robust_r18, imagenet100_root, tmp_path):
    out = tmp_path / "eval.json"
    code, err = main_in_process("eval", robust_r18[1], "--teacher-arch", "r18", "--data", "imagenet100",
                                "--data-dir", imagenet100_root, "--attacks", "clean", "--n", 4, "--json", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    # ImageFolder lists the images by wnid: the first 4 are two robins (label 26) and two Gila monsters (36), and
    # the teacher always says robin: 50 %. The first 100 outputs (robin = 15) or the CMC ids sorted (0) score 0
    assert result["n"] == 4 and [(r["attack"], r["accuracy"]) for r in result["results"]] == [("clean", 50.0)]


@pytest.mark.slow  # a CLI run
def test_search_distils_from_the_1000_class_teacher(robust_r18, imagenet100_root, tmp_path):
    train_only = tmp_path / "data"  # no val/: no validation pass over 200 images
    train_only.mkdir()
    (train_only / "train").symlink_to(imagenet100_root / "train")
    run = tmp_path / "search"
    code, err = main_in_process("search", "--space", "is", "--data", "imagenet100", "--data-dir", train_only,
                                "--teacher", "r18", "--teacher-ckpt", robust_r18[1], "--limit", 4, "--batch-size", 2,
                                "--epochs", 1, "--workers", 0, "--out", run)
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(r[key]) and r[key] > 0 for r in records for key in ("weight/kl", "arch/kl"))
