"""`rnas search`: search a supernet with cross-layer distillation from a teacher."""
from rnas.commands.training import add_training_arguments, main_rank, run_training


def add_arguments(parser) -> None:
    from rnas.engine.search import SearchConfig

    add_training_arguments(parser, SearchConfig)


def run(args) -> int:
    from rnas.engine.search import SearchConfig, run_search

    path = run_training(args, SearchConfig, run_search, "search")
    if main_rank():
        print(f"search finished: {path}  (next: rnas derive {path})")
    return 0
