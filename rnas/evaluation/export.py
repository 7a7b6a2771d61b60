"""`rnas export`: a retrained network as one file that runs without rnas (TorchScript, torch.export .pt2 or
ONNX), verified by loading the written file back and comparing its logits with the PyTorch model's."""
from __future__ import annotations

import importlib.util
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch import nn

from rnas.errors import UserError
from rnas.runtime.rundir import check_output_file, no_space_in
from supernets import Network, build_model, derive

TOLERANCE = 1e-4  # max |logit difference| accepted; the exporters' graph rewrites stay near float32 rounding (~1e-7)
CHECK_BATCHES = (1, 3, 8)  # batch sizes a dynamic-batch file is verified on (1 and odd sizes catch baked-in shapes)
CHECK_SEED = 0


class ExportMismatch(RuntimeError):
    """The written file's logits differ from the PyTorch model's by more than the tolerance (exit code 1)."""


def _input_shape(model: nn.Module, input_size: int | None) -> tuple[int, int, int]:
    """(C, H, W) of one input image: the model's spec (rnas Network) unless ``input_size`` overrides H = W."""
    spec = getattr(model, "spec", None)
    size = input_size or getattr(spec, "input_size", None)
    if not size:
        raise UserError("--input-size: needed for a model without an rnas spec (give the image side in pixels)")
    return getattr(spec, "in_channels", 3), size, size


def _dynamic(batch: int | None):
    """torch.export's dynamic_shapes for the one image argument: a free batch dimension unless ``batch`` fixes it."""
    return None if batch else ({0: torch.export.Dim("batch", min=1)},)


def _example(shape: tuple[int, int, int], batch: int | None) -> torch.Tensor:
    # a dynamic batch is traced at 2: torch.export specialises a size-1 dimension to the constant 1
    return torch.rand(batch or 2, *shape, generator=torch.Generator().manual_seed(CHECK_SEED))


def _drop_unread_state(module: torch.fx.GraphModule) -> None:
    """Delete every parameter and buffer the graph never reads. torch.export carries all of a module's tensors
    along: a Network's search buffers (choice_valid, mask_select, the cost-model terms) and the unused clean
    branch of a Mixture BN would otherwise ride in the exported file."""
    read = set()
    for node in list(module.graph.nodes):
        if node.op == "get_attr":
            if node.users:
                read.add(node.target)
            else:
                module.graph.erase_node(node)
    for name in [n for n, _ in chain(module.named_parameters(), module.named_buffers()) if n not in read]:
        owner, _, attr = name.rpartition(".")
        delattr(module.get_submodule(owner), attr)
    module.delete_all_unused_submodules()
    module.recompile()


def standalone(model: nn.Module, input_size: int | None = None, batch: int | None = None) -> torch.fx.GraphModule:
    """The derived net of ``model`` as a clean module for export: (N, C, H, W) images in [0, 1] -> (N, classes)
    logits, normalisation inside, eval-mode computation frozen in (BN running statistics, the adversarial branch
    of a Mixture BN). It is ``model``'s forward traced by torch.export, so it holds only the tensors that forward
    reads, under their original names: no tau, mode, width logits, mask or cost buffers, tap points or hooks.
    A supernet is first derived at its argmax (weights sliced; same logits as its argmax mode). ``batch`` fixes
    the batch size (default: dynamic); ``input_size`` (H = W, pixels) defaults to the spec's."""
    if isinstance(model, Network) and model.searched_blocks:
        model = build_model(derive(model), supernet=model)
    shape, was_training = _input_shape(model, input_size), model.training
    try:  # the caller's model is traced in place (no copy: a Network's spec does not deep-copy) and restored
        model.eval()
        with torch.no_grad():
            module = torch.export.export(model, (_example(shape, batch),), dynamic_shapes=_dynamic(batch)).module()
    finally:
        model.train(was_training)
    _drop_unread_state(module)
    for m in module.modules():  # the graph is the eval one; exported modules refuse .eval(), so say so directly
        m.training = False
    module.input_shape = shape
    return module


# ---- formats: how each file is written and read back --------------------------------------------------------


