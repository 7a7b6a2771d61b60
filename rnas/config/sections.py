"""The config fields every training command shares, defined once and composed into SearchConfig,
RetrainConfig and TeacherTrainConfig by inheritance (the CLI flags and config.yaml stay flat: one flag
per field). A command that needs another default or help text for a shared field says so with
``shared(Section, name, default=...)``, which keeps the field's type, range and choices."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rnas.config import flag, parse_range
from rnas.data import TRAINABLE
from rnas.runtime.loggers import parse_loggers

AMP_MODES = ("none", "bf16", "fp16")
GRAPH_MODES = ("off", "on", "auto")  # --graphs: rnas.runtime.device.captured resolves auto


def shared(section, name: str, default=dataclasses.MISSING, help: str | None = None, range: str | None = None):
    """Field ``name`` of ``section`` with this command's ``default``, ``help`` and/or ``range``."""
    base = section.__dataclass_fields__[name]
    metadata = {**base.metadata, **({"help": help} if help else {}), **({"range": parse_range(range)} if range else {})}
    if default is dataclasses.MISSING:
        default = base.default_factory() if base.default is dataclasses.MISSING else base.default
    factory = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return dataclasses.field(metadata=metadata, **factory)


def parse_teacher(text) -> str:
    """--teacher NAME, or a YAML file whose ``teacher:`` names it (what ``rnas scale --flops B -o FILE.yaml``
    writes): the name, which the run's config.yaml keeps."""
    from rnas.config import read_yaml_file
    from rnas.errors import UserError

    text = str(text)
    if not text.endswith((".yaml", ".yml")):
        return text
    data = read_yaml_file(text, f"--teacher {text}")
    name = data.get("teacher") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name or name.endswith((".yaml", ".yml")):
        raise UserError(f"--teacher {text}: no 'teacher: NAME' in it (rnas scale --flops B -o FILE.yaml writes one)")
    return name


def parse_amp(text) -> str:
    """--amp MODE; true/false of configs written before fp16 existed read as bf16/none."""
    if isinstance(text, bool):
        return "bf16" if text else "none"
    return str(text)


@dataclass
class DataSection:
    data: str = flag("cifar10", "dataset", choices=TRAINABLE)
    data_dir: str | None = flag(None, "dataset root (torchvision layout / ImageFolder root)")
    download: bool = flag(False, "download CIFAR into --data-dir if absent")
    val_size: int | None = flag(None, "validation images carved from the end of train (default per dataset)",
                                range=">= 0")
    val_select: int | None = flag(None, "held-out images to choose on (validation, --robust-val, a study's choices), "
                                  "drawn from train by --split-seed; replaces --val-size", range=">= 0")
    val_report: int | None = flag(None, "held-out images, disjoint from --val-select's, that only the final rnas eval "
                                  "reads (its --split report); replaces --val-size", range=">= 0")
    split_seed: int = flag(0, "seed of the draw of --val-select and --val-report from train", range=">= 0")
    split_pool: int | None = flag(None, "draw --val-select and --val-report from the last N training images only "
                                  "(e.g. those the teacher did not train on; default: all)", range=">= 1")
    limit: int | None = flag(None, "use only the first N training images (smoke runs)", range=">= 1")


@dataclass
class TeacherSection:
    teacher: str = flag("wrt34", "teacher architecture: a registered name such as wrt34 or wrn-16-2 "
                                  "(`rnas teachers` lists them), or a YAML file naming one (rnas scale -o)",
                        parse=parse_teacher)
    teacher_ckpt: str | None = flag(None, "teacher checkpoint: a file, or a RobustBench model name with --model-dir")
    model_dir: str | None = flag(None, "RobustBench model dir, read as <model-dir>/<data>/<threat>/<name>.pt")
    threat: str = flag("Linf", "threat-model folder for --model-dir lookups")
    random_teacher: bool = flag(False, "allow a teacher with random weights (smoke runs only)")


@dataclass
class OptimSection:
    """SGD on the weights with a milestone or cosine schedule: ``rnas.engine.optim.make_optimizer/make_scheduler``."""

    epochs: int = flag(100, "epochs", range=">= 1")
    batch_size: int = flag(128, "global batch size (all ranks together under torchrun)", range=">= 1")
    lr: float = flag(0.1, "SGD learning rate of the weights", range="> 0")
    momentum: float = flag(0.9, "SGD momentum", range="[0, 1)")
    weight_decay: float = flag(2e-4, "SGD weight decay", range=">= 0")
    milestones: list[int] = flag([75, 90], "epochs at which the lr is multiplied by --lr-decay", range=">= 0")
    lr_decay: float = flag(0.1, "lr factor at each milestone", range="(0, 1]")
    cosine: bool = flag(False, "cosine lr schedule to zero instead of milestones")


@dataclass
class RuntimeSection:
    out: str = flag("runs/run", "run directory")
    seed: int = flag(0, "random seed", range=">= 0")
    device: str = flag("auto", "auto (cuda when present, else cpu; config.yaml keeps what it resolved to), cpu, "
                       "cuda, cuda:N (under torchrun: cpu -> gloo, cuda -> NCCL, one GPU per rank)")
    workers: int = flag(2, "DataLoader workers (folder datasets)", range=">= 0")
    amp: str = flag("none", "mixed precision of the forward passes: bf16, or fp16 with a gradient scaler (GPUs); "
                    "a bare --amp is bf16", choices=AMP_MODES, const="bf16", parse=parse_amp)
    compile: bool = flag(False, "torch.compile the student (pays on GPUs; slower on CPUs)")
    graphs: str = flag("off", "capture the training step: on = its losses under torch.compile(fullgraph=True) "
                       "(CUDA graphs on a GPU), fused optimizers, no host sync between log steps; auto = on for "
                       "CUDA, off elsewhere; off = eager", choices=GRAPH_MODES)
    sync_bn: bool = flag(False, "under torchrun: BatchNorm statistics over the global batch instead of each rank's")
    checkpoint_every: int = flag(0, "also checkpoint every N steps (0: at epoch ends only)", range=">= 0")
    log_every: int = flag(20, "TensorBoard step-logging interval", range=">= 0")
    log: str = flag("tensorboard", "where the scalars go besides metrics.jsonl: tensorboard (always), wandb, mlflow, "
                    "comma-separated (optional extras .[wandb] / .[mlflow]; W&B runs offline unless WANDB_MODE "
                    "says otherwise, MLflow writes RUN/mlruns unless MLFLOW_TRACKING_URI is set)",
                    parse=parse_loggers)
