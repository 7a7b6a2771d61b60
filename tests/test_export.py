"""`rnas export` and `rnas.evaluation.export.standalone` on a tiny retrained checkpoint."""
import contextlib
import errno
import functools
import io
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import TINY_SPACE, main_in_process, write_cifar10, write_space, write_teacher

import rnas
import rnas.evaluation.export
from rnas.evaluation.export import TOLERANCE, standalone
from search_spaces import parse_space
from supernets import Network
from supernets.builder import TapPoint

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


SEARCH_STATE = ("tau", "mode", "mask", "choice_valid", "var_counts", "var_block", "mac_", "param_coef",
                "param_index", "width_logits", "searched_blocks", "spec", "rnas_checkpoint")


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """RUN/checkpoint.pt of a 1-epoch retrain of a 1-epoch search on tiny data (the searched fixture's recipe)."""
    root = tmp_path_factory.mktemp("export")
    write_cifar10(root / "data")
    write_teacher(root / "models")
    write_space(root / "tiny.yaml")
    data = ("--data-dir", root / "data", "--val-size", 50, "--batch-size", 25, "--epochs", 1)
    code, err = main_in_process("search", "--space", root / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt",
                                "tiny", "--model-dir", root / "models", *data, "--out", root / "search")
    assert code == 0, err
    assert main_in_process("derive", root / "search")[0] == 0
    code, err = main_in_process("retrain", root / "search" / "arch.json", "--baseline", "ce", *data,
                                "--out", root / "retrain")
    assert code == 0, err
    return root / "retrain" / "checkpoint.pt"


