"""`rnas export CKPT`: the retrained net as one ONNX / TorchScript / .pt2 file, verified against the model."""
import sys

from rnas.commands.args import positive


def add_arguments(parser) -> None:
    from rnas.evaluation.export import FORMATS

    parser.add_argument("checkpoint", metavar="CKPT", help="RUN/checkpoint.pt of rnas retrain")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS),
                        help="; ".join(f"{name}: {f.use}" for name, f in FORMATS.items()))
    parser.add_argument("-o", "--out", required=True, metavar="FILE", help="file to write (must not exist)")
    parser.add_argument("--input-size", type=positive, metavar="N",
                        help="image side in pixels (default: the architecture's input size)")
    parser.add_argument("--batch", type=positive, metavar="N",
                        help="fix the batch size to N (default: a dynamic batch dimension)")


def run(args) -> int:
    from rnas.evaluation.export import ExportMismatch, export, format_result

    try:
        result = export(args.checkpoint, args.format, args.out, input_size=args.input_size, batch=args.batch)
    except ExportMismatch as err:  # the exporter changed the numbers: not bad input, so exit 1, not 2
        print(f"rnas: error: {err}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0
