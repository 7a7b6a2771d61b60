"""The network compiled from a spec. With ``widths=None`` it is the FBNetV2 supernet (every block with
several width choices owns ``width_logits`` and its output is channel-masked); with one width per block
it is a standalone derived net with physically fewer channels and no masks. Both share one code path.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from search_spaces import SpaceSpec

from .blocks import BLOCKS
from .builder import Builder, TapPoint, apply_mask, conv_out
from .channels import Channels
from .layers import Normalize, gumbel_softmax
from .tracing import trace_layers

MODES = ("sample", "expected", "argmax")


def _stem(b: Builder, spec: SpaceSpec) -> tuple[nn.Sequential, Channels, int]:
    stem = spec.stem
    cin, cout = Channels((spec.in_channels,)), Channels((stem.channels,))
    res = spec.input_size
    if stem.type == "conv":
        res = conv_out(res, stem.kernel, stem.stride)
        layers = [b.conv(cin, cout, stem.kernel, stem.stride, res), b.bn(cout), b.act(stem.act)]
    else:  # convstem: stride-2 conv to C/2, then a conv with `stride` to C
        half = Channels((max(1, stem.channels // 2),))
        r1 = conv_out(res, stem.kernel, 2)
        res = conv_out(r1, stem.kernel, stem.stride)
        layers = [b.conv(cin, half, stem.kernel, 2, r1), b.bn(half), b.act(stem.act),
                  b.conv(half, cout, stem.kernel, stem.stride, res), b.bn(cout), b.act(stem.act)]
    return nn.Sequential(*layers), cout, res


class Network(nn.Module):
    """Supernet (``widths=None``) or derived net (``widths`` = one chosen width per block).

    Inputs are images in [0, 1], (N, in_channels, H, W); normalisation (if the spec has mean/std) is
    inside. Supernet modes: ``sample`` (per-sample Gumbel-softmax at temperature ``tau``), ``expected``
    (softmax of the logits, no noise), ``argmax`` (one-hot). ``mode=None`` means sample in training and
    argmax in eval.
    """

    def __init__(self, spec: SpaceSpec, num_classes: int | None = None, widths: list[int] | None = None):
        super().__init__()
        self.spec, self.num_classes = spec, num_classes or spec.num_classes
        self.mode: str | None = None
        self.tau = 5.0
        b = Builder()
        self.normalize = Normalize(spec.mean, spec.std) if spec.mean is not None else nn.Identity()
        self.stem, cin, res = _stem(b, spec)
        self.tap_stem = TapPoint()
        blocks, self.searched_blocks = [], []
        for stage in spec.stages:
            for i in range(stage.depth):
                choices = stage.widths[i]
                index = len(blocks)
                if widths is None:
                    searched = len(choices) > 1
                    cout = Channels(choices, len(self.searched_blocks) if searched else None)
                else:
                    cout = Channels((int(widths[index]),), None, 1, max(choices))
                    searched = False
                block = BLOCKS[stage.block.type](b, cin, cout, stage.stride if i == 0 else 1, stage.block, res)
                block.width_choices = choices
                if searched:
                    block.width_logits = nn.Parameter(torch.zeros(len(choices)))
                    self.searched_blocks.append(block)
                blocks.append(block)
                cin, res = cout, block.res_out
        self.blocks = nn.ModuleList(blocks)
        self.final_preact = getattr(BLOCKS[spec.stages[-1].block.type], "preact", False)
        if self.final_preact:
            self.bn_final, self.act_final = b.bn(cin), b.act(spec.stages[-1].block.act)
        self.out_channels = cin
        self.fc = b.linear(cin, Channels((self.num_classes,)))
        self._register_search_buffers(b)
        self._traced: dict[type, list[tuple[str, nn.Module]]] = {}

    # ---- search state -------------------------------------------------------------------------
    def _register_search_buffers(self, b: Builder):
        kmax = max((len(blk.width_choices) for blk in self.searched_blocks), default=1)
        nblocks, nvars = len(self.searched_blocks), len(b.vars)
        valid = torch.zeros(nblocks, kmax, dtype=torch.bool)
        for i, blk in enumerate(self.searched_blocks):
            valid[i, : len(blk.width_choices)] = True
        self.mask_sizes = [v.size for v in b.vars]
        # mask_select[(block, k), t] = 1 when choice k of its block keeps flat channel t (all vars end to end)
        select = torch.zeros(nblocks * kmax, sum(self.mask_sizes))
        counts = torch.zeros(nvars, kmax, dtype=torch.float64)
        offset = 0
        for v, ch in enumerate(b.vars):
            ind = ch.indicator()
            select[ch.block * kmax + torch.arange(ind.shape[0]), offset: offset + ind.shape[1]] = ind
            counts[v, : ind.shape[0]] = ind.sum(1).double()
            offset += ind.shape[1]
        terms = {"mac": torch.tensor(b.mac_terms, dtype=torch.float64).view(-1, 3),
                 "param": torch.tensor(b.param_terms, dtype=torch.float64).view(-1, 3)}
        buffers = {"choice_valid": valid, "mask_select": select, "var_counts": counts,
                   "var_block": torch.tensor([v.block for v in b.vars], dtype=torch.long),
                   "mac_coef": terms["mac"][:, 0], "mac_index": terms["mac"][:, 1:].long(),
                   "param_coef": terms["param"][:, 0], "param_index": terms["param"][:, 1:].long()}
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def arch_parameters(self) -> list[nn.Parameter]:
        """The width logits of every searched block (one (K_b,) tensor each), in block order."""
        return [blk.width_logits for blk in self.searched_blocks]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an arch logit."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def width_logit_matrix(self) -> torch.Tensor:
        """(B, Kmax) logits of the searched blocks, -inf where a block has fewer choices."""
        dtype = self.searched_blocks[0].width_logits.dtype if self.searched_blocks else None
        fill = torch.full(self.choice_valid.shape, -math.inf, device=self.choice_valid.device, dtype=dtype)
        if not self.searched_blocks:
            return fill
        return fill.masked_scatter(self.choice_valid, torch.cat(self.arch_parameters()))

    def width_probs(self) -> torch.Tensor:
        """(B, Kmax) choice probabilities softmax(logits) (0 on padding)."""
        return self.width_logit_matrix().softmax(-1)

    def argmax_choices(self) -> list[int]:
        """The argmax choice index per searched block, taken on the logits as the ``argmax`` mode does (a
        softmax can round two near-equal logits to one probability and pick the other)."""
        return self.width_logit_matrix().argmax(-1).tolist()

    @property
    def current_mode(self) -> str:
        if self.mode is not None:
            if self.mode not in MODES:
                raise ValueError(f"unknown mode {self.mode!r} (expected one of {MODES})")
            return self.mode
        return "sample" if self.training else "argmax"

    def width_weights(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gumbel-softmax weights per sample (batch, B, Kmax) in sample mode (``gumbel_softmax`` at ``tau``,
        noise from ``generator``), else (1, B, Kmax): softmax (expected) or one-hot (argmax)."""
        logits = self.width_logit_matrix()
        mode = self.current_mode
        if mode == "sample":
            return gumbel_softmax(logits, batch, self.tau, generator)
        if mode == "expected":
            return logits.softmax(-1)[None]
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)[None]

    def channel_mask_matrix(self, weights: torch.Tensor) -> torch.Tensor:
        """(N, T) masks of every searched channel dimension, end to end: sum_k g_k 1[c kept by choice k].
        One matmul of the (N, B·Kmax) choice weights with the 0/1 ``mask_select`` (exact for one-hot)."""
        return weights.flatten(1) @ self.mask_select

    def channel_masks(self, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The (N, C_v, 1, 1) mask of every channel variable v (views of one tensor: one split forward,
        one concatenation backward, whatever the number of layers)."""
        return self.channel_mask_matrix(weights)[:, :, None, None].split(self.mask_sizes, 1)

    # ---- cost model -----------------------------------------------------------------------------
    def _expected(self, coef, index, weights) -> torch.Tensor:
        weights = self.width_logit_matrix().double().softmax(-1) if weights is None else weights
        per_var = (weights.to(torch.float64)[..., self.var_block, :] * self.var_counts).sum(-1)  # (..., V)
        values = torch.cat([per_var.new_ones(*per_var.shape[:-1], 1), per_var], -1)
        return (coef * values[..., index[:, 0]] * values[..., index[:, 1]]).sum(-1)

    def expected_macs(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable expected MACs (conv + linear) at the spec's input size, float64.
        ``weights`` (B, Kmax) defaults to softmax(logits) and gives a scalar; per-sample Gumbel weights
        (N, B, Kmax), as ``width_weights`` draws them, give the (N,) MACs of each sample's network.
        Exact for one-hot weights."""
        return self._expected(self.mac_coef, self.mac_index, weights)

    def expected_params(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable expected parameter count; exact for one-hot weights."""
        return self._expected(self.param_coef, self.param_index, weights)

    def one_hot(self, choices: list[int]) -> torch.Tensor:
        """(B, Kmax) one-hot weights for a choice index per searched block."""
        kmax = self.choice_valid.shape[1]
        return F.one_hot(torch.tensor(choices, dtype=torch.long, device=self.choice_valid.device), kmax).double()

    def cost(self, choices: list[int] | None = None) -> tuple[int, int]:
        """Exact (params, MACs) of the derived net for a choice index per searched block (default argmax)."""
        if choices is None:
            choices = self.argmax_choices()
        w = self.one_hot(choices)
        return round(self.expected_params(w).item()), round(self.expected_macs(w).item())

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, width_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, num_classes) for images x in [0, 1]. ``width_weights`` ((N | 1, B, Kmax), e.g. from
        ``width_weights``) are used instead of drawing new ones, so a caller can cost the same network."""
        x = self.tap_stem(self.stem(self.normalize(x)))
        if width_weights is None and self.searched_blocks:
            width_weights = self.width_weights(x.shape[0])
        masks = self.channel_masks(width_weights) if self.searched_blocks else None
        for block in self.blocks:
            x = block(x, masks)
        if self.final_preact:
            x = apply_mask(self.act_final(self.bn_final(x)), self.out_channels, masks)
        return self.fc(x.mean((2, 3)))

    def _trace(self, kind: type[nn.Module]) -> list[tuple[str, nn.Module]]:
        """(name, module) of every ``kind`` module in execution order (found once by a traced argmax forward)."""
        if kind not in self._traced:
            mode, self.mode = self.mode, "argmax"
            try:
                example = torch.zeros(1, self.spec.in_channels, self.spec.input_size, self.spec.input_size,
                                      device=self.fc.weight.device)
                self._traced[kind] = [(name, m) for name, m, _ in trace_layers(self, example, kind)]
            finally:
                self.mode = mode
        return list(self._traced[kind])

    def conv_layers(self) -> list[tuple[str, nn.Conv2d]]:
        """(name, conv) of every conv layer in execution order."""
        return self._trace(nn.Conv2d)

    def tap_layers(self) -> list[tuple[str, TapPoint]]:
        """(name, tap point) of the student's attention taps in execution order: the stem output, then each
        block's masked inner activation and masked output (see supernets/blocks.py). Identical names in
        the supernet and every derived net, so searched tutors carry over to retraining."""
        return self._trace(TapPoint)
