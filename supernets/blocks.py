"""Block types (a registry, name -> class). Each block is written once and serves both the supernet
(channel masks given) and a derived net (``masks is None``, physically fewer channels).

Masks are applied after every searched conv-BN-activation, so a masked channel is exactly zero where the
next layer reads it; a derived net then drops that channel and reproduces the supernet's argmax output.

Student attention taps. Every block has two ``TapPoint``s, each placed *after* a channel mask, so the
attention maps are those of the sampled network (in argmax mode, exactly the derived net's maps) and
the attention loss reaches the width logits through the masks:

- ``tap_hidden``: the block's inner activation (MBConv: after the depthwise conv-BN-act, the first
  point where its hidden channels are masked; basic: after conv1-BN-act; RobustResBlock: after the
  1×1 reduce-BN-act).
- ``tap_out``: the block's output (after the residual add), which the next block reads.

Raw conv outputs are not tapped: before the mask they still carry channels the sampled network does not
have (MBConv's 1×1 expand output is first masked after the depthwise conv; masking it for a tap alone
would add an elementwise pass per block).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from search_spaces import BlockSpec
from search_spaces.blocks import BLOCK_TYPES, bind_class, declare_block

from .builder import Builder, TapPoint, apply_mask, conv_out, match_channels, output_free
from .channels import Channels


class _BlockClasses(Mapping):
    """The block table's classes, name -> class, read-only (``search_spaces.BLOCK_TYPES`` is the table)."""

    def __getitem__(self, name: str) -> type[nn.Module]:
        cls = BLOCK_TYPES[name].cls
        if cls is None:
            raise KeyError(f"block {name!r}: declared without a class (register one with register_block)")
        return cls

    def __iter__(self):
        return (name for name, entry in BLOCK_TYPES.items() if entry.cls is not None)

    def __len__(self) -> int:
        return sum(entry.cls is not None for entry in BLOCK_TYPES.values())


BLOCKS = _BlockClasses()


def register_block(name: str, params: dict | None = None, check_widths=None):
    """Register a block class under ``name`` with the spec parameters it reads, as name -> (default, kind)
    with kind one of odd_kernel, int, number, act (``search_spaces.blocks.PARAM_KINDS``), and an optional
    ``check_widths(block_spec, widths) -> problem or None``. A spec may then name the block type; nothing
    else needs an edit (``search_spaces.unregister_block`` removes it again). Without ``params`` the name must
    already be declared (the built-in types are, in search_spaces/blocks.py). Class attribute ``preact = True``
    marks a pre-activation block (the network then ends with BN + activation before pooling).

    The class is built as ``cls(builder, cin, cout, stride, block_spec, res)``, sets ``res_out``, and its
    ``forward(x, masks=None)`` applies ``apply_mask`` after every searched conv-BN-activation and passes
    its inner and output activations through ``tap_hidden`` / ``tap_out`` (``TapPoint``s)."""
    def add(cls):
        if params is None:
            bind_class(name, cls)
        else:
            declare_block(name, params, check_widths, cls)
        return cls
    return add


def has_identity(cin: Channels, cout: Channels, stride: int) -> bool:
    """Identity shortcut when the spec's maximum widths agree and there is no downsampling."""
    return stride == 1 and cin.full == cout.full


