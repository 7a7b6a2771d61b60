"""`rnas eval CKPT`: accuracy under attacks (table + optional JSON), resumable."""
import argparse

from rnas.errors import UserError


def add_arguments(parser) -> None:
    from rnas.config import add_config_flags
    from rnas.evaluation.evaluate import EvalConfig

    parser.add_argument("checkpoint", metavar="CKPT", nargs="?", default=argparse.SUPPRESS,
                          help="checkpoint of rnas retrain / teacher train (not needed with --list-attacks)")
    parser.add_argument("--list-attacks", action="store_true",
                          help="print the registered attacks (name, threat model, default eps, steps) and exit")
    add_config_flags(parser, EvalConfig, skip=("checkpoint",))
    parser.add_argument("--resume", action="store_true",
                          help="continue the interrupted evaluation whose progress --json OUT keeps in OUT.state.json "
                               "(same checkpoint and flags), without redoing its finished batches")


def run(args) -> int:
    from rnas.config import resolve_config
    from rnas.evaluation.evaluate import EvalConfig, run_eval

    if args.list_attacks:
        from rnas.robust.attacks import format_attack_table

        print(format_attack_table())
        return 0
    if not getattr(args, "checkpoint", None):
        raise UserError("rnas eval: give CKPT, the checkpoint to evaluate (or --list-attacks to list the attacks)")
    try:
        run_eval(resolve_config(EvalConfig, args), resume=args.resume)
    except KeyboardInterrupt:  # run_eval has said where its progress is kept for --resume
        import signal

        raise SystemExit(128 + signal.SIGINT) from None
    return 0
