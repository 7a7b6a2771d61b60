"""Layer factory shared by the supernet and derived nets: creates conv/BN/linear layers, tags each with
its channel variables (for weight slicing at derive time) and records its exact MAC and parameter terms.

Every cost is a sum of terms ``coef * E[a] * E[b]`` where ``a``/``b`` index channel variables
(index 0 is the constant 1). With one-hot choices ``E[.]`` is the chosen count, so the total is exact.
"""
from __future__ import annotations

import torch
from torch import nn

from .channels import Channels

ACTIVATIONS = {"relu": nn.ReLU, "hswish": nn.Hardswish, "swish": nn.SiLU, "gelu": nn.GELU}


class TapPoint(nn.Identity):
    """Marks a tensor the student's attention maps are read from: a forward hook on this identity module
    sees exactly what the sampled network computes there (placed after the channel mask)."""


def output_free(act: nn.Module) -> bool:
    """True when ``act``'s backward reads its input, not its output, so its output may be changed in
    place (ReLU's backward reads the output)."""
    return not isinstance(act, nn.ReLU)


def conv_out(res: int, kernel: int, stride: int) -> int:
    """Output side length of a conv/pool with 'same' padding ``kernel // 2``."""
    return (res + 2 * (kernel // 2) - kernel) // stride + 1


def apply_mask(x: torch.Tensor, channels: Channels, masks: tuple[torch.Tensor, ...] | None,
               inplace: bool = False) -> torch.Tensor:
    """Multiply ``x`` (N,C,H,W) by its channel mask ``masks[channels.var]`` (N,C,1,1); identity for fixed
    dims / derived nets.

    ``inplace``: the caller's ``x`` is a fresh tensor that autograd does not keep (e.g. a BN or
    hard-swish output); when the masks need no gradient (weight steps, evaluation) it is masked in
    place, which saves one activation-sized allocation and write."""
    if masks is None or channels.var is None:
        return x
    mask = masks[channels.var]
    if inplace and not mask.requires_grad:
        return x.mul_(mask)
    return x * mask


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Slice or zero-pad dim 1 of ``x`` to ``channels``: the free shortcut of a derived net."""
    have = x.shape[1]
    if have == channels:
        return x
    if have > channels:
        return x[:, :channels]
    return nn.functional.pad(x, (0, 0, 0, 0, 0, channels - have))


class Builder:
    """Creates layers and accumulates their cost terms; ``vars`` lists searched channel variables."""

    def __init__(self):
        self.vars: list[Channels] = []
        self.mac_terms: list[tuple[float, int, int]] = []
        self.param_terms: list[tuple[float, int, int]] = []

    def _ref(self, ch: Channels) -> tuple[int, int]:
        """(constant factor, variable index) of a dimension; registers searched dimensions."""
        if not ch.searched:
            return ch.size, 0
        if ch.var is None:
            ch.var = len(self.vars)
            self.vars.append(ch)
        return 1, ch.var + 1

    def _term(self, terms: list, coef: float, a: Channels | None, b: Channels | None):
        fa, ia = self._ref(a) if a is not None else (1, 0)
        fb, ib = self._ref(b) if b is not None else (1, 0)
        terms.append((float(coef * fa * fb), ia, ib))

    def register(self, ch: Channels) -> Channels:
        self._ref(ch)
        return ch

    def conv(self, cin: Channels, cout: Channels, kernel: int, stride: int, res_out: int,
             depthwise: bool = False, bias: bool = False) -> nn.Conv2d:
        """A k×k conv with 'same' padding; ``res_out`` is its output side length (for MACs)."""
        groups = cout.size if depthwise else 1
        layer = nn.Conv2d(cin.size, cout.size, kernel, stride, kernel // 2, groups=groups, bias=bias)
        layer.channel_vars = (cout, None if depthwise else cin)
        area = kernel * kernel
        self._term(self.mac_terms, area * res_out * res_out, cout, None if depthwise else cin)
        self._term(self.param_terms, area, cout, None if depthwise else cin)
        if bias:
            self._term(self.param_terms, 1, cout, None)
        return layer

    def bn(self, ch: Channels) -> nn.BatchNorm2d:
        layer = nn.BatchNorm2d(ch.size)
        layer.channel_vars = (ch, None)
        self._term(self.param_terms, 2, ch, None)
        return layer

    def linear(self, cin: Channels, cout: Channels) -> nn.Linear:
        layer = nn.Linear(cin.size, cout.size)
        layer.channel_vars = (cout, cin)
        self._term(self.mac_terms, 1, cout, cin)
        self._term(self.param_terms, 1, cout, cin)
        self._term(self.param_terms, 1, cout, None)
        return layer

    @staticmethod
    def act(name: str) -> nn.Module:
        return ACTIVATIONS[name]()
