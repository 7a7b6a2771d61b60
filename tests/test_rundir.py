"""Checkpoints are never half-written; RNG state round-trips through a weights_only load."""
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from rnas.errors import UserError
from rnas.runtime.rundir import atomic_save, load_checkpoint, rng_state, set_rng_state


def test_failure_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"epoch": 1, "w": torch.arange(5)}, path)

    def broken_save(obj, fh):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    """A child rewrites a ~40 MB checkpoint in a loop; after its first save we SIGKILL it at several
    moments (mid-write with high probability) and the file left behind always loads whole."""
    path = tmp_path / "checkpoint.pt"
    child = textwrap.dedent(f"""
        import pathlib, sys, torch
        from rnas.runtime.rundir import atomic_save
        big = torch.zeros(10_000_000)
        for i in range(10_000):
            big[0] = i
            atomic_save({{"i": i, "big": big}}, pathlib.Path({str(path)!r}))
            if i == 0:
                print("saved", flush=True)
    """)
    for delay in (0.01, 0.06, 0.12):
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)
        assert ckpt["big"][0].item() == ckpt["i"] and ckpt["big"].numel() == 10_000_000


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"x": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="damaged or truncated checkpoint"):
        load_checkpoint(path)


def test_rng_state_round_trip_through_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    atomic_save({"rng": rng_state()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
