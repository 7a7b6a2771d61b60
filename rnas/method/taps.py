"""Taps: forward hooks that capture (a transform of) conv activations, in execution order, with names.
The model's forward is never rewritten (torchdistill style)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from supernets import trace_layers

SHORTCUT_WORDS = ("shortcut", "downsample")


def is_shortcut(name: str, conv: nn.Conv2d) -> bool:
    """A 1×1 conv on a residual shortcut (WRN ``convShortcut``, ResNet ``downsample.0``/``shortcut.0``)."""
    return conv.kernel_size == (1, 1) and any(w in name.lower() for w in SHORTCUT_WORDS)


def conv_taps(model: nn.Module, example: torch.Tensor, include_shortcuts: bool = True) -> list[tuple[str, nn.Conv2d]]:
    """(name, conv) of the convs to tap, in execution order. Convs whose output is 1×1 (e.g. SE gates)
    carry no spatial attention and are left out; 1×1 shortcut convs are left out on request."""
    taps = []
    for name, conv, size in trace_layers(model, example):
        if size == (1, 1) or (not include_shortcuts and is_shortcut(name, conv)):
            continue
        taps.append((name, conv))
    return taps


class Taps:
    """Hooks on ``layers``; after each forward, ``collect()`` returns ``transform(output)`` of every
    tapped layer in the given order. Use as a context manager (or call ``remove()``)."""

    def __init__(self, layers: list[tuple[str, nn.Module]],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.names = [name for name, _ in layers]
        self.transform = transform or (lambda t: t)
        self._outputs: list[torch.Tensor | None] = [None] * len(layers)
        self.active = True
        self._hooks = [module.register_forward_hook(self._hook(i)) for i, (_, module) in enumerate(layers)]

    def _hook(self, index: int):
        def capture(_module, _inputs, output):
            if self.active:
                self._outputs[index] = self.transform(output)
        return capture

    def collect(self) -> list[torch.Tensor]:
        """The captured tensors of the last forward (then cleared)."""
        missing = [n for n, o in zip(self.names, self._outputs, strict=True) if o is None]
        if missing:
            raise RuntimeError(f"taps did not fire for {missing[:3]}: run a forward first")
        out, self._outputs = self._outputs, [None] * len(self.names)
        return out

    @contextlib.contextmanager
    def paused(self):
        """Forwards inside this block capture nothing (e.g. validation)."""
        self.active = False
        try:
            yield
        finally:
            self.active = True

    def remove(self):
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self) -> Taps:
        return self

    def __exit__(self, *exc):
        self.remove()

    def __len__(self) -> int:
        return len(self.names)
