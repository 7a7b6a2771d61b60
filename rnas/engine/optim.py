"""The one optimizer-and-scheduler factory of the training commands, and the fp16 gradient scaler."""
from __future__ import annotations

import torch


def make_optimizer(params, cfg) -> torch.optim.SGD:
    """SGD with momentum and weight decay (``OptimSection`` fields of ``cfg``)."""
    return torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine to zero over ``cfg.epochs`` (``--cosine``), else x ``lr_decay`` at each of ``milestones``;
    stepped once per epoch."""
    if cfg.cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones, cfg.lr_decay)


def make_grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler for ``--amp fp16`` (its state is checkpointed); a disabled one otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")