def _quiet(call: Callable, *args):
    """``call(*args)`` without torch's deprecation / serialisation warnings (TorchScript is deprecated in
    torch 2.x; the verification below is what tells whether the file is right)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(*args)


def _torchscript_bytes(module, example, batch) -> bytes:
    # trace, not script: an exported graph module is straight-line code, which tracing records exactly
    traced = _quiet(torch.jit.trace, module, example)
    buffer = io.BytesIO()
    _quiet(torch.jit.save, traced, buffer)
    return buffer.getvalue()


def _pt2_bytes(module, example, batch) -> bytes:
    program = torch.export.export(module, (example,), dynamic_shapes=_dynamic(batch))
    buffer = io.BytesIO()
    _quiet(torch.export.save, program, buffer)
    return buffer.getvalue()


def _onnx_bytes(module, example, batch) -> bytes:
    program = torch.export.export(module, (example,), dynamic_shapes=_dynamic(batch))
    onnx_program = _quiet(lambda: torch.onnx.export(program, (example,), dynamo=True, input_names=["images"],
                                                    output_names=["logits"], verbose=False))
    return onnx_program.model_proto.SerializeToString()  # the weights inside: one self-contained file


def _read_torchscript(path: Path):
    return _quiet(torch.jit.load, str(path)), "torch.jit.load"


def _read_pt2(path: Path):
    return _quiet(torch.export.load, str(path)).module(), "torch.export.load"


def _read_onnx(path: Path):
    """(run, checker) of an ONNX file: onnxruntime when installed; else only onnx.checker (run is None)."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    try:
        import onnxruntime
    except ImportError:  # optional: the structural check above is then all that can be done
        return None, "onnx.checker"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])), "onnxruntime"


@dataclass(frozen=True)
class Format:
    to_bytes: Callable  # (standalone module, example input, batch or None) -> the file's bytes
    read: Callable  # path -> (callable on a batch or None, what checked it)
    exporter: str
    use: str
    needs: tuple[str, ...] = ()


FORMATS = {
    "onnx": Format(_onnx_bytes, _read_onnx, "torch.onnx.export(dynamo=True) of the torch.export program",
                   "ONNX Runtime, TensorRT, OpenVINO, browsers", ("onnx", "onnxscript")),
    "torchscript": Format(_torchscript_bytes, _read_torchscript, "torch.jit.trace + torch.jit.save",
                          "libtorch (C++) and Python without rnas; deprecated upstream, prefer pt2"),
    "pt2": Format(_pt2_bytes, _read_pt2, "torch.export.export + torch.export.save",
                  "torch.export.load in Python, AOTInductor / ExecuTorch"),
}


# ---- the command ---------------------------------------------------------------------------------------------


def max_abs_difference(run: Callable, model: nn.Module, shape: tuple[int, int, int], batches) -> float:
    """max |run(x) - model(x)| over random images x in [0, 1] of each batch size (fixed seed, CPU, float32)."""
    generator = torch.Generator().manual_seed(CHECK_SEED)
    worst = 0.0
    with torch.no_grad():
        for n in batches:
            x = torch.rand(n, *shape, generator=generator)
            worst = max(worst, (run(x) - model(x)).abs().max().item())
    return worst


def load_retrained(checkpoint: str | Path) -> nn.Module:
    """The network of an `rnas retrain` checkpoint (rnas.load_model); anything else is a one-line UserError."""
    from rnas.evaluation.evaluate import load_model
    from rnas.runtime.rundir import TRAIN_CHECKPOINT, load_checkpoint

    ckpt = load_checkpoint(Path(checkpoint))
    if not isinstance(ckpt, dict) or ckpt.get("format") != TRAIN_CHECKPOINT:
        raise UserError(f"{checkpoint}: not an rnas retrain checkpoint; rnas export takes RUN/checkpoint.pt "
                        "written by rnas retrain")
    if ckpt.get("kind") != "retrain":
        raise UserError(f"{checkpoint}: a {ckpt.get('kind')} checkpoint (rnas teacher train); rnas export takes "
                        "the checkpoint of rnas retrain")
    return load_model(checkpoint)


MAX_INPUT_SIZE, MAX_BATCH = 4096, 4096  # a traced example of 4096 x 3 x 4096² floats is already 800 GiB


