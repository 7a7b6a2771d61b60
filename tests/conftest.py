import dataclasses
import os
from pathlib import Path

import pytest
import torch

# an unexpected exception that reaches rnas.cli.main's guard is raised, not turned into "internal error", so
# that a test (in this process or in an rnas subprocess it starts) fails on it
os.environ["RNAS_DEBUG"] = "1"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` on N cores: one intra-op thread per worker and per process a test starts. N workers of
    # torch's default (one thread per core) oversubscribe the cores, and the spin-waits of many small ops then
    # slow a test tenfold or more (a full AutoAttack on a tiny model: 5 s alone, 99 s beside another worker).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from search_spaces import available_spaces, load_space, parse_space


def tiny_spec(block: dict, stem_type: str = "conv", widths=((8, 4), (12, 8, 4)), input_size: int = 16):
    """A two-stage spec small enough for exhaustive checks."""
    return parse_space({
        "name": f"tiny-{block['type']}", "input_size": input_size, "num_classes": 5,
        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
        "stem": {"type": stem_type, "channels": 8, "stride": 1},
        "block": block,
        "stages": [{"depth": 2, "stride": 1, "widths": list(widths[0])},
                   {"depth": 2, "stride": 2, "widths": list(widths[1])}],
    }, "tiny")


TINY_BLOCKS = {
    "mbconv": {"type": "mbconv", "kernel": 3, "expansion": 3, "act": "hswish"},
    "basic": {"type": "basic", "kernel": 3},
    "robust_res": {"type": "robust_res", "scales": 4, "mid_ratio": 1.0, "se_reduction": 2},
}


def small_input(spec):
    """Built-in ImageNet spaces are checked at 64x64 to stay fast; CIFAR ones at their own 32x32."""
    return dataclasses.replace(spec, input_size=64) if spec.input_size > 64 else spec


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """Random BN affine parameters and running statistics, so that BN is never the identity."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


def randomize(net, logit_scale: float = 1.0):
    """Random BN statistics and random arch logits of a supernet."""
    randomize_batchnorm(net)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, logit_scale)
    return net


ALL_SPACES = available_spaces()


def builtin(name):
    return small_input(load_space(name))


@pytest.fixture
def read_only(tmp_path):
    """A function that makes a folder (with what is in it) read-only for this process: a read-only bind mount
    for root (whom permissions do not stop), chmod otherwise."""
    import subprocess

    mounted = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return folder
        for cmd in (["mount", "--bind", folder, folder], ["mount", "-o", "remount,bind,ro", folder]):
            if subprocess.run(cmd, capture_output=True).returncode:
                pytest.skip("cannot make a read-only mount here")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", folder], check=True)
    for folder in tmp_path.rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)
