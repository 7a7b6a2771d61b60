"""Integration on the real CIFAR-10 training split and robust WRN-16-2 teacher, when ../shared exists."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_rnas

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


SHARED = Path(__file__).resolve().parents[2] / "shared"
needs_shared = pytest.mark.skipif(not (SHARED / "data" / "cifar10-train").is_dir(),
                                  reason="the shared CIFAR-10 split and teachers are not beside this checkout")


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(SHARED / "data" / "cifar10-train" / "make_batches.py"), str(root)],
                   check=True, capture_output=True, timeout=300)
    return root


@needs_shared
@pytest.mark.timeout(600)
def test_one_epoch_s3_search_with_the_robust_wrn16_teacher(cifar_root, tmp_path):
    run = tmp_path / "s3"
    result = run_rnas("search", "--space", "s3", "--teacher", "wrn-16-2", "--teacher-ckpt", "wrn-16-2-nfgsm",
                      "--model-dir", SHARED / "teachers", "--data-dir", cifar_root, "--limit", 5000,
                      "--epochs", 1, "--out", run, timeout=600)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps(record))
    assert record["val_acc"] > 15  # 10 % is chance
    seen = 5000 // 128 * 128  # full batches of the first 5,000 images; both numbers are rounded (0.1, 1 ms)
    slack = 0.05 + seen * 5e-4 / (record["seconds"] - 5e-4) ** 2
    assert record["images_per_s"] == pytest.approx(seen / record["seconds"], abs=slack)
    import rnas

    # distillation acts: at gamma = 1 the attention term had ~3 % of the weight gradient
    assert 0.2 < record["weight/attn_grad_share"] < 0.9
    derived = run_rnas("derive", run)
    assert derived.returncode == 0 and (run / "arch.json").is_file()
    net = rnas.build_supernet("S3")
    smallest = net.cost([len(b.width_choices) - 1 for b in net.searched_blocks])[1]
    largest = net.cost([0] * len(net.searched_blocks))[1]
    macs = json.loads((run / "arch.json").read_text())["macs"]
    assert smallest < macs < largest  # the search trades accuracy for MACs: neither the floor nor the ceiling
