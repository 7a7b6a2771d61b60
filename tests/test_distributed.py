"""torchrun on this CPU (gloo, 2 processes) against one process with the same global batch.

Equality checks run the real CLI in float64 (a two-line launcher sets the default dtype): in float32 the
search is chaotic, so rounding differences of any kind (1 vs 2 threads in ONE process give the same
drift) grow to ~1e-1 in a few steps and would hide a real bug behind a loose tolerance; in float64 the
ranks agree with the single process to ~1e-10. BatchNorm statistics are global (--sync-bn)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_tiny_setup

FLOAT64_MAIN = ("import sys, torch\ntorch.set_default_dtype(torch.float64)\n"
                "from rnas.cli import main\nsys.exit(main())\n")
pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


NOT_COMPARED = {"seconds", "images_per_s", "total_seconds", "attn_grad_share"}  # timings; the share: per rank


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = write_tiny_setup(tmp_path_factory.mktemp("dist"))
    (root / "f64.py").write_text(FLOAT64_MAIN)
    return root


def run(root: Path, *args, ranks: int = 1, float64: bool = False, env: dict | None = None, timeout: int = 300):
    target = [str(root / "f64.py")] if float64 else ["-m", "rnas"]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
                if ranks > 1 else [sys.executable])
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", **(env or {}))
    return subprocess.run([*launcher, *target, *map(str, args)], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def printed(*results: subprocess.CompletedProcess) -> str:
    """What the jobs wrote to stderr, head and tail: a failing rank's own error comes first, torchrun's summary
    of which rank died how comes last."""
    return "\n".join(r.stderr if len(r.stderr) <= 4000 else r.stderr[:2000] + "\n…\n" + r.stderr[-2000:]
                     for r in results)


GROUP_RELEASED = """
import os, torch
from rnas.runtime.distributed import init_distributed, shutdown
init_distributed(torch.device("cpu"))
torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], 0.1)  # the first optimizer imports torch._dynamo
shutdown()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(f"threads-{os.environ['RANK']}.txt", "w") as f:  # one file per rank: their stdout interleaves
    f.write(" ".join(sorted(n for n in names if "gloo" in n)))
