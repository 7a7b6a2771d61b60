"""The built-in datasets' readers (images in [0, 1] as uint8 tensors, or an ImageFolder), each registered with
the dataset registry at the end of this file.

CIFAR-10/100 are read from torchvision's on-disk layout, scikit-learn's digits from its bundled copy,
ImageNet-100 as an ImageFolder restricted to the CMC 100-class list.
CIFAR pickles are read here rather than by torchvision.datasets.CIFAR10/100, which unpickles with the
plain pickle module (a batch file could run code), refuses a training split whose test batch is absent
or whose bytes differ from the published ones (its md5 check), and reports every problem as "Dataset not
found or corrupted". This unpickler admits only numpy's array globals and checks every field, so a bad
file is one line naming it and the problem; torchvision's class is used to download.
"""
from __future__ import annotations

import codecs
import functools
import importlib
import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from rnas.data.registry import DatasetInfo, Recipe, dataset_info, register_dataset
from rnas.errors import UserError

CIFAR_DIRS = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
              "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels")}


@dataclass
class ImageTensors:
    """uint8 images (N, C, H, W) and long labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def slice(self, start: int, stop: int | None) -> ImageTensors:
        return ImageTensors(self.images[start:stop], self.labels[start:stop])


_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
# everything a CIFAR batch pickle refers to: ndarrays as numpy writes them (protocol 2 in Python 2 and 3,
# protocols 3-4, protocol 5's _frombuffer), numpy scalars, and bytes as Python 3 writes them in protocol <= 2
_CORE_GLOBALS = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, lists, str/bytes, numbers and numpy arrays: no other global."""

    def __init__(self, fh, path: Path):
        super().__init__(fh, encoding="latin1")  # as torchvision: Python 2 pickles, str keys
        self.path = path

    def find_class(self, module: str, name: str):
        core = module.split(".")
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if len(core) == 3 and core[:2] in (["numpy", "core"], ["numpy", "_core"]) and (core[2], name) in _CORE_GLOBALS:
            return getattr(importlib.import_module(f"{_NUMPY_CORE}.{core[2]}"), name)
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        raise UserError(f"{self.path}: refused: the pickle asks for the forbidden global {module}.{name} "
                        f"(a CIFAR batch holds only dicts, lists, strings and numpy arrays)")


def _unpickle(path: Path):
    try:
        with open(path, "rb") as fh:
            if not os.fstat(fh.fileno()).st_size:
                raise UserError(f"{path}: empty file (0 bytes)")
            return _BatchUnpickler(fh, path).load()
    except UserError:
        raise
    except OSError as err:
        raise UserError(f"{path}: unreadable ({err.strerror or err})") from None
    except Exception as err:  # noqa: BLE001 - a corrupt pickle can fail in any of a dozen ways
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
        raise UserError(f"{path}: truncated or not a pickle ({detail})") from None


def _integers(value, path: Path, key: str, what: str) -> np.ndarray:
    """``value`` as an integer ndarray; anything else is a one-line error."""
    try:
        arr = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or not (arr.dtype.kind in "iu" or (arr.size == 0 and arr.dtype.kind == "f")):
        kind = f"a {arr.dtype} array" if arr is not None else f"a {type(value).__name__}"
        raise UserError(f"{path}: '{key}' is {kind}, expected {what}")
    return arr.astype(np.int64) if arr.size == 0 else arr


def read_cifar_batch(path: Path, label_key: str = "labels", classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 3, 32, 32), int64 labels (N,)) of one CIFAR pickle, every field checked."""
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise UserError(f"{path}: a pickled {type(batch).__name__}, not a CIFAR batch (a dict with "
                        f"'data' and '{label_key}')")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    for key in ("data", label_key):
        if key not in batch:
            raise UserError(f"{path}: no '{key}' entry (keys: {', '.join(map(str, batch)) or 'none'})")
    data = _integers(batch["data"], path, "data", "a uint8 array of N x 3072 pixels")
    labels = _integers(batch[label_key], path, label_key, "a list of integers")
    if data.ndim == 1 and data.size % 3072:
        raise UserError(f"{path}: 'data' holds {data.size} values, not a multiple of 3072 (3x32x32 per image)")
    if data.ndim != 1 and (data.ndim < 2 or int(np.prod(data.shape[1:])) != 3072):
        raise UserError(f"{path}: 'data' has shape {tuple(data.shape)}, expected (N, 3072)")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise UserError(f"{path}: 'data' values outside [0, 255]")
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{path}: {len(images)} images but {labels.size} {label_key}")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(bad):
        raise UserError(f"{path}: {label_key} outside [0, {classes}) (found {labels[bad[0]]} at index {bad[0]})")
    return images, labels.astype(np.int64)


def _read_cifar(dataset: str, data_dir, split: str, download: bool) -> ImageTensors:
    root = dataset_info(dataset).need_dir(data_dir)
    folder, train_files, test_file, label_key = CIFAR_DIRS[dataset]
    base = root / folder
    if download and not base.is_dir():
        import torchvision

        cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    if not root.is_dir():
        raise UserError(f"--data-dir {root}: no such directory")
    files = train_files if split == "train" else [test_file]
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        what = "the test split" if split == "test" else f"{dataset} training data"
        raise UserError(f"--data-dir {root}: {what} is absent (no {base / missing[0]}); "
                        f"torchvision's layout is expected{'' if download else ', or pass --download'}")
    batches = [read_cifar_batch(base / name, label_key, dataset_info(dataset).num_classes) for name in files]
    return ImageTensors(torch.from_numpy(np.concatenate([b[0] for b in batches])),
                        torch.from_numpy(np.concatenate([b[1] for b in batches])))


def _read_digits(data_dir, split: str, download: bool) -> ImageTensors:
    """scikit-learn's bundled 8×8 digits (1,797 images), bilinearly upsampled to 32×32, 3 channels."""
    if split == "test":
        raise UserError("--data digits has no test split; evaluate on --split val")
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    images = (big * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    # a fixed shuffle: the file is sorted by writer, so a tail split would not be representative
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1797))
    return ImageTensors(images[order], torch.tensor(digits.target, dtype=torch.long)[order])


