"""timm models as teachers (``--teacher timm:NAME``, the optional extra ``.[timm]``): the architecture from
``timm.create_model`` (no download: the weights come from the checkpoint you give) and the normalisation of the
model's pretrained config."""
from __future__ import annotations

from rnas.errors import UserError
from rnas.teachers.registry import TeacherArch

PREFIX = "timm:"


def timm_arch(name: str) -> TeacherArch:
    """The TeacherArch of ``timm:NAME``; a one-line UserError without timm or for a name timm does not know."""
    model = name.removeprefix(PREFIX)
    try:
        import timm
    except ImportError:
        raise UserError(f"--teacher {name}: timm models need the optional extra: pip install 'rnas[timm]'") from None
    if not timm.is_model(model):
        raise UserError(f"--teacher {name}: not a timm model name (timm.list_models() lists them)")
    cfg = timm.models.get_pretrained_cfg(model)
    mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else (None, None)
    return TeacherArch(f"timm {model}", lambda num_classes: timm.create_model(model, pretrained=False,
                                                                                num_classes=num_classes), mean, std)
