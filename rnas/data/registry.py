"""The dataset registry: one DatasetInfo per dataset says how many classes it has, its image side, how its
validation split is made, how to read it and the retrain and search recipes it defaults to. Search, retrain, teacher
training, eval, the teachers and the study read it; adding a dataset is one ``register_dataset`` call.
The built-in readers (CIFAR-10/100, scikit-learn's digits, ImageNet-100 folders) register theirs in data.py."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rnas.errors import UserError


@dataclass(frozen=True)
class Recipe:
    """A dataset's optimisation defaults for retrain (``recipe``) or search (``search_recipe``); every one
    can be overridden by its flag (TRADES fine-tunes override epochs and lr). A retrain's milestones default
    to 75 % and 90 % of its epochs unless ``cosine``; a search keeps the paper's epochs 75 and 90."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 2e-4
    cosine: bool = False


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset.

    ``read(data_dir, split, download)`` returns all images of ``split`` ('train' or 'test'): an
    ``ImageTensors`` (uint8, kept on the device and augmented there; validation = the last ``val_size``
    training images) or a torch ``Dataset`` of (image in [0, 1], label) read by DataLoader workers
    (validation = the held-out 'test' split, e.g. an ImageFolder's val/). ``read=None``: a dataset only
    teacher checkpoints are for (their class count and image side), e.g. ImageNet-1k. ``classes()`` returns
    the class names in label order (None: unnamed), which lets a teacher with more outputs serve a subset
    (``class_positions``)."""

    name: str
    num_classes: int
    input_size: int  # image side the networks see
    description: str = ""  # its usual name: "CIFAR-10"
    read: Callable[..., object] | None = None
    val_size: int = 5000  # default validation images carved from the end of train (tensor datasets)
    test_name: str | None = None  # the official held-out split as messages name it ("test_batch"); None: none
    test_path: Callable[[Path], Path] | None = None  # data_dir -> where that split is on disk
    held_out_val: bool = False  # validation is the held-out split itself (folder datasets), not train's tail
    data_dir: str | None = "torchvision's on-disk layout"  # what --data-dir must hold; None: no --data-dir needed
    recipe: Recipe = Recipe()
    search_recipe: Recipe = Recipe()  # rnas search's batch, lr, weight decay and schedule (the paper's per dataset)
    classes: Callable[[], list[str]] | None = None  # the class names in label order (e.g. WordNet ids)

    def validation_size(self, requested: int | None) -> int:
        """The validation images a run carves from train: ``requested`` (--val-size), or this dataset's default."""
        return self.val_size if requested is None else requested

    def has_test(self, data_dir: str | Path | None) -> bool:
        """Is the official held-out split on disk under ``data_dir``?"""
        return self.test_path is not None and data_dir is not None and self.test_path(Path(data_dir)).exists()

    def need_dir(self, data_dir: str | Path | None) -> Path | None:
        """``data_dir`` as a Path; a one-line error when the dataset needs one and it is missing."""
        if data_dir is None and self.data_dir is not None:
            raise UserError(f"--data {self.name} needs --data-dir ({self.data_dir})")
        return None if data_dir is None else Path(data_dir)


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add ``info`` to the registry (a name is registered once); returns it."""
    if info.name in DATASETS:
        raise ValueError(f"dataset {info.name!r} is already registered")
    DATASETS[info.name] = info
    return info


def unregister_dataset(name: str) -> DatasetInfo:
    """Remove (and return) a dataset (a test's own, say)."""
    return DATASETS.pop(name)


class _Trainable:
    """The names ``--data`` accepts (datasets with a reader), as a live view of the registry: a dataset
    registered after import is a valid choice at once."""

    def __contains__(self, name: object) -> bool:
        return name in DATASETS and DATASETS[name].read is not None

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, d in DATASETS.items() if d.read is not None])

    def __len__(self) -> int:
        return len(list(iter(self)))


TRAINABLE = _Trainable()


def dataset_info(name: str, trainable: bool = False) -> DatasetInfo:
    """The registry entry of ``name``; a one-line UserError naming the known ones otherwise (``trainable``:
    only datasets with a reader, as ``--data`` accepts)."""
    info = DATASETS.get(name)
    if info is None or (trainable and info.read is None):
        known = ", ".join(TRAINABLE if trainable else DATASETS)
        raise UserError(f"--data {name}: unknown dataset (known: {known})" if trainable
                        else f"unknown dataset {name!r} (known: {known})")
    return info


def _class_names(info: DatasetInfo) -> list[str]:
    """``info.classes()``, checked against its class count."""
    names = list(info.classes())
    if len(names) != info.num_classes:
        raise UserError(f"dataset {info.name}: its class list has {len(names)} names for {info.num_classes} classes")
    return names


def class_positions(dataset: str, num_outputs: int, what: str) -> tuple[str, list[int]]:
    """For a classifier with ``num_outputs`` outputs serving ``dataset``: the registered dataset of that many
    named classes and the same image side that holds every class of ``dataset``, and the position of each of
    ``dataset``'s classes (in its label order) among them. A one-line UserError when there is none, naming the
    first class missing and the datasets tried (``what`` names the classifier: "ckpt.pt: the classifier of r18")."""
    info = dataset_info(dataset)
    head = f"{what} has {num_outputs} outputs and {dataset} {info.num_classes} classes, which cannot be mapped"
    if info.classes is None:
        raise UserError(f"{head}: {dataset} registers no class names (a checkpoint for another dataset?)")
    wanted = _class_names(info)
    tried, missing = [], []
    for other in DATASETS.values():
        if other.name == dataset or other.classes is None or other.num_classes != num_outputs \
                or other.input_size != info.input_size:
            continue
        index = {name: i for i, name in enumerate(_class_names(other))}
        absent = next((name for name in wanted if name not in index), None)
        if absent is None:
            return other.name, [index[name] for name in wanted]
        tried.append(other.name)
        missing.append(f"{dataset}'s class {absent} is not a class of {other.name}")
    if not tried:
        size = f"{info.input_size}x{info.input_size}"
        raise UserError(f"{head}: no registered dataset has {num_outputs} named classes at {size}")
    raise UserError(f"{head}: {'; '.join(missing)} (datasets tried: {', '.join(tried)})")
