"""How a spec becomes a network: masked blocks, the compiler, the MAC/param model, derive."""
from search_spaces import unregister_block

from .blocks import BLOCKS, register_block
from .derive import ArchError, budget_choices, build_model, derive, load_supernet_weights, read_arch
from .layers import Normalize, gumbel_softmax
from .network import MODES, Network
from .tracing import trace_layers

__all__ = ["BLOCKS", "MODES", "ArchError", "Network", "budget_choices", "build_model", "build_supernet", "derive",
           "load_supernet_weights", "read_arch", "register_block", "unregister_block", "Normalize", "gumbel_softmax",
           "trace_layers"]


def build_supernet(space, num_classes: int | None = None) -> Network:
    """The FBNetV2 supernet of a space (a name like ``"S5"``, a YAML path, or a SpaceSpec)."""
    from search_spaces import load_space

    return Network(load_space(space), num_classes)
