"""Datasets (images in [0, 1]) and loaders.

In-memory data (CIFAR-10/100 from torchvision's on-disk layout, scikit-learn's digits) lives on the
device as uint8 and is augmented batch-wise on the device (pad-crop + flip). ImageNet-100 is an
ImageFolder restricted to the CMC 100-class list, loaded by a DataLoader with workers.
Data order depends only on (seed, epoch), and each batch's augmentation only on (seed, epoch, step), so
a run resumed at any step sees exactly the batches it would have seen.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .errors import UserError

CIFAR_DIRS = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
              "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels")}
DATASETS = ("cifar10", "cifar100", "imagenet100", "digits")
DEFAULT_VAL_SIZE = {"cifar10": 5000, "cifar100": 5000, "digits": 297, "imagenet100": 0}


@dataclass
class ImageTensors:
    """uint8 images (N, C, H, W) and long labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def slice(self, start: int, stop: int | None) -> ImageTensors:
        return ImageTensors(self.images[start:stop], self.labels[start:stop])


def _read_cifar(root: Path, dataset: str, split: str, download: bool) -> ImageTensors:
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
    images, labels = [], []
    for name in files:
        with open(base / name, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")  # as torchvision: py2 pickles, str keys
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    return ImageTensors(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))


def _read_digits() -> ImageTensors:
    """scikit-learn's bundled 8×8 digits (1,797 images), bilinearly upsampled to 32×32, 3 channels."""
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
    if dataset == "digits":
        if split == "test":
            raise UserError("--data digits has no test split; evaluate on --split val")
        return _read_digits()
    if data_dir is None:
        raise UserError(f"--data {dataset} needs --data-dir (torchvision's on-disk layout)")
    return _read_cifar(Path(data_dir), dataset, split, download)


def split_train_val(data: ImageTensors, val_size: int, limit: int | None) -> tuple[ImageTensors, ImageTensors]:
    """Validation = the last ``val_size`` images; train = the rest, optionally only its first ``limit``."""
    if val_size < 0 or val_size >= len(data):
        raise UserError(f"--val-size {val_size}: must be in [0, {len(data)}) for this dataset ({len(data)} images)")
    train, val = data.slice(0, len(data) - val_size), data.slice(len(data) - val_size, None)
    if limit is not None:
        if limit <= 0:
            raise UserError(f"--limit {limit}: must be positive")
        train = train.slice(0, limit)
    return train, val


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Batched pad-crop (zero padding ``pad``) and horizontal flip of uint8 (B, C, H, W) images."""
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dev = images.device
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
    crops = padded[torch.arange(b, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


def _generator(device: torch.device, *key: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> 1))
    return gen


class InMemoryLoader:
    """Batches of (float images in [0, 1], labels) from uint8 tensors kept on ``device``."""

    def __init__(self, data: ImageTensors, batch_size: int, device, seed: int, augment: bool = True,
                 shuffle: bool = True, pad: int = 4):
        self.device = torch.device(device)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        self.batch_size, self.seed, self.augment, self.shuffle, self.pad = batch_size, seed, augment, shuffle, pad

    def __len__(self) -> int:
        """Steps per epoch (the last, partial batch is dropped when shuffling for training)."""
        n = len(self.labels)
        return n // self.batch_size if self.shuffle and n >= self.batch_size else -(-n // self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0):
        """Yield (x, y) for ``epoch`` from ``start_step`` on."""
        n = len(self.labels)
        order = (torch.randperm(n, generator=_generator(torch.device("cpu"), self.seed, epoch)).to(self.device)
                 if self.shuffle else torch.arange(n, device=self.device))
        for step in range(start_step, len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment:
                x = random_crop_flip(x, self.pad, _generator(self.device, self.seed, epoch, step))
            yield x.float().div_(255), self.labels[idx]


def imagenet100_classes() -> list[str]:
    """The standard 100 ImageNet classes of the CMC paper (Tian et al.), as WordNet ids."""
    return resources.files("rnas.resources").joinpath("imagenet100.txt").read_text().split()


def imagenet100_folder(root: str | Path, split: str):
    """An ImageFolder over ``root/<split>/<wnid>/*`` for the 100 classes; missing folders are an error."""
    import torchvision
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

    class Folder(torchvision.datasets.ImageFolder):
        def find_classes(self, directory):
            return classes, {c: i for i, c in enumerate(classes)}

    try:
        return Folder(str(base), transform=tf)
    except FileNotFoundError as err:
        raise UserError(f"--data-dir {root}: {split}/: {str(err).split('. Supported')[0][:200]}") from None


class FolderLoader:
    """DataLoader over a folder dataset with an epoch-seeded order that can start at any step."""

    def __init__(self, dataset, batch_size: int, device, seed: int, workers: int, shuffle: bool = True):
        self.dataset, self.batch_size, self.device = dataset, batch_size, torch.device(device)
        self.seed, self.workers, self.shuffle = seed, workers, shuffle

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0):
        n = len(self.dataset)
        order = torch.randperm(n, generator=_generator(torch.device("cpu"), self.seed, epoch)) if self.shuffle \
            else torch.arange(n)
        indices = order[start_step * self.batch_size: len(self) * self.batch_size].tolist()
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.dataset, indices), self.batch_size,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                             generator=_generator(torch.device("cpu"), self.seed, epoch, start_step))
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass
class DataBundle:
    train: InMemoryLoader | FolderLoader
    val: InMemoryLoader | FolderLoader | None
    num_classes: int
    input_size: int


def make_loaders(dataset: str, data_dir: str | None, batch_size: int, device, seed: int, val_size: int | None,
                 limit: int | None, workers: int = 2, download: bool = False, eval_batch_size: int = 500) -> DataBundle:
    """Training and validation loaders for a dataset, after every check a user could trip on."""
    if dataset not in DATASETS:
        raise UserError(f"--data {dataset}: unknown dataset (known: {', '.join(DATASETS)})")
    val_size = DEFAULT_VAL_SIZE[dataset] if val_size is None else val_size
    if dataset == "imagenet100":
        if data_dir is None:
            raise UserError("--data imagenet100 needs --data-dir (an ImageFolder root with train/ and val/)")
        train_set = imagenet100_folder(data_dir, "train")
        if limit is not None:
            train_set = torch.utils.data.Subset(train_set, range(min(limit, len(train_set))))
        val_set = imagenet100_folder(data_dir, "val") if (Path(data_dir) / "val").is_dir() else None
        return DataBundle(FolderLoader(train_set, batch_size, device, seed, workers),
                          val_set and FolderLoader(val_set, eval_batch_size, device, seed, workers, shuffle=False),
                          100, 224)
    train, val = split_train_val(load_tensors(dataset, data_dir, "train", download), val_size, limit)
    classes = 100 if dataset == "cifar100" else 10
    val_loader = InMemoryLoader(val, eval_batch_size, device, seed, augment=False, shuffle=False) if len(val) else None
    return DataBundle(InMemoryLoader(train, batch_size, device, seed), val_loader, classes, 32)