def load_tensors(dataset: str, data_dir: str | None, split: str, download: bool = False) -> ImageTensors:
    """All images of ``split`` ('train' or 'test') of an in-memory dataset."""
    images = dataset_info(dataset, trainable=True).read(data_dir, split, download)
    if not isinstance(images, ImageTensors):
        raise UserError(f"--data {dataset}: a folder dataset, not held in memory")
    return images


def imagenet100_classes() -> list[str]:
    """The standard 100 ImageNet classes of the CMC paper (Tian et al.), as WordNet ids."""
    return resources.files("rnas.resources").joinpath("imagenet100.txt").read_text().split()


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k classes as WordNet ids in label order (sorted, as ImageFolder and the `robustness`
    library number them)."""
    return resources.files("rnas.resources").joinpath("imagenet1k.txt").read_text().split()


def imagenet100_folder(root: str | Path, split: str) -> ClassListFolder:
    """The images of ``root/<split>/<wnid>/*`` for the 100 classes (labels in the list's order); missing folders
    are an error."""
    from torchvision import transforms

    base = Path(root) / split
    if not base.is_dir():
        raise UserError(f"--data-dir {root}: no {split}/ folder (ImageFolder layout root/{split}/<wnid>/*.JPEG)")
    classes = imagenet100_classes()
    missing = [c for c in classes if not (base / c).is_dir()]
    if missing:
        raise UserError(f"--data-dir {root}: {len(missing)} of the ImageNet-100 class folders are missing "
                        f"from {split}/: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if split == "train":
        tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor()])
    else:
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    try:
        return ClassListFolder(base, classes, tf)
    except FileNotFoundError as err:
        raise UserError(f"--data-dir {root}: {split}/: {str(err).split('. Supported')[0][:200]}") from None


class ClassListFolder(torch.utils.data.Dataset):
    """torchvision's ImageFolder restricted to (and labelled in the order of) a list of class folders. A
    module-level class, so DataLoader workers started by spawn or forkserver (macOS; Linux from Python 3.14)
    can unpickle it."""

    def __init__(self, root: Path, classes: list[str], transform):
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

        self.classes, self.transform = list(classes), transform
        self.samples = make_dataset(str(root), {c: i for i, c in enumerate(self.classes)}, IMG_EXTENSIONS)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[index]
        return self.transform(default_loader(path)), label


def _read_imagenet100(data_dir, split: str, download: bool):
    """The train/ folder, or val/ (ImageNet-100's held-out split) for 'test'."""
    return imagenet100_folder(dataset_info("imagenet100").need_dir(data_dir), "val" if split == "test" else split)


def _cifar(name: str, title: str, classes: int) -> DatasetInfo:
    folder, _, test_file, _ = CIFAR_DIRS[name]
    return DatasetInfo(name, classes, 32, title, functools.partial(_read_cifar, name), val_size=5000,
                       test_name=test_file, test_path=lambda root: root / folder / test_file)


register_dataset(_cifar("cifar10", "CIFAR-10", 10))
register_dataset(_cifar("cifar100", "CIFAR-100", 100))
register_dataset(DatasetInfo("imagenet100", 100, 224, "ImageNet-100", _read_imagenet100,
                             val_size=0, test_name="val/ folder", test_path=lambda root: root / "val",
                             held_out_val=True, data_dir="an ImageFolder root with train/ and val/",
                             recipe=Recipe(epochs=200, batch_size=256, lr=0.05, weight_decay=4e-5, cosine=True),
                             search_recipe=Recipe(epochs=100, batch_size=256, lr=0.05, weight_decay=4e-5, cosine=True),
                             classes=imagenet100_classes))
# the 1000 classes of the robust ImageNet teachers' checkpoints (the `robustness` library's): no reader here
register_dataset(DatasetInfo("imagenet", 1000, 224, "ImageNet-1k", val_size=0, data_dir="an ImageFolder root",
                             recipe=Recipe(epochs=200, batch_size=256, lr=0.05, weight_decay=4e-5, cosine=True),
                             classes=imagenet_classes))
register_dataset(DatasetInfo("digits", 10, 32, "scikit-learn's digits", _read_digits,
                             val_size=297, data_dir=None))