def run_export(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `rnas export ARGS` in this process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code, err = main_in_process("export", *args)
    return code, out.getvalue(), err


def load_exported(fmt: str, path):
    """The written file as a function of a batch, through its own runtime (not rnas)."""
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    if fmt == "pt2":
        return torch.export.load(str(path)).module()
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
def test_exported_file_reproduces_the_model(retrained, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    path = tmp_path / f"net.{fmt}"
    code, out, err = run_export(retrained, "--format", fmt, "-o", path)
    assert code == 0, err
    printed = float(re.search(r"max abs difference: (\S+) ", out)[1])
    assert 0 <= printed <= TOLERANCE
    assert not list(tmp_path.glob(".partial-*"))  # only the verified file is left
    model, run = rnas.load_model(retrained), load_exported(fmt, path)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for batch in (1, 3, 5):  # dynamic batch dimension: sizes it was not traced at
            x = torch.rand(batch, 3, 32, 32, generator=generator)
            expected, got = model(x), run(x)
            assert got.shape == expected.shape == (batch, 10)
            assert (got - expected).abs().max().item() <= 1e-5


def test_standalone_holds_only_the_derived_net(retrained):
    model = rnas.load_model(retrained)
    assert hasattr(model, "tau") and hasattr(model, "mode") and "mask_select" in dict(model.named_buffers())
    module = standalone(model)
    names = [*module.state_dict(), *(n for n, _ in module.named_buffers()), *(n for n, _ in module.named_parameters())]
    assert names and not [n for n in names if any(s in n for s in SEARCH_STATE)]
    assert not [a for a in SEARCH_STATE if hasattr(module, a)]
    assert not any(isinstance(m, TapPoint) or m.training for m in module.modules())
    hooks = [h for m in module.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    assert {h.__module__.split(".")[0] for h in hooks} <= {"torch"}  # only torch.export's own input checks
    original = model.state_dict()
    assert all(torch.equal(value, original[name]) for name, value in module.state_dict().items())
    assert {"normalize.mean", "normalize.std"} <= set(module.state_dict())  # inputs stay [0, 1] images
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(module(x), model(x))
    assert not model.training  # the caller's model is left as it was


def test_standalone_of_a_supernet_is_its_argmax_net():
    torch.manual_seed(0)
    supernet = Network(parse_space(TINY_SPACE, "tiny"))
    with torch.no_grad():
        for logits in supernet.arch_parameters():
            logits.normal_()
    module = standalone(supernet)
    assert supernet.training  # restored
    supernet.eval()  # eval = argmax mode
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert (module(x) - supernet(x)).abs().max().item() <= 1e-5
    assert not [n for n, _ in module.named_buffers() if "mask" in n or "choice" in n]


def test_fixed_batch_and_input_size(retrained, tmp_path):
    path = tmp_path / "net.pt2"
    code, out, err = run_export(retrained, "--format", "pt2", "-o", path, "--batch", 2, "--input-size", 40)
    assert code == 0, err
    assert "input images [2, 3, 40, 40]" in out and "batch sizes 2;" in out
    run, model = torch.export.load(str(path)).module(), rnas.load_model(retrained)
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        assert (run(x) - model(x)).abs().max().item() <= 1e-5
    with pytest.raises(AssertionError, match="size"):
        run(torch.rand(3, 3, 40, 40))  # the batch size is part of the file


def test_overwrite_is_refused(retrained, tmp_path):
    path = tmp_path / "net.pt2"
    path.write_bytes(b"keep me")
    code, out, err = run_export(retrained, "--format", "pt2", "-o", path)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "already exists" in err and str(path) in err and path.read_bytes() == b"keep me"
    folder = tmp_path / "exports"
    folder.mkdir()
    code, out, err = run_export(retrained, "--format", "pt2", "-o", folder)
    assert (code, out) == (2, "") and err.strip() == f"rnas: error: -o {folder}: is a directory (give a file name)"
    assert list(folder.iterdir()) == []


def test_other_checkpoints_are_refused(retrained, tmp_path):
    teacher = tmp_path / "teacher.pt"
    torch.save({"format": "rnas-train-1", "kind": "teacher"}, teacher)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    search = retrained.parent.parent / "search" / "checkpoint.pt"
    for bad, words in ((teacher, "teacher"), (garbage, str(garbage)), (search, "not an rnas retrain checkpoint"),
                       (tmp_path / "missing.pt", "no such checkpoint")):
        out = tmp_path / "net.pt2"
        code, stdout, err = run_export(bad, "--format", "pt2", "-o", out)
        assert code == 2 and err.count("\n") == 1 and err.startswith("rnas: error: ") and words in err, err
        assert not out.exists() and stdout == ""


def test_numerical_mismatch_exits_1_and_writes_nothing(retrained, tmp_path, monkeypatch):
    exporter = rnas.evaluation.export
    monkeypatch.setattr(exporter, "export", functools.partial(exporter.export, tolerance=-1.0))
    path = tmp_path / "net.torchscript"
    code, out, err = run_export(retrained, "--format", "torchscript", "-o", path)
    assert code == 1 and err.count("\n") == 1 and "max abs difference" in err and "tolerance -1" in err
    assert not path.exists() and not list(tmp_path.iterdir())


def full_disk_line(path) -> str:
    return (f"rnas: error: {path}: No space left on device while writing it; nothing was written at {path.name} "
            "(free space, then run rnas export again)")


def test_a_full_disk_is_one_line_and_leaves_nothing(retrained, tmp_path, monkeypatch):
    """ENOSPC as a full disk or quota reports it (through fsync): one line naming -o, no file, no partial."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "net.pt2"
    code, out, err = run_export(retrained, "--format", "pt2", "-o", path)
    assert code == 2 and out == "" and err.strip() == full_disk_line(path), err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_a_really_full_disk_is_one_line(retrained, tmp_path, fmt):
    """A tmpfs too small for the file (where the machine lets the tests mount one): the command, in its own
    process, says so in one line (torch's own writers said 'unexpected pos' or left a traceback) and leaves
    the disk as it was."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", disk], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        path = disk / f"net.{fmt}"
        process = subprocess.run([sys.executable, "-m", "rnas", "export", str(retrained), "--format", fmt, "-o",
                                  str(path)], capture_output=True, text=True, timeout=120)
        assert process.returncode == 2 and process.stderr.strip() == full_disk_line(path), process.stderr
        assert not list(disk.iterdir())
    finally:
        subprocess.run(["umount", disk], check=True)


def test_onnx_without_onnxruntime_says_checker_only(retrained, tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    path = tmp_path / "net.onnx"
    code, out, err = run_export(retrained, "--format", "onnx", "-o", path)
    assert code == 0, err
    assert "checked with onnx.checker only" in out and "max abs difference" not in out and path.stat().st_size > 0


def test_help_renders():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code, _ = main_in_process("export", "--help")
    assert code == 0 and "usage: rnas export" in out.getvalue()
    assert all(f"{fmt}:" in out.getvalue() for fmt in rnas.evaluation.export.FORMATS)
