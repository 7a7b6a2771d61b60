"""Data: on-disk CIFAR layout, splits, batched augmentation, ImageNet-100 folders, digits."""
import io
import pickle
import pickletools
import struct

import numpy as np
import pytest
import torch
from helpers import write_cifar10

from rnas.data import (
    InMemoryLoader,
    imagenet100_classes,
    imagenet100_folder,
    load_tensors,
    make_loaders,
    random_crop_flip,
    read_cifar_batch,
    split_train_val,
)
from rnas.errors import UserError


def test_cifar_layout_is_read_exactly(tmp_path):
    write_cifar10(tmp_path, n_per_batch=20)
    data = load_tensors("cifar10", str(tmp_path), "train")
    assert data.images.shape == (100, 3, 32, 32) and data.images.dtype == torch.uint8
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "rb") as fh:
        batch = pickle.load(fh, encoding="latin1")
    assert torch.equal(data.images[20].flatten(), torch.from_numpy(batch["data"][0]))
    assert data.labels[20].item() == batch["labels"][0]


def test_missing_test_split_and_missing_dir_are_one_line_errors(tmp_path):
    write_cifar10(tmp_path, n_per_batch=5)
    with pytest.raises(UserError, match=r"the test split is absent \(no .*test_batch\)"):
        load_tensors("cifar10", str(tmp_path), "test")
    with pytest.raises(UserError, match="no such directory"):
        load_tensors("cifar10", str(tmp_path / "nope"), "train")
    with pytest.raises(UserError, match="cifar100 training data is absent"):
        load_tensors("cifar100", str(tmp_path), "train")


def test_validation_is_carved_from_the_end_and_limit_takes_the_first(tmp_path):
    write_cifar10(tmp_path, n_per_batch=20)
    data = load_tensors("cifar10", str(tmp_path), "train")
    train, val = split_train_val(data, 30, limit=10)
    assert len(train) == 10 and len(val) == 30
    assert torch.equal(val.images, data.images[70:]) and torch.equal(train.images, data.images[:10])
    with pytest.raises(UserError, match=r"--val-size 100: must be in \[0, 100\)"):
        split_train_val(data, 100, None)


def test_batched_crop_flip_matches_per_image_reference():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, 2, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    dy, dx = torch.randint(0, 5, (16,), generator=gen), torch.randint(0, 5, (16,), generator=gen)
    flip = torch.rand(16, generator=gen) < 0.5
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        ref = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], ref.flip(2) if flip[i] else ref)
    assert 0 < flip.sum() < 16


def test_loader_order_depends_only_on_seed_epoch_and_resumes_at_any_step(tmp_path):
    write_cifar10(tmp_path, n_per_batch=20)
    data = load_tensors("cifar10", str(tmp_path), "train")
    loader = InMemoryLoader(data, 16, "cpu", seed=7)
    assert len(loader) == 6  # 100 // 16, partial batch dropped
    full = list(loader.epoch(3))
    tail = list(loader.epoch(3, start_step=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[4:], tail, strict=True))
    other = list(loader.epoch(4))
    assert not torch.equal(full[0][1], other[0][1])
    x = full[0][0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_digits_is_embedded_and_32x32_rgb():
    bundle = make_loaders("digits", None, 64, "cpu", 0)
    assert bundle.num_classes == 10 and bundle.input_size == 32
    x, y = next(bundle.train.epoch(0))
    assert x.shape == (64, 3, 32, 32) and torch.equal(x[:, 0], x[:, 1])
    assert len(bundle.val.labels) == 297 and len(bundle.train.labels) == 1500


def test_imagenet100_folder_lists_missing_classes(tmp_path):
    classes = imagenet100_classes()
    assert len(classes) == 100 == len(set(classes)) and classes[0] == "n02869837"
    for c in classes[:97]:
        (tmp_path / "train" / c).mkdir(parents=True)
    with pytest.raises(UserError, match=f"3 of the ImageNet-100 class folders are missing from train/: {classes[97]}"):
        imagenet100_folder(tmp_path, "train")


def test_imagenet100_folder_reads_images(tmp_path):
    from PIL import Image

    classes = imagenet100_classes()
    for i, c in enumerate(classes):
        folder = tmp_path / "val" / c
        folder.mkdir(parents=True)
        if i:
            Image.new("RGB", (30, 26), (i, 50, 50)).save(folder / "a.JPEG")
    with pytest.raises(UserError, match=f"val/: Found no valid file for the classes {classes[0]}"):
        imagenet100_folder(tmp_path, "val")
    Image.new("RGB", (300, 260), (0, 50, 50)).save(tmp_path / "val" / classes[0] / "a.JPEG")
    (tmp_path / "val" / "n99999999").mkdir()  # an extra class folder is ignored
    dataset = imagenet100_folder(tmp_path, "val")
    assert len(dataset) == 100 and dataset.classes == classes
    x, y = dataset[1]
    assert x.shape == (3, 224, 224) and 0 <= x.min() and x.max() <= 1
    assert y == classes.index(dataset.samples[1][0].split("/")[-2])  # labels follow the CMC list order
    # a spawned or forkserver DataLoader worker receives the dataset pickled
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[1][0], x) and copy[1][1] == y
    batches = torch.utils.data.DataLoader(dataset, batch_size=50, num_workers=1, multiprocessing_context="spawn")
    assert [len(yb) for _, yb in batches] == [50, 50]


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 strings (BINSTRING), as the Toronto CIFAR files hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        size = bytes([len(raw)]) if len(raw) < 256 else struct.pack("<i", len(raw))
        self.write((pickle.SHORT_BINSTRING if len(raw) < 256 else pickle.BINSTRING) + size + raw)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = _save_py2_str


def _globals(raw: bytes) -> set[str]:
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(raw):
        if isinstance(arg, str):
            strings.append(arg)
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
    return found


def test_python2_protocol5_and_bytes_key_batches_are_read(tmp_path):
    """The Toronto files (Python 2, protocol 2, numpy.core names), make_batches.py's protocol 5, and a
    Python 3 re-dump with bytes keys all read back the same pixels and labels."""
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    batch = {"batch_label": "training batch 1 of 5", "labels": [3, 0, 9, 1], "data": data, "filenames": ["a.png"] * 4}
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(batch)
    py2 = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert _globals(py2) == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}
    proto5 = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    assert _globals(proto5) == {"numpy._core.numeric._frombuffer", "numpy.dtype"}
    bytes_keys = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=2)
    for i, raw in enumerate((py2, proto5, bytes_keys)):
        (tmp_path / f"b{i}").write_bytes(raw)
        images, labels = read_cifar_batch(tmp_path / f"b{i}")
        assert images.dtype == np.uint8 and images.shape == (4, 3, 32, 32)
        assert np.array_equal(images.reshape(4, 3072), data) and labels.tolist() == [3, 0, 9, 1]
