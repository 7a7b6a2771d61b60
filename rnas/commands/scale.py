"""`rnas scale`: RobustScaling: a WRN-A or RobustResNet-A layout for a MAC budget (--flops), or a derived net
grown to a budget (ARCH --macs)."""
from pathlib import Path

from rnas.errors import UserError


def add_arguments(parser) -> None:
    parser.add_argument("arch", nargs="?", metavar="ARCH", help="an arch.json to grow (with --macs)")
    parser.add_argument("--flops", metavar="MACS",
                       help="the budget in multiply-accumulates, e.g. 5G, 10G (the paper's A1-A4: 5G/10G/20G/40G)")
    parser.add_argument("--macs", metavar="MACS", help="with ARCH: the budget to grow it to, e.g. 20M")
    parser.add_argument("--base", choices=["wrn", "robust_res"],
                       help="with --flops: the block the layout is built from: wrn (WRN-A, basic blocks) or "
                            "robust_res (RobustResNet-A, RobustResBlocks); default wrn")
    parser.add_argument("--width-only", action="store_true", help="with ARCH: reach the budget by widening alone")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="also write the result to FILE: with --flops, FILE.yaml is a teacher file that --teacher "
                             "takes (teacher: the preset's name where the paper has one, else the rule's; the "
                             "layout beside it), any other name JSON; with ARCH the grown arch.json")


def run(args) -> int:
    import json

    from rnas.config import parse_macs
    from rnas.nets.scaling import format_scale_report, scale_report
    from rnas.runtime.rundir import atomic_write_json, check_output_file

    layout = args.arch is None and args.flops is not None and args.macs is None
    grow = args.arch is not None and args.macs is not None and args.flops is None
    if not (layout or grow):
        raise UserError("rnas scale: give --flops BUDGET (a WRN-A layout), or ARCH --macs BUDGET (grow a derived net)")
    if layout and args.width_only:
        raise UserError("--width-only: grows a derived net (ARCH --macs); a --flops layout follows the paper's rule")
    if grow and args.base is not None:
        raise UserError(f"--base {args.base}: chooses the block of a --flops layout; ARCH keeps its own blocks")
    flag, text = ("--flops", args.flops) if args.arch is None else ("--macs", args.macs)
    if args.output:
        out = Path(args.output)
        if args.arch is not None and out.resolve() == Path(args.arch).resolve():
            raise UserError(f"-o {out}: the input arch file; write the grown net elsewhere")
        check_output_file(out, "-o", lambda path: bool({"scaled_from", "target_macs"} & _output_keys(path)),
                          "an earlier rnas scale output")
    try:
        target = parse_macs(text)
    except UserError as err:
        raise UserError(f"{flag}: {err}") from None
    if args.arch is None:
        if target < 1e6:
            raise UserError(f"--flops {args.flops}: a budget in MACs, e.g. 5G (the smallest WRN-A costs ~0.1G)")
        report = scale_report(target, base=args.base or "wrn")
        print(json.dumps(report, indent=1) if args.json else format_scale_report(report))
    else:
        from rnas.nets.scaling import scale_arch
        from supernets import read_arch

        arch, source = read_arch(args.arch)
        report = scale_arch(arch, target, source, args.width_only)
        stages = "-".join(str(s["depth"]) for s in report["spec"]["stages"])
        print(f"{source}: {arch['macs'] / 1e6:.4g}M MACs -> {report['macs'] / 1e6:.4g}M MACs, "
              f"{report['params'] / 1e6:.3f}M params ({report['scaled_from']['rule']}; depths {stages}; widths "
              f"{' '.join(map(str, report['widths']))})")
        if not args.output:
            print("(give -o FILE to write the arch file for rnas retrain)")
    if args.output and args.arch is None and Path(args.output).suffix in (".yaml", ".yml"):
        import yaml

        from rnas.runtime.rundir import atomic_write_text

        name = report.get("preset", report["rule"])["teacher"]
        atomic_write_text(Path(args.output), f"# rnas scale --flops {args.flops}: use with --teacher {args.output}\n"
                                             + yaml.safe_dump({"teacher": name, **report}, sort_keys=False))
        print(f"wrote {args.output} (--teacher {args.output} is {name})")
    elif args.output:
        atomic_write_json(Path(args.output), report)
        print(f"wrote {args.output}")
    return 0


def _output_keys(path: Path) -> set:
    """The top-level keys of a JSON or YAML file (an earlier rnas scale output has target_macs or scaled_from)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return set()
    return set(data) if isinstance(data, dict) else set()
