"""`rnas retrain ARCH`: train a derived architecture from scratch with Eq. 3 (or a baseline, TRADES, MBN)."""
from pathlib import Path

from rnas.commands.training import add_training_arguments, main_rank, run_training


def add_arguments(parser) -> None:
    from rnas.engine.retrain import RetrainConfig

    add_training_arguments(parser, RetrainConfig, positional=("arch", "arch.json written by rnas derive"))


def run(args) -> int:
    from rnas.engine.retrain import RetrainConfig, run_retrain

    path = run_training(args, RetrainConfig, run_retrain, "retrain", positional="arch")
    if main_rank():
        print(f"retrain finished: {path}  (next: rnas eval {Path(path) / 'checkpoint.pt'})")
    return 0