"""


def search_args(out, *extra):
    return ["search", "--space", "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt", "tiny", "--model-dir",
            "models", "--data-dir", "data", "--val-size", 50, "--batch-size", 20, "--limit", 60, "--epochs", 2,
            "--out", out, *extra]


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.split("/")[-1] not in NOT_COMPARED} for r in rows]


def assert_close_records(a: list[dict], b: list[dict], rel: float) -> None:
    assert len(a) == len(b) and a
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k, va in ra.items():
            if isinstance(va, float):
                # metrics.jsonl keeps 6 decimals: one unit of rounding either way, plus ``rel``
                assert abs(va - rb[k]) <= 1.01e-6 + rel * abs(va), (ra["epoch"], k, va, rb[k])
            else:
                assert va == rb[k], (k, va, rb[k])


def state(run_dir: Path, key: str) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)[key]


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def searches(root):
    """The same float64 search in one process and on 2 ranks (sync BN), each derived to arch.json."""
    one = run(root, *search_args("one", "--sync-bn"), float64=True)
    two = run(root, *search_args("two", "--sync-bn"), ranks=2, float64=True)
    assert one.returncode == 0 and two.returncode == 0, printed(one, two)
    for name in ("one", "two"):
        assert run(root, "derive", name).returncode == 0
    return root / "one", root / "two"


def test_two_ranks_search_equals_one_process(searches):
    one, two = searches
    assert_close_records(metrics(one), metrics(two), 1e-9)  # every loss term, E[MACs], val acc, width probs
    assert max_difference(state(one, "supernet"), state(two, "supernet")) < 1e-8  # weights, BN stats, logits
    assert max_difference(state(one, "tutor"), state(two, "tutor")) < 1e-8
    widths = [json.loads((run_dir / "arch.json").read_text())["widths"] for run_dir in (one, two)]
    assert widths[0] == widths[1]
    assert torch.load(two / "checkpoint.pt", weights_only=True)["world_size"] == 2


def test_two_ranks_retrain_equals_one_process(root, searches):
    arch = searches[0] / "arch.json"
    common = ["retrain", arch, "--data-dir", "data", "--val-size", 50, "--batch-size", 20, "--limit", 60,
              "--epochs", 2, "--sync-bn", "--lr", 0.05]
    one = run(root, *common, "--out", "r-one", float64=True)
    two = run(root, *common, "--out", "r-two", ranks=2, float64=True)
    assert one.returncode == 0 and two.returncode == 0, printed(one, two)
    assert_close_records(metrics(root / "r-one"), metrics(root / "r-two"), 1e-9)
    assert max_difference(state(root / "r-one", "model"), state(root / "r-two", "model")) < 1e-8


def test_killed_rank_stops_the_job_and_resume_is_bit_identical(root):
    args = search_args("killed", "--checkpoint-every", 2, "--limit", 100)  # 5 steps per epoch
    killed = run(root, *args, ranks=2, env={"RNAS_KILL_RANK_AT_STEP": "1:7"})  # rank 1 dies in epoch 2
    assert killed.returncode != 0
    assert "rank 0: lost the other ranks" in killed.stderr and "--resume killed" in killed.stderr
    ckpt = torch.load(root / "killed" / "checkpoint.pt", weights_only=True)  # intact and loadable
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    resumed = run(root, "search", "--resume", "killed", ranks=2)
    assert resumed.returncode == 0, printed(resumed)
    whole = run(root, *search_args("whole", "--checkpoint-every", 2, "--limit", 100), ranks=2)
    assert whole.returncode == 0, printed(whole)
    a, b = state(root / "killed", "supernet"), state(root / "whole", "supernet")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(state(root / "killed", "tutor")["tutor_logits"], state(root / "whole", "tutor")["tutor_logits"])
    assert metrics(root / "killed") == metrics(root / "whole")


def test_a_stopped_rank_ends_the_job_after_the_collective_timeout(root):
    """Rank 1 freezes (SIGSTOP) in epoch 2: rank 0 gives up after RNAS_COLLECTIVE_TIMEOUT with one line, the
    job ends instead of hanging, the last checkpoint is intact and the run lock is free for the resume."""
    import time

    start = time.monotonic()
    stopped = run(root, *search_args("stopped", "--checkpoint-every", 2, "--limit", 100), ranks=2,
                  env={"RNAS_STOP_RANK_AT_STEP": "1:7", "RNAS_COLLECTIVE_TIMEOUT": "30"}, timeout=300)
    assert stopped.returncode != 0 and time.monotonic() - start < 250
    said = [line for line in stopped.stderr.splitlines() if line.startswith("rnas:")]
    assert said == ["rnas: error: rank 0: lost the other ranks (no answer within 30 s, RNAS_COLLECTIVE_TIMEOUT; "
                    "a rank stopped or stuck); the last checkpoint stopped/checkpoint.pt is intact: rnas search "
                    "--resume stopped"], printed(stopped)
    ckpt = torch.load(root / "stopped" / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    resumed = run(root, "search", "--resume", "stopped", ranks=2)
    assert resumed.returncode == 0, printed(resumed)


@pytest.mark.parametrize("value", ["0", "soon", "inf"])
def test_a_bad_collective_timeout_is_one_line(root, value):
    result = run(root, *search_args("bad-timeout"), ranks=2, env={"RNAS_COLLECTIVE_TIMEOUT": value}, timeout=120)
    assert result.returncode != 0  # torchrun's own code; the rank exits 2
    assert f"rnas: error: RNAS_COLLECTIVE_TIMEOUT={value!r}: give the seconds" in result.stderr, printed(result)
    assert not (root / "bad-timeout").exists()


def test_resume_on_another_world_size_is_allowed_and_says_so(root, searches):
    one = searches[0]
    extended = run(root, "search", "--resume", one, "--epochs", 3, ranks=2, float64=True)
    assert extended.returncode == 0, printed(extended)
    assert "checkpointed on 1 rank(s) on 2" in extended.stderr
    assert len(metrics(one)) == 3


def test_eval_on_two_ranks_equals_one(root, searches):
    arch = searches[0] / "arch.json"
    assert run(root, "retrain", arch, "--data-dir", "data", "--val-size", 50, "--batch-size", 20, "--limit", 40,
               "--epochs", 1, "--baseline", "ce", "--out", "e-model").returncode == 0
    common = ["eval", "e-model/checkpoint.pt", "--attacks", "clean,fgsm,pgd5,cw", "--cw-steps", 5,
              "--num-images", 45, "--batch-size", 10, "--split", "val"]
    one = run(root, *common, "--json", "one.json")
    two = run(root, *common, "--json", "two.json", ranks=2)
    assert one.returncode == 0 and two.returncode == 0, printed(one, two)
    a, b = (json.loads((root / f).read_text())["results"] for f in ("one.json", "two.json"))
    assert [(r["attack"], r["accuracy"], r["n"], r["hits"]) for r in a] == \
        [(r["attack"], r["accuracy"], r["n"], r["hits"]) for r in b]  # the same images right, gathered in order
    assert a[0]["n"] == 45 and len(a[0]["hits"]) == 12
    assert two.stdout.count("clean") == 1  # only rank 0 prints the table


@pytest.mark.parametrize("extra,message", [
    (["--batch-size", 21], "--batch-size 21: not divisible by the 2 ranks"),
    (["--device", "cuda"], "--device cuda: CUDA is not available"),
], ids=["batch-not-divisible", "nccl-without-cuda"])
def test_bad_torchrun_invocation_is_one_line_exit_2_and_writes_nothing(root, extra, message):
    result = run(root, *search_args("bad", *extra), ranks=2)
    lines = [line for line in result.stderr.splitlines() if line.startswith("rnas:")]  # not torchrun's summary
    assert lines and lines[0].startswith("rnas: error: ") and message in lines[0], result.stderr[-2000:]
    assert len(lines) == 1  # rank 0 alone speaks
    assert not (root / "bad").exists()


def _rank_check(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    from rnas.errors import UserError
    from rnas.runtime.distributed import init_distributed, on_every_rank

    dist = init_distributed(torch.device("cpu"))

    def build():
        if dist.rank == 1:
            raise UserError("--data-dir /data: no such directory")
        return "built"

    try:
        on_every_rank(dist, build)
        queue.put((rank, "no error"))
    except UserError as err:
        queue.put((rank, str(err)))
    torch.distributed.destroy_process_group()


def test_a_rank_that_cannot_read_its_input_stops_every_rank():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_check, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    expected = "rank 1: --data-dir /data: no such directory"
    assert results == {0: expected, 1: expected}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names are read from /proc")
def test_shutdown_ends_the_process_group_and_its_threads(root):
    """After shutdown() no gloo thread is left for interpreter exit to tear down (where a rank could abort
    after its work was done): nothing, not even the optimizer's import of torch._dynamo, keeps the group."""
    (root / "group.py").write_text(GROUP_RELEASED)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(root / "group.py")], cwd=root, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, printed(result)
    assert [(root / f"threads-{rank}.txt").read_text() for rank in (0, 1)] == ["", ""]  # no gloo thread on either


def test_collectives_of_cpu_counts_go_through_the_gpu_under_nccl(monkeypatch):
    """NCCL reduces only CUDA tensors: Dist.sum / max move a count kept on the CPU (eval's per-image flags, the
    cost meter's totals) to this rank's GPU for the collective and back; gloo keeps them on the CPU."""
    from rnas.runtime import distributed

    seen = []

    def all_reduce(t, op=None):
        seen.append((t.device, op))
        t.mul_(2)  # two ranks holding the same values
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: "gloo")
    asked = []
    where = distributed.collective_device
    monkeypatch.setattr(distributed, "collective_device", lambda: asked.append(1) or where())
    dist = distributed.Dist(rank=0, world=2, local_rank=0)
    counts = torch.tensor([3, 4])
    assert dist.sum(counts).tolist() == [6, 8] and counts.tolist() == [3, 4]  # a new tensor
    assert dist.max(torch.tensor([1.5])).device.type == "cpu"
    assert seen == [(torch.device("cpu"), torch.distributed.ReduceOp.SUM),
                    (torch.device("cpu"), torch.distributed.ReduceOp.MAX)] and len(asked) == 2  # each asks where
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert where() == torch.device("cuda", 3)
