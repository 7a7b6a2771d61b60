"""`rnas derive RUN`: write RUN/arch.json (or one file per budget) from a search run and print it."""
from rnas.config.defaults import TUTOR_DERIVE
from rnas.errors import UserError


def add_arguments(parser) -> None:
    parser.add_argument("run", metavar="RUN", help="search run directory")
    parser.add_argument("--mac-target", metavar="MACS",
                        help="budgets, e.g. 5M,6M,7M: one RUN/arch-<budget>.json each, the most probable net "
                             "that fills each budget (greedy by width probabilities)")
    parser.add_argument("--graph", action="store_true",
                        help="also write each arch file's net and tutors as GraphML beside it (RUN/arch.graphml)")
    parser.add_argument("--tutor-derive", choices=("argmax", "balanced", "monotone"), default=TUTOR_DERIVE,
                        help="tutors from the searched tutor logits: balanced (default: each teacher layer used at "
                             "most ceil(n_s/n_t) times, the most probable such assignment, Hungarian), argmax per "
                             "student layer (the paper) or monotone (tutor depth never decreases with student "
                             "depth, dynamic programming); a derivation other than balanced adds its name to the "
                             "file (arch-argmax.json)")
    parser.add_argument("--widths-from", metavar="ARCH",
                        help="take the widths of this arch.json of the same space (e.g. to compare tutor "
                             "searches on one net); writes RUN/arch-widths.json")


def run(args) -> int:
    from rnas.config import parse_macs
    from rnas.nets.derivation import format_arch, write_archs

    targets = [parse_macs(t) for t in args.mac_target.split(",")] if args.mac_target else [None]
    if args.widths_from and args.mac_target:
        raise UserError("--widths-from and --mac-target both choose the widths: give one")
    for path, arch in write_archs(args.run, targets, graph=args.graph, tutor_derive=args.tutor_derive,
                                  widths_from=args.widths_from):
        print(format_arch(arch))
        print(f"\nwrote {path}" + (f"\nwrote {path.with_suffix('.graphml')}" if args.graph else "") + "\n")
    return 0
