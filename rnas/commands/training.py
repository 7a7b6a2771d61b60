"""What `rnas search`, `rnas retrain` and `rnas teacher train` share: their flags from a config dataclass, the
run directory and config resolution (defaults < --config < flags, or the resumed run's config < flags), the
console progress, and how a stopped or broken run ends."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rnas.errors import TrainingDiverged, UserError


def run_training(args, config_cls, runner, command: str, positional: str | None = None) -> Path:
    """Shared by search / retrain / teacher train: resolve the config (defaults < --config < flags, or
    the resumed run's config < flags), check the run directory, then run."""
    from rnas.config import check_resume_overrides, read_run_config, resolve_config
    from rnas.runtime.rundir import prepare_run_dir

    if args.resume:
        if getattr(args, "out", None) is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise UserError(f"--out {args.out}: a resumed run continues in its own directory {args.resume}; "
                            "drop --out (or start a new run there without --resume)")
        run = prepare_run_dir(args.resume, resume=True)
        base = read_run_config(config_cls, run / "config.yaml", command)
        cfg = resolve_config(config_cls, args, base)
        cfg.out = str(run)
        check_resume_overrides(base, cfg)
    else:
        cfg = resolve_config(config_cls, args)
        if positional and not getattr(cfg, positional):
            raise UserError(f"rnas {command}: give {positional.upper()} (or --resume RUN)")
        run = prepare_run_dir(cfg.out, resume=False)
    from rnas.engine.loop import RunStopped
    from rnas.runtime.distributed import from_environment
    from rnas.runtime.rundir import StopSignal

    main_rank = from_environment().main
    with StopSignal() as stop:
        try:
            return runner(cfg, run, resume=bool(args.resume), callbacks=[ConsoleProgress()] if main_rank else [],
                          should_stop=lambda: stop.received or 0) or run
        except RunStopped as stopped:
            if main_rank:
                print(f"rnas: {stopped}", file=sys.stderr)
            raise SystemExit(128 + stopped.signum) from None
        except RuntimeError as err:  # a collective failed: another rank died or the network broke
            if from_environment().world == 1 or isinstance(err, TrainingDiverged):
                raise
            from rnas.runtime.distributed import collective_timeout
            from rnas.runtime.rundir import first_line

            message = str(err).lower()
            why = (f"no answer within {collective_timeout():g} s, RNAS_COLLECTIVE_TIMEOUT; a rank stopped or stuck"
                   if "timed out" in message or "timeout" in message else first_line(err, 100))
            print(f"rnas: error: rank {from_environment().rank}: lost the other ranks ({why}); "
                  f"the last checkpoint {run / 'checkpoint.pt'} is intact: rnas {command} --resume {run}",
                  file=sys.stderr)
            raise SystemExit(1) from None


class ConsoleProgress:
    """What the CLI shows of a run: on a terminal a progress bar per epoch; everywhere one line per epoch (loss,
    validation accuracy, throughput and the whole run's ETA) that stays on screen."""

    def __init__(self):
        self.terminal = sys.stderr.isatty()
        self.bar = None
        self.epoch_seconds: list[float] = []

    def on_step(self, job, terms) -> None:
        if not self.terminal:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=len(job.loader), initial=job.step - 1, leave=False,
                            desc=f"{job.command} {job.epoch + 1}/{job.cfg.epochs}")
        self.bar.update(1)

    def on_epoch(self, job, record: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.epoch_seconds.append(float(record.get("seconds", 0.0)))
        print(epoch_line(job.command, record, job.cfg.epochs, self.epoch_seconds), file=sys.stderr, flush=True)


def epoch_line(command: str, record: dict, epochs: int, epoch_seconds: list[float]) -> str:
    """One epoch's summary: loss, the shown metrics, throughput, and the run's ETA from the mean epoch time."""
    shown = {k: record[k] for k in ("val_acc", "expected_macs", "tau") if record.get(k) is not None}
    loss = next((record[k] for k in ("weight/total", "total") if k in record), float("nan"))
    left = max(0, epochs - record["epoch"] - 1)
    eta = sum(epoch_seconds) / len(epoch_seconds) * left if epoch_seconds else 0.0
    return (f"{command} epoch {record['epoch'] + 1}/{epochs}: loss {loss:.4f} "
            + " ".join(f"{k} {v:.4g}" for k, v in shown.items())
            + f" ({record['images_per_s']} img/s{f', ETA {duration(eta)}' if left else ', done'})")


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def main_rank() -> bool:
    from rnas.runtime.distributed import from_environment

    return from_environment().main


def add_training_arguments(parser, config_cls, positional: tuple[str, str] | None = None) -> None:
    """The flags of ``config_cls``, an optional positional, --config and --resume."""
    from rnas.config import add_config_flags

    if positional:
        parser.add_argument(positional[0], nargs="?", default=argparse.SUPPRESS, help=positional[1])
    add_config_flags(parser, config_cls, skip=(positional[0],) if positional else ())
    parser.add_argument("--config", metavar="FILE", help="YAML file whose keys are flag names; flags override it")
    parser.add_argument("--resume", metavar="RUN", help="resume the run in RUN exactly where it stopped")
