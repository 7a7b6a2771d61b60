"""The one optimizer-and-scheduler factory of the training commands, and the fp16 gradient scaler."""
from __future__ import annotations

import torch


def fill_recipe(cfg, search: bool = False) -> None:
    """The optimisation settings a config leaves to its dataset (None: epochs, batch size, lr, weight decay,
    cosine) from the dataset's recipe (``search``: its search recipe), and milestones at 75 % and 90 % of the
    epochs once the epochs are known (a ``budget`` leaves the epochs to the compute it buys; with ``lr_per_step``
    they stay None: 75 % and 90 % of the run's steps). ``lr_per_step`` left None (retrain's default) is resolved
    once the epochs are known: per step for a run too short to finish a per-epoch schedule (``too_short_per_epoch``,
    and no milestones given), per epoch otherwise. rnas retrain
    and rnas search resolve their configs with it, and so do ``Trainer`` and ``Searcher`` for a config built
    in Python; a second call changes nothing."""
    from rnas.data import dataset_info

    info = dataset_info(getattr(cfg, "data", None) or "cifar10", trainable=True)
    recipe = info.search_recipe if search else info.recipe
    keys = ("batch_size", "lr", "weight_decay", "cosine") + (() if getattr(cfg, "budget", None) else ("epochs",))
    for key in keys:
        if hasattr(cfg, key) and getattr(cfg, key) is None:
            setattr(cfg, key, getattr(recipe, key))
    if hasattr(cfg, "lr_per_step") and cfg.lr_per_step is None and cfg.epochs is not None:
        # the default: per step when the per-epoch schedule would not finish within the run's own epochs
        cfg.lr_per_step = getattr(cfg, "milestones", None) is None and too_short_per_epoch(cfg.epochs)
    if getattr(cfg, "milestones", ()) is None and cfg.epochs is not None and not getattr(cfg, "lr_per_step", False):
        cfg.milestones = default_milestones(cfg.epochs)


def too_short_per_epoch(epochs: int) -> bool:
    """Whether a run of ``epochs`` stepping its lr once per epoch would not finish its schedule: its default
    milestones (75 % and 90 % of the epochs) are not two distinct epochs inside the run (1-5 epochs: the lr never
    decays, or drops twice at once), nor would a per-epoch cosine come near zero."""
    first, second = default_milestones(epochs)
    return not 0 < first < second < epochs


def default_milestones(length: int) -> list[int]:
    """Where the lr decays by default: at 75 % and 90 % of ``length`` (the run's epochs, or with
    ``lr_per_step`` its steps), rounded."""
    return [round(0.75 * length), round(0.9 * length)]


def make_optimizer(params, cfg, fused: bool = False) -> torch.optim.SGD:
    """SGD with momentum and weight decay (``OptimSection`` fields of ``cfg``); ``fused``: one kernel for
    all parameters and no host read (the captured step's), else PyTorch's default implementation."""
    extra = {"fused": True} if fused else {}
    return torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **extra)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg,
                   steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine to zero over ``cfg.epochs`` (``--cosine``), else x ``lr_decay`` at each of ``milestones``;
    stepped once per epoch, or with ``cfg.lr_per_step`` once per training step: then the milestones are
    epochs x ``steps_per_epoch`` (default: 75 % and 90 % of all the run's steps, so that a run of one or two
    epochs decays too) and the cosine runs over all the steps."""
    unit = steps_per_epoch if getattr(cfg, "lr_per_step", False) else 1
    if cfg.cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * unit)
    total = cfg.epochs * unit
    milestones = default_milestones(total) if cfg.milestones is None else [m * unit for m in cfg.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, cfg.lr_decay)


def make_grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler for ``--amp fp16`` (its state is checkpointed); a disabled one otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")
