"""Datasets and loaders: the registry (registry.py), the built-in readers that register themselves
(readers.py) and the loaders (loaders.py). Import from here: importing ``rnas.data`` registers the built-ins."""
from rnas.data.loaders import (
    DataBundle,
    FolderLoader,
    InMemoryLoader,
    IterableLoader,
    SeededSamples,
    Sharded,
    derived_seed,
    keyed_generator,
    loaders_for,
    make_loaders,
    random_crop_flip,
    split_train_val,
)
from rnas.data.readers import (
    CIFAR_DIRS,
    ClassListFolder,
    ImageTensors,
    imagenet100_classes,
    imagenet100_folder,
    imagenet_classes,
    load_tensors,
    read_cifar_batch,
)
from rnas.data.registry import (
    DATASETS,
    TRAINABLE,
    DatasetInfo,
    Recipe,
    class_positions,
    dataset_info,
    register_dataset,
    unregister_dataset,
)

__all__ = ["CIFAR_DIRS", "DATASETS", "TRAINABLE", "ClassListFolder", "DataBundle", "DatasetInfo", "FolderLoader",
           "ImageTensors", "InMemoryLoader", "IterableLoader", "Recipe", "SeededSamples", "Sharded",
           "class_positions", "dataset_info", "derived_seed", "imagenet100_classes", "imagenet100_folder",
           "imagenet_classes", "keyed_generator", "load_tensors", "loaders_for", "make_loaders", "random_crop_flip",
           "read_cifar_batch", "register_dataset", "split_train_val", "unregister_dataset"]
