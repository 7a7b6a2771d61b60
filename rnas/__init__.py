"""rnas: robust neural architecture search by cross-layer knowledge distillation (RNAS-CL)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rnas")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

from search_spaces import SpaceSpec, SpecError, available_spaces, load_space
from supernets import ArchError, Network, build_model, build_supernet, derive, load_supernet_weights

from .evaluate import load_model
from .teachers import Teacher, load_teacher

__all__ = ["__version__", "ArchError", "Network", "SpaceSpec", "SpecError", "Teacher", "available_spaces",
           "build_model", "build_supernet", "derive", "load_model", "load_space", "load_supernet_weights",
           "load_teacher"]
