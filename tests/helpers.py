"""Tiny on-disk fixtures in the exact formats rnas reads: torchvision's CIFAR layout, a RobustBench
teacher checkpoint, a small search-space YAML."""
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from conftest import randomize
from torch.utils.flop_counter import FlopCounterMode

from supernets import Network, build_model, derive

TINY_SPACE = {
    "name": "T", "input_size": 32, "num_classes": 10,
    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
    "stem": {"type": "conv", "channels": 8, "stride": 2, "act": "relu"},
    "block": {"type": "mbconv", "expansion": 2, "act": "relu"},
    "stages": [{"depth": 1, "stride": 1, "widths": [8, 4]}, {"depth": 2, "stride": 2, "widths": [16, 12, 8]}],
}


def write_cifar10(root: Path, n_per_batch: int = 60, seed: int = 0, test: bool = False) -> Path:
    """torchvision's cifar-10-batches-py layout with class-dependent colours (learnable, tiny)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + (["test_batch"] if test else [])
    for name in names:
        labels = rng.integers(0, 10, n_per_batch)
        colours = np.stack([labels * 25, 255 - labels * 25, (labels * 97) % 256], 1)[:, :, None]
        noise = rng.integers(0, 60, (n_per_batch, 3, 1024))
        data = np.clip(colours + noise, 0, 255).astype(np.uint8).reshape(n_per_batch, 3072)
        with open(base / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, fh)
    return root


def write_teacher(model_dir: Path, name: str = "tiny", depth: int = 10, widen: int = 1) -> Path:
    from rnas.teachers.wideresnet import WideResNet

    torch.manual_seed(0)
    path = model_dir / "cifar10" / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": WideResNet(depth, widen, 10).state_dict()}, path)
    return path


def plan_shipped_study(name: str, tmp_path: Path):
    """The plan of studies/NAME.yaml over tiny CIFAR-10 data and a WRN-16-2 teacher named as the shared one, run
    from the repository's root."""
    from rnas.study.plan import plan_study

    write_cifar10(tmp_path / "data")
    write_teacher(tmp_path / "teachers", name="wrn-16-2-nfgsm", depth=16, widen=2)
    repo = Path(__file__).resolve().parents[1]  # where its comment says to run it: its relative files resolve
    return plan_study(repo / "studies" / f"{name}.yaml", tmp_path / "out", {"data_dir": str(tmp_path / "data"),
                                                                         "model_dir": str(tmp_path / "teachers")},
                      cwd=repo)


def write_space(path: Path) -> Path:
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def write_tiny_setup(root: Path) -> Path:
    """``root`` with tiny CIFAR-10 data (data/), a tiny RobustBench teacher (models/, ``wrn-10-1`` named
    ``tiny``) and the tiny search space (tiny.yaml): everything a search or retrain test needs."""
    write_cifar10(root / "data")
    write_teacher(root / "models")
    write_space(root / "tiny.yaml")
    return root


def main_in_process(*args) -> tuple[int, str]:
    """rnas.cli.main in this process: (exit code, stderr) without paying a fresh interpreter per case."""
    import contextlib
    import io

    from rnas.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def rnas_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "rnas", *map(str, args)]


