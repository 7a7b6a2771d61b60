"""Find a model's layers of a kind (convs, tap points) in execution order by one traced forward (forward
hooks, no rewriting)."""
from __future__ import annotations

import torch
from torch import nn


def trace_layers(model: nn.Module, example: torch.Tensor,
                      kind: type[nn.Module] = nn.Conv2d) -> list[tuple[str, nn.Module, tuple[int, int]]]:
    """(name, module, output (H, W)) of every module of ``kind`` (default: convs) that runs on ``example``,
    in execution order. The model is traced in eval mode without grad; its train/eval state is restored."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, kind)}
    order: list[tuple[str, nn.Conv2d, tuple[int, int]]] = []
    seen: set[int] = set()

    def record(module, _inputs, output):
        if id(module) not in seen:  # a conv reused in one forward is tapped once, at its first call
            seen.add(id(module))
            order.append((names[module], module, tuple(output.shape[-2:])))

    hooks = [m.register_forward_hook(record) for m in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order