def _check_request(fmt: str, out: Path, input_size: int | None = None, batch: int | None = None) -> None:
    """Fail before anything is loaded: unknown format, missing exporter packages, -o taken or unwritable,
    an input size or batch no machine could trace."""
    for flag_, value, limit in (("--input-size", input_size, MAX_INPUT_SIZE), ("--batch", batch, MAX_BATCH)):
        if value is not None and value > limit:
            raise UserError(f"{flag_} {value}: at most {limit}")
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown (choose one of {', '.join(FORMATS)})")
    missing = [p for p in FORMATS[fmt].needs if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"--format {fmt}: needs {' and '.join(missing)}: pip install 'rnas[export]'")
    check_output_file(out, "-o", None, "rnas export")


def _write_new(partial: Path, data: bytes, out: Path) -> None:
    """``data`` as the file ``partial`` (made in memory first: the exporters' own writers turn a full disk into
    errors that do not say so); a full disk is one line naming ``out``."""
    with no_space_in(out, kept=f"nothing was written at {out.name}", then="free space, then run rnas export again"), \
            open(partial, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def publish(partial: Path, out: Path) -> None:
    """Give the finished ``partial`` file the name ``out`` unless a file of that name appeared meanwhile (a
    second rnas export to the same -o): a hard link is created atomically or not at all."""
    taken = UserError(f"-o {out}: written by another process while this export ran; it was kept, nothing replaced")
    try:
        os.link(partial, out)
    except FileExistsError:
        raise taken from None
    except OSError:  # a file system without hard links: the check and the rename are then two steps
        if out.exists():
            raise taken from None
        os.replace(partial, out)


def export(checkpoint: str | Path, fmt: str, out: str | Path, input_size: int | None = None,
           batch: int | None = None, tolerance: float = TOLERANCE) -> dict:
    """Write the standalone net of an rnas retrain checkpoint as ``fmt`` (onnx, torchscript, pt2) to ``out``,
    read the file back and compare its logits with the PyTorch model's on random [0, 1] images (batch sizes
    1, 3, 8, or ``batch`` when fixed). Nothing is left at ``out`` unless the difference is within ``tolerance``
    (else ExportMismatch). Returns what was written and how it was checked."""
    out = Path(out)
    _check_request(fmt, out, input_size, batch)
    model = load_retrained(checkpoint)
    module = standalone(model, input_size, batch)
    shape, form = module.input_shape, FORMATS[fmt]
    batches = (batch,) if batch else CHECK_BATCHES
    # the file appears at `out` only once it is verified; this process's own partial file
    partial = out.with_name(f".partial-{os.getpid()}-{out.name}")
    try:
        _write_new(partial, form.to_bytes(module, _example(shape, batch), batch), out)
        run, checked_with = form.read(partial)
        diff = None if run is None else max_abs_difference(run, model, shape, batches)
        if diff is not None and diff > tolerance:
            raise ExportMismatch(f"{out}: max abs difference {diff:.3g} between the {fmt} file ({checked_with}) and "
                                 f"the PyTorch model exceeds the tolerance {tolerance:g}; nothing written")
        publish(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return {"path": str(out), "format": fmt, "exporter": form.exporter, "checked_with": checked_with,
            "input_shape": [batch or "batch", *shape], "num_classes": model.num_classes,
            "batches": list(batches), "max_abs_difference": diff, "tolerance": tolerance}


def format_result(result: dict) -> str:
    """The command's report: what was written, then the verification (``max abs difference: X``)."""
    shape = ", ".join(map(str, result["input_shape"]))
    lines = [f"wrote {result['path']} ({result['format']}: {result['exporter']}); input images [{shape}] in [0, 1] "
             f"-> logits [{result['input_shape'][0]}, {result['num_classes']}]"]
    if result["max_abs_difference"] is None:
        lines.append("checked with onnx.checker only: onnxruntime is not installed, so the outputs were not "
                     "compared (pip install onnxruntime)")
    else:
        batches = ", ".join(map(str, result["batches"]))
        lines.append(f"max abs difference: {result['max_abs_difference']:.3g} ({result['checked_with']} vs PyTorch, "
                     f"batch sizes {batches}; tolerance {result['tolerance']:g})")
    return "\n".join(lines)