def run_rnas(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(rnas_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env)


def wait_for(predicate, timeout: float = 60.0) -> bool:
    """Poll ``predicate`` every 10 ms until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def trained_checkpoint(root: Path, arch: dict, images: int, steps: int) -> Path:
    """``root``/model.pt: an rnas retrain-format checkpoint of ``arch``, trained ``steps`` Adam steps of 40 on the
    first ``images`` images of ``root``/data (write_cifar10), so that attacks matter; its config names that data
    with a 60-image validation split."""
    from torch import nn

    from rnas.data import load_tensors
    from supernets import build_model

    torch.manual_seed(0)
    model = build_model(arch)
    data = load_tensors("cifar10", str(root / "data"), "train")
    x, y = data.images[:images].float().div(255), data.labels[:images]
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for step in range(steps):
        i = (step * 40) % images
        loss = nn.functional.cross_entropy(model(x[i:i + 40]), y[i:i + 40])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = root / "model.pt"
    torch.save({"format": "rnas-train-1", "kind": "retrain", "arch": arch, "model": model.state_dict(),
                "config": {"data": "cifar10", "data_dir": str(root / "data"), "val_size": 60}}, path)
    return path


def tiny_search_config(root: Path, **overrides):
    """A SearchConfig on ``write_tiny_setup(root)``: 40 images in batches of 10, one epoch, no logging."""
    from rnas.engine.search import SearchConfig

    values = dict(space=str(root / "tiny.yaml"), teacher="wrn-10-1", teacher_ckpt="tiny",
                  model_dir=str(root / "models"), data="cifar10", data_dir=str(root / "data"), val_size=50,
                  limit=40, batch_size=10, epochs=1, workers=0, log_every=0)
    values.update(overrides)
    return SearchConfig(**values)


def tiny_search_and_derive(root: Path, out: Path, *flags, space: Path | None = None) -> Path:
    """``rnas search`` of the tiny space (or ``space``) with the tiny teacher of ``write_tiny_setup(root)``,
    one epoch plus ``flags``, then ``rnas derive``; asserts both succeed and returns OUT/arch.json."""
    code, err = main_in_process("search", "--space", space or root / "tiny.yaml", "--teacher", "wrn-10-1",
                                "--teacher-ckpt", "tiny", "--model-dir", root / "models", "--data-dir", root / "data",
                                "--val-size", 50, "--epochs", 1, *flags, "--out", out)
    assert code == 0, err
    code, err = main_in_process("derive", out)
    assert code == 0, err
    return out / "arch.json"


def tiny_derived(root: Path, images: int, batch: int) -> Path:
    """``write_tiny_setup(root)`` and a one-epoch search of ``images`` images in batches of ``batch``, derived
    into root/search/arch.json: the net the retrain tests train."""
    write_tiny_setup(root)
    tiny_search_and_derive(root, root / "search", "--limit", images, "--batch-size", batch)
    return root


def tiny_retrain_config(root: Path, images: int, batch: int, **overrides):
    """A RetrainConfig of ``tiny_derived(root, ...)``'s net: ``images`` images in batches of ``batch``, one epoch,
    no logging."""
    from rnas.engine.retrain import RetrainConfig

    values = dict(arch=str(root / "search" / "arch.json"), data_dir=str(root / "data"), val_size=50, limit=images,
                  batch_size=batch, epochs=1, workers=0, log_every=0)
    values.update(overrides)
    return RetrainConfig(**values)


def whole_and_resumed(make_cfg, whole: Path, split: Path, stop: tuple[int, int]) -> tuple[dict, dict]:
    """Train ``make_cfg()`` into ``whole`` in one go and into ``split`` stopped when (epoch, step) is ``stop``
    (polled after each step, before the step count moves on) and resumed; asserts the two models are
    bit-identical and returns both final checkpoints."""
    import pytest

    from rnas.engine.loop import RunStopped
    from rnas.engine.retrain import build_retrain
    from rnas.runtime.rundir import load_checkpoint, resume_checkpoint

    build_retrain(make_cfg()).fit(whole)
    trainer = build_retrain(make_cfg())
    with pytest.raises(RunStopped):
        trainer.fit(split, should_stop=lambda: (trainer.epoch, trainer.step) == stop)
    resumed = build_retrain(make_cfg())
    resumed.load_state(resume_checkpoint(split, True))
    resumed.fit(split, resume=True)
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    return a, b


def search_args(setup, out, *extra):
    return ["search", "--space", setup / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt", "tiny",
            "--model-dir", setup / "models", "--data", "cifar10", "--data-dir", setup / "data",
            "--val-size", 50, "--batch-size", 25, "--epochs", 2, "--out", out, "--arch-lr", 0.05, *extra]


def flop_count_macs(model: torch.nn.Module, spec) -> int:
    x = torch.rand(1, spec.in_channels, spec.input_size, spec.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def check_equivalence(spec, batch=3):
    supernet = randomize(Network(spec)).eval()
    supernet.mode = "argmax"
    arch = derive(supernet)
    model = build_model(arch, supernet).eval()
    x = torch.rand(batch, spec.in_channels, spec.input_size, spec.input_size)
    with torch.no_grad():
        diff = (supernet(x) - model(x)).abs().max().item()
    assert diff <= 1e-5
    # physically fewer channels: the derived net has exactly the parameters the cost model predicts
    assert sum(p.numel() for p in model.parameters()) == arch["params"]
    assert flop_count_macs(model, spec) == arch["macs"]
    return supernet, model, arch
