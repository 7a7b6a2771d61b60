"""Two disjoint held-out splits carved from a training set: ``--val-select N`` (what a run or a study chooses
on: search validation, ``--robust-val``, every setting picked) and ``--val-report M`` (what the final
``rnas eval`` reports on, and nothing before it), drawn by ``--split-seed`` from the last ``--split-pool``
training images (default: all; e.g. the images a teacher did not train on).

The carving is a permutation of the pool's positions drawn from the split seed alone: its first N positions are
the select split, the next M the report split, the rest of the file (in file order) the training set, so
every run with the same (N, M, seed) sees the same three sets, whatever else it does. Without the two flags a
run validates on the last ``--val-size`` images as before (``rnas.data.loaders.split_train_val``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rnas.data.readers import ImageTensors
from rnas.errors import UserError

SPLITS = ("select", "report")  # the held-out splits of --val-select / --val-report


@dataclass(frozen=True)
class HeldOut:
    """A run's held-out splits: select and report sizes and the seed that draws them."""

    select: int
    report: int
    seed: int = 0
    pool: int | None = None  # drawn from the last ``pool`` training images only (None: from all of them)

    def positions(self, total: int) -> dict[str, torch.Tensor]:
        """{train, select, report}: sorted positions of each set in a training file of ``total`` images."""
        if self.select < 0 or self.report < 0:
            raise UserError(f"--val-select {self.select} / --val-report {self.report}: must be >= 0")
        pool = total if self.pool is None else self.pool
        if pool > total:
            raise UserError(f"--split-pool {pool}: this dataset has {total} training images")
        if self.select + self.report >= total or self.select + self.report > pool:
            raise UserError(f"--val-select {self.select} + --val-report {self.report}: must leave training images "
                            f"and fit in the {pool} images they are drawn from (this dataset has {total})")
        order = torch.cat([torch.randperm(pool, generator=torch.Generator().manual_seed(self.seed)) + total - pool,
                           torch.arange(total - pool)])
        select, report = order[:self.select], order[self.select:self.select + self.report]
        train = order[self.select + self.report:]
        return {"train": train.sort().values, "select": select.sort().values, "report": report.sort().values}

    def record(self) -> dict:
        """What an eval JSON or a report keeps of it: the sizes and the seed."""
        return {"val_select": self.select, "val_report": self.report, "split_seed": self.seed,
                "split_pool": self.pool}


def held_out(cfg) -> HeldOut | None:
    """The held-out splits a config asks for (``val_select`` / ``val_report`` / ``split_seed``), None without
    them; ``--val-size`` beside them is a one-line UserError."""
    select, report = getattr(cfg, "val_select", None), getattr(cfg, "val_report", None)
    if select is None and report is None:
        return None
    if getattr(cfg, "val_size", None) is not None:
        raise UserError("--val-size with --val-select / --val-report: give one (the two splits replace --val-size)")
    return HeldOut(select or 0, report or 0, getattr(cfg, "split_seed", None) or 0, getattr(cfg, "split_pool", None))


def take(data: ImageTensors, positions: torch.Tensor) -> ImageTensors:
    """The images of ``data`` at ``positions``, in that order."""
    return ImageTensors(data.images[positions], data.labels[positions])


def carve(data: ImageTensors, splits: HeldOut, limit: int | None) -> dict[str, ImageTensors]:
    """{train, select, report} of ``data``; train optionally only its first ``limit`` images."""
    parts = {name: take(data, pos) for name, pos in splits.positions(len(data)).items()}
    if limit is not None:
        if limit <= 0:
            raise UserError(f"--limit {limit}: must be positive")
        parts["train"] = parts["train"].slice(0, limit)
    return parts


def requested_splits(select: int | None, report: int | None, seed: int | None, pool: int | None,
                     val_size: int | None) -> HeldOut | None:
    """``rnas eval``'s held-out splits: its flags' values where given, else the checkpoint's (the caller
    passes the merged values); None when neither size is set."""
    if select is None and report is None:
        return None
    if val_size is not None:
        raise UserError("--val-size with --val-select / --val-report: give one (the two splits replace --val-size)")
    return HeldOut(select or 0, report or 0, seed or 0, pool)


def held_out_split(requested: str, splits: HeldOut, info, data_dir) -> tuple[str, str]:
    """(select, report or test, why) for ``rnas eval --split`` of a run with held-out splits: ``auto`` is the
    report split (the one nothing chose on); ``val`` is the select split the run validated on."""
    if info.held_out_val:
        raise UserError(f"--val-select / --val-report: {info.name} validates on its own held-out split")
    split = {"auto": "report", "val": "select"}.get(requested, requested)
    if requested == "auto" and splits.report == 0:
        split = "test" if info.has_test(data_dir) else "select"
    if split == "test":
        return "test", f"official test split ({info.test_name}, --split {requested})"
    size = splits.select if split == "select" else splits.report
    if size == 0:
        raise UserError(f"--split {requested}: the run has no {split} split (--val-{split} 0)")
    why = "what the run chose on" if split == "select" else "disjoint from the select split; nothing chose on it"
    return split, (f"{split} split: {size} training images drawn by --split-seed {splits.seed} ({why}; "
                   f"--split {requested})")
