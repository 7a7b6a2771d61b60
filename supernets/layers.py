"""Pieces the supernet compiler and the engine share: input normalisation inside a model (models take
images in [0, 1]; the teachers wrap theirs with the same module) and the one Gumbel-softmax draw that both
the width choices and the tutor choices use."""
from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std with per-channel buffers: models take images in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def gumbel_softmax(logits: torch.Tensor, batch: int, tau: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, *logits.shape) per-sample Gumbel-softmax weights softmax((logits + G) / tau) over the last dim.

    G = -log(-log U), U ~ Uniform(0, 1) (RNAS-CL's "N(0,1)" is a typo), drawn as -log(E) with E ~ Exp(1),
    which has the same law and never takes log(0). ``generator``: the noise's stream (default: the global
    one), so a run can make its draws a function of (seed, epoch, step)."""
    noise = -torch.empty((batch, *logits.shape), device=logits.device).exponential_(generator=generator).log()
    return ((logits + noise) / tau).softmax(-1)
