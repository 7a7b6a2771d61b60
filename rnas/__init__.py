"""rnas: robust neural architecture search by cross-layer knowledge distillation (RNAS-CL).

The public API below is imported on first use, so ``import rnas`` (and ``rnas --help``) does not pay for torch.
The rooms of the package are described in docs/architecture.md."""
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from rnas import moved as _moved

try:
    __version__ = version("rnas")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

_API = {
    "SpaceSpec": "search_spaces", "SpecError": "search_spaces", "available_spaces": "search_spaces",
    "load_space": "search_spaces", "ArchError": "supernets", "Network": "supernets", "build_model": "supernets",
    "build_supernet": "supernets", "derive": "supernets", "load_supernet_weights": "supernets",
    "load_model": "rnas.evaluation.evaluate", "Teacher": "rnas.teachers", "load_teacher": "rnas.teachers",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rnas' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))


_moved.install()