@register_block("mbconv")
class MBConv(nn.Module):
    """FBNet/MobileNetV2 inverted residual: 1×1 expand (×e of the input width), k×k depthwise, 1×1
    project (linear); identity residual when shapes allow. Hidden width follows the input's choice."""

    def __init__(self, b: Builder, cin: Channels, cout: Channels, stride: int, spec: BlockSpec, res: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.res_out = conv_out(res, spec.kernel, stride)
        self.hidden = b.register(cin.scaled(spec.expansion)) if spec.expansion > 1 else cin
        if spec.expansion > 1:
            self.expand = b.conv(cin, self.hidden, 1, 1, res)
            self.bn_expand, self.act_expand = b.bn(self.hidden), b.act(spec.act)
        else:
            self.expand = None
        self.dw = b.conv(self.hidden, self.hidden, spec.kernel, stride, self.res_out, depthwise=True)
        self.bn_dw, self.act_dw = b.bn(self.hidden), b.act(spec.act)
        self.project = b.conv(self.hidden, cout, 1, 1, self.res_out)
        self.bn_project = b.bn(b.register(cout))
        self.identity = has_identity(cin, cout, stride)
        self.tap_hidden, self.tap_out = TapPoint(), TapPoint()

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        y = x
        if self.expand is not None:
            # no mask here: the depthwise conv keeps channels apart, so the mask after it zeroes every
            # unused hidden channel exactly (one elementwise pass less per block)
            y = self.act_expand(self.bn_expand(self.expand(y)))
        y = apply_mask(self.act_dw(self.bn_dw(self.dw(y))), self.hidden, masks, inplace=output_free(self.act_dw))
        y = self.bn_project(self.project(self.tap_hidden(y)))
        if self.identity:
            y = y + match_channels(x, y.shape[1])
        return self.tap_out(apply_mask(y, self.cout, masks, inplace=True))  # a BN output or a fresh sum


@register_block("basic")
class BasicBlock(nn.Module):
    """ResNet basic block (post-activation): k×k conv-BN-act, k×k conv-BN, + shortcut, act.
    The shortcut is the identity (sliced/padded) or a 1×1 conv-BN when the shape changes."""

    def __init__(self, b: Builder, cin: Channels, cout: Channels, stride: int, spec: BlockSpec, res: int):
        super().__init__()
        self.cin, self.cout = cin, b.register(cout)
        self.res_out = conv_out(res, spec.kernel, stride)
        self.conv1 = b.conv(cin, cout, spec.kernel, stride, self.res_out)
        self.bn1, self.act1 = b.bn(cout), b.act(spec.act)
        self.conv2 = b.conv(cout, cout, spec.kernel, 1, self.res_out)
        self.bn2, self.act2 = b.bn(cout), b.act(spec.act)
        self.identity = has_identity(cin, cout, stride)
        if not self.identity:
            self.shortcut = b.conv(cin, cout, 1, stride, self.res_out)
            self.bn_shortcut = b.bn(cout)
        self.tap_hidden, self.tap_out = TapPoint(), TapPoint()

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        y = self.tap_hidden(apply_mask(self.act1(self.bn1(self.conv1(x))), self.cout, masks))
        y = self.bn2(self.conv2(y))
        short = match_channels(x, y.shape[1]) if self.identity else self.bn_shortcut(self.shortcut(x))
        return self.tap_out(apply_mask(self.act2(y + short), self.cout, masks))


@register_block("robust_res")
class RobustResBlock(nn.Module):
    """RobustResBlock (Huang et al., seed 000): pre-activation bottleneck whose k×k stage is a
    hierarchical (Res2Net-style) conv over ``scales`` groups, followed by a *residual* SE
    (y + y·SE(y)). The bottleneck width is ``mid_ratio`` × the output width, searched group-wise."""

    preact = True  # its input passes BN + act inside the block, so the network ends with BN + act

    def __init__(self, b: Builder, cin: Channels, cout: Channels, stride: int, spec: BlockSpec, res: int):
        super().__init__()
        self.cin, self.cout, self.stride = cin, b.register(cout), stride
        self.res_out = conv_out(res, spec.kernel, stride)
        s = spec.scales
        self.mid = b.register(Channels(tuple(round(c * spec.mid_ratio) for c in cout.counts), cout.block, s,
                                       round(cout.full * spec.mid_ratio)))
        self.group = b.register(Channels(tuple(c // s for c in self.mid.counts), cout.block, 1, self.mid.full // s))
        self.bn_in, self.act = b.bn(cin), b.act(spec.act)
        self.conv_reduce = b.conv(cin, self.mid, 1, 1, res)
        self.bn_reduce = b.bn(self.mid)
        self.convs = nn.ModuleList(b.conv(self.group, self.group, spec.kernel, stride, self.res_out)
                                   for _ in range(s - 1))
        self.bns = nn.ModuleList(b.bn(self.group) for _ in range(s - 1))
        self.pool = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.conv_expand = b.conv(self.mid, cout, 1, 1, self.res_out)
        self.bn_expand = b.bn(cout)
        se_hidden = cout.fixed_like(max(8, cout.full // spec.se_reduction))
        self.se_reduce = b.conv(cout, se_hidden, 1, 1, 1, bias=True)
        self.se_expand = b.conv(se_hidden, cout, 1, 1, 1, bias=True)
        self.identity = has_identity(cin, cout, stride)
        if not self.identity:
            self.shortcut = b.conv(cin, cout, 1, stride, self.res_out)
        self.tap_hidden, self.tap_out = TapPoint(), TapPoint()

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        a = apply_mask(self.act(self.bn_in(x)), self.cin, masks)
        short = match_channels(x, self.cout.size) if self.identity else self.shortcut(a)
        h = self.tap_hidden(apply_mask(self.act(self.bn_reduce(self.conv_reduce(a))), self.mid, masks))
        parts = h.chunk(len(self.convs) + 1, dim=1)
        outs = [self.pool(parts[0])]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            # Res2Net: each group also sees the previous group's output (not across a stride).
            inp = parts[i + 1] + outs[-1] if (i > 0 and self.stride == 1) else parts[i + 1]
            outs.append(apply_mask(self.act(bn(conv(inp))), self.group, masks))
        y = apply_mask(self.bn_expand(self.conv_expand(torch.cat(outs, 1))), self.cout, masks)
        gate = torch.sigmoid(self.se_expand(self.act(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        return self.tap_out(apply_mask(y + y * gate + short, self.cout, masks))
