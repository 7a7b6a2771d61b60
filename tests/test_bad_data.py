"""Bad CIFAR batches: each is one line naming the file and the problem, before any run directory exists;
a batch that would run code when unpickled is refused without running it."""
import os
import pickle
import shutil

import numpy as np
import pytest
from helpers import main_in_process, write_cifar10, write_space

from rnas.data import load_tensors
from rnas.errors import UserError


class _Exploit:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def _pickled(obj) -> bytes:
    return pickle.dumps(obj)


def _batch(n: int = 5, **changes) -> bytes:
    batch = {"data": np.zeros((n, 3072), np.uint8), "labels": [i % 10 for i in range(n)], "batch_label": "b"}
    batch.update(changes)
    return _pickled({k: v for k, v in batch.items() if v is not None})


CASES = {  # what data_batch_3 holds -> the message after its path
    "truncated": (_batch()[:200], "data_batch_3: truncated or not a pickle (pickle data was truncated)"),
    "zero_bytes": (b"", "data_batch_3: empty file (0 bytes)"),
    "json": (b'{"data": [], "labels": []}\n', "data_batch_3: truncated or not a pickle (invalid load key, '{'.)"),
    "text": (b"10000 images\n", "data_batch_3: truncated or not a pickle (could not find MARK)"),
    "not_a_dict": (_pickled([1, 2, 3]), "data_batch_3: a pickled list, not a CIFAR batch (a dict with 'data' and "
                                         "'labels')"),
    "no_data": (_batch(data=None), "data_batch_3: no 'data' entry (keys: labels, batch_label)"),
    "no_labels": (_batch(labels=None), "data_batch_3: no 'labels' entry (keys: data, batch_label)"),
    "length": (_batch(data=np.zeros(1000, np.uint8)),
               "data_batch_3: 'data' holds 1000 values, not a multiple of 3072 (3x32x32 per image)"),
    "shape": (_batch(data=np.zeros((6, 2048), np.uint8)),
              "data_batch_3: 'data' has shape (6, 2048), expected (N, 3072)"),
    "count": (_batch(labels=[0, 1, 2, 3]), "data_batch_3: 5 images but 4 labels"),
    "label_10": (_batch(labels=[0, 1, 10, 3, 4]), "data_batch_3: labels outside [0, 10) (found 10 at index 2)"),
    "label_negative": (_batch(labels=[0, 1, 2, 3, -1]), "data_batch_3: labels outside [0, 10) (found -1 at index 4)"),
    "data_str": (_batch(data="pixels"), "data_batch_3: 'data' is a str, expected a uint8 array of N x 3072 pixels"),
    "data_float": (_batch(data=np.zeros((5, 3072))),
                   "data_batch_3: 'data' is a float64 array, expected a uint8 array of N x 3072 pixels"),
    "pixels": (_batch(data=np.full((5, 3072), 256)), "data_batch_3: 'data' values outside [0, 255]"),
    "labels_str": (_batch(labels="01234"), "data_batch_3: 'labels' is a str, expected a list of integers"),
    "labels_float": (_batch(labels=[0.0, 1.5, 2.0, 3.0, 4.0]),
                     "data_batch_3: 'labels' is a float64 array, expected a list of integers"),
    "global_eval": (_batch(labels=_Eval()), "data_batch_3: refused: the pickle asks for the forbidden global "
                                            "builtins.eval (a CIFAR batch holds only dicts, lists, strings and "
                                            "numpy arrays)"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    write_cifar10(root / "data", n_per_batch=5)
    write_space(root / "tiny.yaml")
    return root


def bad_copy(good, tmp_path, content: bytes):
    data = tmp_path / "data"
    shutil.copytree(good / "data", data)
    (data / "cifar-10-batches-py" / "data_batch_3").write_bytes(content)
    return data


def assert_cli_refuses(good, data, out, message: str) -> None:
    code, err = main_in_process("search", "--space", good / "tiny.yaml", "--teacher", "wrn-10-1", "--random-teacher",
                                "--data", "cifar10", "--data-dir", data, "--val-size", 5, "--batch-size", 4,
                                "--epochs", 1, "--out", out)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert err.startswith("rnas: error: ") and str(data / "cifar-10-batches-py" / "data_batch_") in err
    assert not out.exists()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_batch_is_one_line_naming_file_and_problem(good, tmp_path, case):
    content, message = CASES[case]
    data = bad_copy(good, tmp_path, content)
    with pytest.raises(UserError) as info:
        load_tensors("cifar10", str(data), "train")
    assert str(info.value) == f"{data / 'cifar-10-batches-py'}/{message}"
    assert_cli_refuses(good, data, tmp_path / "out", message)


def test_a_batch_that_runs_code_is_refused_without_running_it(good, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    data = bad_copy(good, tmp_path, _batch(batch_label=_Exploit(f"touch {marker}")))
    path = data / "cifar-10-batches-py" / "data_batch_3"
    with pytest.raises(UserError) as info:
        load_tensors("cifar10", str(data), "train")
    forbidden = f"{os.system.__module__}.system"  # posix.system
    assert str(info.value) == (f"{path}: refused: the pickle asks for the forbidden global {forbidden} "
                               "(a CIFAR batch holds only dicts, lists, strings and numpy arrays)")
    assert not marker.exists()
    assert_cli_refuses(good, data, tmp_path / "out", f"forbidden global {forbidden}")
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the file really is an exploit: plain pickle runs it
    assert marker.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files with permission 000")
def test_an_unreadable_batch_is_one_line(good, tmp_path):
    data = bad_copy(good, tmp_path, _batch())
    (data / "cifar-10-batches-py" / "data_batch_3").chmod(0)
    message = "data_batch_3: unreadable (Permission denied)"
    with pytest.raises(UserError, match=message):
        load_tensors("cifar10", str(data), "train")
    assert_cli_refuses(good, data, tmp_path / "out", message)


def test_cifar100_fine_labels_are_checked_against_100_classes(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    batch = {"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 99, 100], "coarse_labels": [0, 1, 2]}
    (base / "train").write_bytes(_pickled(batch))
    with pytest.raises(UserError) as info:
        load_tensors("cifar100", str(tmp_path), "train")
    assert str(info.value) == f"{base / 'train'}: fine_labels outside [0, 100) (found 100 at index 2)"
    batch["fine_labels"] = [0, 99, 50]
    (base / "train").write_bytes(_pickled(batch))
    assert load_tensors("cifar100", str(tmp_path), "train").labels.tolist() == [0, 99, 50]


def test_an_unreadable_batch_is_one_line_also_as_root(good, tmp_path, monkeypatch):
    data = bad_copy(good, tmp_path, _batch())
    path = data / "cifar-10-batches-py" / "data_batch_3"

    def refuse(file, *args, **kwargs):  # what open() does on a permission-000 file for a non-root user
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr("rnas.data.readers.open", refuse, raising=False)
    with pytest.raises(UserError) as info:
        load_tensors("cifar10", str(data), "train")
    assert str(info.value) == f"{data / 'cifar-10-batches-py' / 'data_batch_1'}: unreadable (Permission denied)"
    assert path.is_file()
    assert_cli_refuses(good, data, tmp_path / "out", "data_batch_1: unreadable (Permission denied)")
