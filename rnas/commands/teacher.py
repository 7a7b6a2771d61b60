"""`rnas teacher train`: adversarially train a robust teacher (RobustBench layout + accuracy json)."""
from rnas.commands.args import Parser
from rnas.commands.training import add_training_arguments, main_rank, run_training


def add_arguments(parser) -> None:
    from rnas.engine.teacher_train import TeacherTrainConfig

    sub = parser.add_subparsers(dest="teacher_command", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="adversarially train a robust teacher (RobustBench layout + accuracy json)")
    add_training_arguments(train, TeacherTrainConfig)


def run(args) -> int:
    from rnas.engine.teacher_train import TeacherTrainConfig, run_teacher_training

    path = run_training(args, TeacherTrainConfig, run_teacher_training, "teacher train")
    if main_rank():
        print(f"teacher written: {path}")
    return 0
