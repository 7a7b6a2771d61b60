"""Channel variables: a layer dimension that is either fixed or searched over a block's width choices.

A searched dimension of physical size ``size`` keeps, under choice ``k``, the channels where
``indicator[k]`` is 1. For plain widths that is the prefix ``c < counts[k]`` (FBNetV2's mask
``1[c < f_k]``); for a dimension laid out as ``groups`` equal groups (hierarchical convolution) it is the
same prefix inside every group. The channel mask of a batch is ``sum_k g_k * indicator[k]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Channels:
    """One channel dimension. ``counts[k]`` channels are kept under choice ``k`` of block ``block``.

    ``full`` is the spec's maximum for this dimension (used for structural decisions, identical in the
    supernet and every derived net); ``size`` is the physical size of the tensor dimension.
    ``var`` is the index of this dimension's mask in the supernet's tuple of masks (None when fixed).
    """

    counts: tuple[int, ...]
    block: int | None = None
    groups: int = 1
    full: int = 0
    var: int | None = None

    def __post_init__(self):
        if not self.full:
            self.full = max(self.counts)
        if any(c % self.groups for c in self.counts):
            raise ValueError(f"channel counts {self.counts} not divisible into {self.groups} groups")

    @property
    def size(self) -> int:
        return max(self.counts)

    @property
    def searched(self) -> bool:
        return self.block is not None and len(self.counts) > 1

    def indicator(self) -> torch.Tensor:
        """(K, size) float tensor: 1 where choice k keeps channel c."""
        group_size = self.size // self.groups
        local = torch.arange(self.size) % group_size
        per_group = torch.tensor(self.counts) // self.groups
        return (local[None, :] < per_group[:, None]).to(torch.get_default_dtype())

    def kept(self, choice: int) -> torch.Tensor:
        """Indices (long) of the channels kept under ``choice``."""
        return self.indicator()[choice].nonzero().flatten()

    def scaled(self, factor: int, groups: int = 1) -> Channels:
        """A dimension tied to the same choices with ``factor`` times the channels (e.g. MBConv hidden)."""
        return Channels(tuple(c * factor for c in self.counts), self.block, groups, self.full * factor)

    def fixed_like(self, size: int) -> Channels:
        return Channels((size,), None, 1, size)
