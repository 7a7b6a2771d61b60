"""Training and validation loaders over the registered datasets.

In-memory data (CIFAR, digits) lives on the device as uint8 and is augmented batch-wise on the device
(pad-crop + flip); folder datasets (ImageNet-100) are read by a DataLoader with workers.
Data order depends only on (seed, epoch), and each batch's augmentation only on (seed, epoch, step), so
a run resumed at any step sees exactly the batches it would have seen.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from rnas.data.readers import ImageTensors
from rnas.data.registry import dataset_info
from rnas.data.splits import HeldOut, carve, held_out
from rnas.errors import UserError
from rnas.runtime.distributed import SINGLE, Dist


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


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator,
                     keep: torch.Tensor | None = None) -> torch.Tensor:
    """Batched pad-crop (zero padding ``pad``) and horizontal flip of uint8 (B, C, H, W) images. With
    ``keep`` (positions), only those images are augmented and returned, with the offsets and flips they
    get in the whole batch (a rank's share of a global batch is augmented as in one process)."""
    b, dev = images.shape[0], images.device
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    if keep is not None:
        images, dy, dx, flip = images[keep], dy[keep], dx[keep], flip[keep]
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
    crops = padded[torch.arange(b, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


def keyed_generator(device: torch.device, *key: int) -> torch.Generator:
    """A generator whose stream is a function of ``key`` alone (e.g. (seed, epoch, step))."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derived_seed(*key))
    return gen


class Sharded:
    """A loader's place in a ``torchrun`` job: every rank walks the same global batches (``batch_size`` is
    the global batch) and keeps ``dist.positions(parts(len(batch)))`` of each, i.e. its share of every part
    of the batch (one part by default; the search's weight and arch parts)."""

    dist = SINGLE
    parts = staticmethod(lambda n: [n])

    def shard(self, dist: Dist, parts=None):
        self.dist = dist
        if parts is not None:
            self.parts = parts
        return self

    def keep(self, n: int) -> torch.Tensor | None:
        """Positions of this rank's samples in a global batch of ``n`` (None: all of them)."""
        return self.dist.positions(self.parts(n)) if self.dist.enabled else None


class InMemoryLoader(Sharded):
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
        order = (torch.randperm(n, generator=keyed_generator(torch.device("cpu"), self.seed, epoch)).to(self.device)
                 if self.shuffle else torch.arange(n, device=self.device))
        for step in range(start_step, len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            keep = self.keep(len(idx))
            keep = None if keep is None else keep.to(self.device)
            if self.augment:  # augmentation is drawn for the whole global batch, then this rank's share kept
                x = random_crop_flip(self.images[idx], self.pad, keyed_generator(self.device, self.seed, epoch, step),
                                     keep)
            idx = idx if keep is None else idx[keep]
            if not self.augment:
                x = self.images[idx]
            yield x.to(torch.get_default_dtype()).div_(255), self.labels[idx]


def derived_seed(*key: int) -> int:
    """A 63-bit seed that is a function of ``key`` alone (``keyed_generator``'s streams start from it)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> 1)


class SeededSamples(torch.utils.data.Dataset):
    """``dataset`` in ``epoch``: sample ``i`` is read (so transformed) with torch's CPU generator and Python's
    ``random`` seeded from (seed, epoch, i), and both restored after. Its random crop and flip are then the
    same whichever process reads it, however many DataLoader workers there are and wherever the epoch
    started (torchvision's transforms draw from those two; a transform drawing from NumPy's global RNG is
    not covered). Any Dataset, a ``Subset`` included: ``i`` is the position in ``dataset``."""

    def __init__(self, dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = derived_seed(self.seed, self.epoch, index)
        torch_state, python_state = torch.default_generator.get_state(), random.getstate()
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would also queue a CUDA seeding
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.default_generator.set_state(torch_state)
            random.setstate(python_state)


class FolderLoader(Sharded):
    """DataLoader over a folder dataset with an epoch-seeded order that can start at any step; each sample's
    augmentation is a function of (seed, epoch, sample) alone (``SeededSamples``)."""

    def __init__(self, dataset, batch_size: int, device, seed: int, workers: int, shuffle: bool = True):
        self.dataset, self.batch_size, self.device = dataset, batch_size, torch.device(device)
        self.seed, self.workers, self.shuffle = seed, workers, shuffle

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0):
        n = len(self.dataset)
        epoch_stream = keyed_generator(torch.device("cpu"), self.seed, epoch)
        order = torch.randperm(n, generator=epoch_stream) if self.shuffle else torch.arange(n)
        batches = [order[s * self.batch_size:(s + 1) * self.batch_size] for s in range(start_step, len(self))]
        batches = [(b if (keep := self.keep(len(b))) is None else b[keep]).tolist()
                   for b in batches]
        # the workers' base seed is drawn from the epoch's stream too, not from this process's global RNG
        loader = torch.utils.data.DataLoader(SeededSamples(self.dataset, self.seed, epoch), batch_sampler=batches,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                             generator=epoch_stream)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class IterableLoader(Sharded):
    """Any iterable of (images in [0, 1], labels) batches, e.g. a ``torch.utils.data.DataLoader``, in the
    engine's loader interface. ``epoch(e, start)`` calls the sampler's ``set_epoch(e)`` when it has one
    and skips the first ``start`` batches, so a resumed run continues at the right step; the order is the
    iterable's own, so a resume is exact only when that order is a function of the epoch (a seeded
    sampler). Under ``torchrun`` every rank reads the global batch and keeps its share."""

    def __init__(self, batches, device="cpu", batch_size: int | None = None):
        self.batches, self.device = batches, torch.device(device)
        self.batch_size = batch_size or getattr(batches, "batch_size", None)

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int, start_step: int = 0):
        sampler = getattr(self.batches, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(self.batches):
            if step < start_step:
                continue
            keep = self.keep(len(y))
            if keep is not None:
                x, y = x[keep], y[keep]
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass
class DataBundle:
    """A run's data: training and validation loaders (``.epoch(e, start)`` yields (x in [0, 1], y) on the
    device), number of classes and image side."""

    train: InMemoryLoader | FolderLoader | IterableLoader
    val: InMemoryLoader | FolderLoader | IterableLoader | None
    num_classes: int
    input_size: int

    @classmethod
    def from_loaders(cls, train, val=None, *, num_classes: int, input_size: int, device="cpu") -> DataBundle:
        """A bundle of your own DataLoaders (or any iterables of (x, y) batches, images in [0, 1])."""
        return cls(IterableLoader(train, device), None if val is None else IterableLoader(val, device),
                   num_classes, input_size)

    def shard(self, dist: Dist, train_parts=None) -> DataBundle:
        """Each loader keeps this rank's share of every batch (``train_parts``: the parts of a training batch)."""
        self.train.shard(dist, train_parts)
        if self.val is not None:
            self.val.shard(dist)
        return self


def _check_batch(batch_size: int, n_train: int) -> None:
    if batch_size > n_train:
        raise UserError(f"--batch-size {batch_size}: larger than the {n_train} training images (after --val-size "
                        "and --limit)")


def make_loaders(dataset: str, data_dir: str | None, batch_size: int, device, seed: int = 0, *,
                 val_size: int | None = None, limit: int | None = None, workers: int = 2, download: bool = False,
                 eval_batch_size: int = 500, splits: HeldOut | None = None) -> DataBundle:
    """Training and validation loaders for a registered dataset, after every check a user could trip on.
    ``splits``: validation is the select split of --val-select / --val-report (the report split is left out of
    both loaders), else the last ``val_size`` training images."""
    info = dataset_info(dataset, trainable=True)
    train = info.read(data_dir, "train", download)
    if splits is not None and not isinstance(train, ImageTensors):
        raise UserError(f"--val-select / --val-report: {dataset} validates on its own held-out split; they carve "
                        "datasets kept in memory (cifar10, cifar100, digits)")
    if isinstance(train, ImageTensors):
        if splits is not None:
            parts = carve(train, splits, limit)
            train, val = parts["train"], parts["select"]
        else:
            train, val = split_train_val(train, info.validation_size(val_size), limit)
        _check_batch(batch_size, len(train))
        val_loader = InMemoryLoader(val, eval_batch_size, device, seed, augment=False, shuffle=False) \
            if len(val) else None
        return DataBundle(InMemoryLoader(train, batch_size, device, seed), val_loader, info.num_classes,
                          info.input_size)
    if limit is not None:
        train = torch.utils.data.Subset(train, range(min(limit, len(train))))
    val = info.read(data_dir, "test", False) if info.has_test(data_dir) else None
    _check_batch(batch_size, len(train))
    return DataBundle(FolderLoader(train, batch_size, device, seed, workers),
                      val and FolderLoader(val, eval_batch_size, device, seed, workers, shuffle=False),
                      info.num_classes, info.input_size)




def loaders_for(cfg, device) -> DataBundle:
    """``make_loaders`` for a training command's config (its data section: data, data_dir, batch_size, seed,
    val_size or val_select / val_report / split_seed, limit, workers, download)."""
    return make_loaders(cfg.data, cfg.data_dir, cfg.batch_size, device, cfg.seed, val_size=cfg.val_size,
                        limit=cfg.limit, workers=cfg.workers, download=cfg.download, splits=held_out(cfg))
