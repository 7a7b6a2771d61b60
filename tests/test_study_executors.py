"""`rnas study --executor local|ray|slurm`: the executor settings are checked before anything runs; the same
tiny study (2 arms) run on a local Ray cluster of 2 CPUs and through submitit's local executor (real
subprocesses) gives bit-identical evaluations to the local executor, also when a step's worker or job is
killed mid-step (retried / resubmitted, resumed from its checkpoint)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from helpers import main_in_process, rnas_cmd, wait_for, write_tiny_setup

EPOCHS = 8  # the retrains: long enough to be killed between their first and last checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("executors"))


def study_dict(root, **changes) -> dict:
    study = {
        "name": "tiny",
        "data": {"data": "cifar10", "data_dir": str(root / "data"), "val_size": 50, "workers": 0},
        "teacher": {"teacher": "wrn-10-1", "teacher_ckpt": "tiny", "model_dir": str(root / "models")},
        "searches": [{"space": str(root / "tiny.yaml")}],
        "search": {"epochs": 1, "batch_size": 25, "arch_lr": 0.05},
        "retrain": {"epochs": EPOCHS, "batch_size": 25},
        "arms": ["rnas-cl", "ce"],
        "eval": {"attacks": ["clean", "fgsm"], "n": 20},
        "threads": 1,
    }
    study.update(changes)
    return study


def write_study(path, study: dict):
    path.write_text(yaml.safe_dump(study))
    return path


EVALS = ("tiny/rnas-cl/eval-pixel.json", "tiny/ce/eval-pixel.json")


def evaluations(out, names=EVALS) -> dict:
    """The study's eval JSONs without their timings and checkpoint path, and its retrained weights."""
    found = {}
    for name in names:
        result = json.loads((out / name).read_text())
        for row in result["results"]:
            row.pop("seconds", None)
        result.pop("seconds", None)
        assert result.pop("checkpoint") == str(out / name.rsplit("/", 1)[0] / "checkpoint.pt")
        found[name] = result
        weights = torch.load(out / name.rsplit("/", 1)[0] / "checkpoint.pt", weights_only=True)["model"]
        found[name + ":weights"] = {k: v.numpy().tobytes() for k, v in weights.items()}
    return found


def states(out) -> dict:
    return {s["name"]: s["state"] for s in json.loads((out / "study.json").read_text())["steps"]}


def _start(study, out, *flags):
    return subprocess.Popen(rnas_cmd("study", study, "--out", out, *flags), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONHASHSEED="0"))


def _finish(proc, timeout=600):
    try:
        printed, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, printed, err


def run_timed(study, out, *flags) -> tuple[int, str, float]:
    start = time.time()
    code, printed, err = _finish(_start(study, out, *flags))
    return code, printed + err, time.time() - start


def each_epoch_once(run) -> bool:
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return epochs == list(range(EPOCHS))


def signal_mid_step(out, signals: dict) -> dict:
    """Send each retrain run of ``signals`` ({run: signal}) its signal, to the process running its step (its
    pid file), as soon as it has checkpointed its first epoch (of ``EPOCHS``); {run: pid signalled}."""
    sent = {}

    def act() -> bool:
        for run, signum in signals.items():
            pid_file = out / ".executor" / f"retrain__{run.replace('/', '__')}" / "pid"
            metrics = out / run / "metrics.jsonl"
            if run not in sent and pid_file.is_file() and metrics.is_file() and metrics.read_text().strip():
                sent[run] = int(pid_file.read_text())
                os.kill(sent[run], signum)
                assert torch.load(out / run / "checkpoint.pt", weights_only=True)["epoch"] < EPOCHS  # mid-run
        return len(sent) == len(signals)

    assert wait_for(act, timeout=400)
    return sent


# ---- settings, checked before anything runs -------------------------------------------------------------
BAD = [
    ({"executor": {"kind": "kubernetes"}}, "executor.kind: 'kubernetes': one of local, ray, slurm"),
    ({"executor": {"kind": "ray", "nodes": 2}}, "executor.nodes: unknown key"),
    ({"executor": {"retries": -1}}, "executor.retries: -1: a whole number >= 0"),
    ({"executor": {"resources": {"train": {"cpus": 2}}}}, "executor.resources.train: not a step kind"),
    ({"executor": {"resources": {"search": {"cpus": "many"}}}}, "executor.resources.search.cpus: 'many': a whole"),
    ({"executor": {"resources": {"search": {"gpus": -1}}}}, "executor.resources.search.gpus: -1: a number >= 0"),
    ({"executor": {"resources": {"eval": {"ram": 4}}}}, "executor.resources.eval.ram: unknown resource"),
    ({"executor": {"resources": {"derive": {"nproc": 2}}}}, "executor.resources.derive.nproc: derive runs in one"),
    ({"executor": {"kind": "slurm", "resources": {"retrain": {"gpus": 0.5}}}}, "retrain.gpus: whole GPUs on SLURM"),
    ({"slurm": {"partition": 3}}, "slurm.partition: 3: a name"),
    ({"slurm": {"time": "1h"}}, "slurm.time: '1h': a whole number >= 1 (minutes)"),
    ({"slurm": {"nodes": 2}}, "slurm.nodes: unknown key"),
    ({"arms": [{"arm": "ce", "resources": {"search": {"gpus": 1}}}]}, "arms[0].resources.search: not a step kind"),
    ({"arms": [{"arm": "ce", "resources": {"retrain": {"nproc": 0}}}]}, "retrain.nproc: 0: a whole number >= 1"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_executor_settings_are_one_line_and_nothing_runs(root, tmp_path, changes, message):
    study = write_study(tmp_path / "bad.yaml", study_dict(root, **changes))
    code, err = main_in_process("study", study, "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind,module", [("ray", "ray"), ("slurm", "submitit")])
def test_an_executor_without_its_extra_is_one_line(root, tmp_path, monkeypatch, kind, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importlib finds no such module
    study = write_study(tmp_path / "s.yaml", study_dict(root))
    code, err = main_in_process("study", study, "--out", tmp_path / "out", "--executor", kind)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--executor {kind} needs {module}, which is not installed: pip install -e '.[{kind}]'" in err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_ray_cluster_or_a_missing_study_dir_is_one_line(root, tmp_path, capsys):
    pytest.importorskip("ray")
    study = write_study(tmp_path / "s.yaml", study_dict(root))
    proc = subprocess.run(rnas_cmd("study", study, "--out", tmp_path / "out", "--executor", "ray", "--ray-address",
                                   "nowhere"), capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--executor ray: cannot start (Invalid address format: nowhere); no step ran" in lines[0]
    assert set(states(tmp_path / "out").values()) == {"pending"}
    code, err = main_in_process("study", "--status", tmp_path / "absent")
    assert code == 2 and "absent: no such study file or directory" in err
    capsys.readouterr()
    code, _ = main_in_process("study", "--status", tmp_path / "out")
    printed = capsys.readouterr().out
    assert code == 0 and "(executor ray)" in printed and printed.strip().endswith("6 pending"), printed


def test_resources_per_step_kind_overridden_per_arm(root, tmp_path):
    from rnas.study.plan import plan_study

    spec = study_dict(root, executor={"kind": "ray", "retries": 1, "resources": {
        "search": {"cpus": 8, "gpus": 1}, "retrain": {"cpus": 4, "gpus": 1, "time": 600}, "eval": {"gpus": 0.5}}},
        arms=["rnas-cl", {"arm": "ce", "resources": {"retrain": {"gpus": 2, "nproc": 2}}}])
    plan = plan_study(write_study(tmp_path / "s.yaml", spec), tmp_path / "out")
    got = {s.name: s.resources for s in plan.steps()}
    assert got == {"search/tiny": {"cpus": 8, "gpus": 1}, "derive/tiny": {},
                   "retrain/tiny/rnas-cl": {"cpus": 4, "gpus": 1, "time": 600},
                   "eval/tiny/rnas-cl/pixel": {"gpus": 0.5},
                   "retrain/tiny/ce": {"cpus": 4, "gpus": 2, "time": 600, "nproc": 2},
                   "eval/tiny/ce/pixel": {"gpus": 0.5}}
    assert (plan.executor.kind, plan.executor.retries, plan.jobs_given) == ("ray", 1, False)
    assert plan_study(tmp_path / "s.yaml", tmp_path / "out", {"executor": "local"}).executor.kind == "local"


def test_slurm_job_parameters_come_from_the_file(root, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from rnas.study.plan import plan_study
    from rnas.study.slurm_executor import job_parameters

    spec = study_dict(root, executor={"kind": "slurm", "resources": {"retrain": {"gpus": 1, "cpus": 8,
                                                                                 "time": 720}}},
                      slurm={"partition": "gpu", "account": "proj", "time": 60, "setup": ["module load cuda"],
                             "additional": {"exclusive": True}})
    plan = plan_study(write_study(tmp_path / "s.yaml", spec), tmp_path / "out")
    steps = {s.name: s for s in plan.steps()}
    retrain = job_parameters(steps["retrain/tiny/ce"], plan.executor.slurm, "x")
    assert retrain == {"timeout_min": 720, "gpus_per_node": 1, "cpus_per_task": 8, "nodes": 1, "tasks_per_node": 1,
                       "name": "x", "slurm_partition": "gpu", "slurm_account": "proj",
                       "slurm_setup": ["module load cuda"], "slurm_additional_parameters": {"exclusive": True}}
    search = job_parameters(steps["search/tiny"], plan.executor.slurm, "x")
    assert (search["timeout_min"], search["gpus_per_node"], search["cpus_per_task"]) == (60, 0, 1)
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", staticmethod(lambda: 1))  # no srun on this machine
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(**retrain)  # what sbatch would be given
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=720",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --exclusive", "module load cuda"):
        assert line in script, script


def test_slurm_without_sbatch_is_one_line(root, tmp_path):
    pytest.importorskip("submitit")
    if __import__("shutil").which("sbatch"):
        pytest.skip("a SLURM machine")
    study = write_study(tmp_path / "s.yaml", study_dict(root))
    code, err = main_in_process("study", study, "--out", tmp_path / "out", "--executor", "slurm")
    assert code == 2 and "--executor slurm: no SLURM here (sbatch not found)" in err, err
    assert not (tmp_path / "out").exists()


# ---- the same study on each executor --------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(root, tmp_path_factory):
    """The study run by the local executor: (study directory, its evaluations, wall seconds)."""
    base = tmp_path_factory.mktemp("local")
    study = write_study(base / "tiny.yaml", study_dict(root, jobs=2))
    code, log, seconds = run_timed(study, base / "out")
    assert code == 0, log
    print(f"\nlocal executor: {seconds:.1f} s")
    return base / "out", evaluations(base / "out"), seconds


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_gives_the_local_results_and_retries_a_killed_worker(root, tmp_path, reference):
    """On a local Ray cluster of the machine's 2 CPUs: the study's eval JSONs are bit-identical to the local
    executor's, also when the Ray worker running a retrain is killed with SIGKILL mid-run (Ray retries the
    task, which resumes from the run's checkpoint)."""
    pytest.importorskip("ray")
    study = write_study(tmp_path / "tiny.yaml", study_dict(root, executor={"kind": "ray", "retries": 2}))
    out = tmp_path / "out"
    start = time.time()
    proc = _start(study, out)
    try:
        killed = signal_mid_step(out, {"tiny/rnas-cl": signal.SIGKILL})["tiny/rnas-cl"]
    finally:
        code, printed, err = _finish(proc)
    print(f"\nray executor, one worker killed: {time.time() - start:.1f} s (local {reference[2]:.1f} s)")
    assert code == 0, err
    assert int((out / ".executor" / "retrain__tiny__rnas-cl" / "pid").read_text()) != killed  # another worker
    assert set(states(out).values()) == {"done"}
    assert json.loads((out / "study.json").read_text())["executor"] == "ray"
    assert each_epoch_once(out / "tiny" / "rnas-cl")
    assert evaluations(out) == reference[1]
    assert "rnas report" in printed

    code, log, seconds = run_timed(study, out)  # nothing left to do
    assert code == 0 and ": started" not in log, log


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_submitit_jobs_give_the_local_results_and_resume_after_a_kill_or_a_preemption(root, tmp_path, reference):
    """Through submitit's local executor (each step a job in its own subprocesses): a job killed with SIGKILL
    mid-retrain is resubmitted and resumes from its checkpoint; a job signalled as SLURM does before a
    preemption or time-out (SIGUSR2) is requeued by the checkpointing hook and resumes; the eval JSONs are
    bit-identical to the local executor's."""
    pytest.importorskip("submitit")
    spec = study_dict(root, executor={"kind": "slurm", "retries": 1}, slurm={"cluster": "local", "time": 30})
    study, out = write_study(tmp_path / "tiny.yaml", spec), tmp_path / "out"
    start = time.time()
    proc = _start(study, out)
    try:
        # killed: resubmitted by the study; preempted (SIGUSR2): submitit's checkpoint hook requeues it
        signal_mid_step(out, {"tiny/rnas-cl": signal.SIGKILL, "tiny/ce": signal.SIGUSR2})
    finally:
        code, printed, err = _finish(proc)
    print(f"\nsubmitit local executor, one job killed, one preempted: {time.time() - start:.1f} s "
          f"(local {reference[2]:.1f} s)")
    assert code == 0, err
    assert "retrain tiny/rnas-cl: job ended without a result" in err and "resubmitted as job" in err
    assert set(states(out).values()) == {"done"}
    preempted = [p.read_text() for p in (out / ".executor" / "submitit").glob("*_log.out")
                 if "this job is preempted" in p.read_text()]  # the same job, started again by the hook
    assert len(preempted) == 1 and "Requeued job" in preempted[0], preempted
    assert preempted[0].count("Starting with JobEnvironment") == 2 and "Job completed successfully" in preempted[0]
    for arm in ("rnas-cl", "ce"):
        assert each_epoch_once(out / "tiny" / arm)
    assert evaluations(out) == reference[1]

    code, status = main_status(out)
    assert code == 0 and "executor slurm" in status and status.count(" done job ") == 6, status


def main_status(out) -> tuple[int, str]:
    proc = subprocess.run(rnas_cmd("study", "--status", out), capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_stops_the_ray_steps_with_a_checkpoint_and_a_rerun_finishes_identically(root, tmp_path, reference):
    pytest.importorskip("ray")
    study = write_study(tmp_path / "tiny.yaml", study_dict(root, executor={"kind": "ray"}))
    out = tmp_path / "out"
    proc = _start(study, out)
    try:
        metrics = out / "tiny" / "rnas-cl" / "metrics.jsonl"
        assert wait_for(lambda: metrics.is_file() and metrics.read_text().strip(), timeout=400)
        proc.send_signal(signal.SIGTERM)
    finally:
        code, _, err = _finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert f"rnas study {study} --out {out} continues it" in err
    assert states(out)["retrain/tiny/rnas-cl"] == "pending"
    assert 1 <= torch.load(out / "tiny" / "rnas-cl" / "checkpoint.pt", weights_only=True)["epoch"] < EPOCHS
    worker = int((out / ".executor" / "retrain__tiny__rnas-cl" / "pid").read_text())
    assert wait_for(lambda: not os.path.exists(f"/proc/{worker}"), timeout=30)  # the local cluster is gone

    code, log, _ = run_timed(study, out)
    assert code == 0, log
    assert "retrain tiny/rnas-cl: started (resuming at" in log
    assert each_epoch_once(out / "tiny" / "rnas-cl")
    assert evaluations(out) == reference[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_step_of_nproc_2_runs_under_torchrun_locally_and_in_a_ray_task(root, tmp_path):
    """``nproc: 2`` on an arm's retrain: the step runs on 2 gloo ranks (torchrun), reports its epochs, and its
    checkpoint says so; inside a Ray task the same, with the same weights bit for bit."""
    spec = study_dict(root, retrain={"epochs": 2, "batch_size": 24}, jobs=2,
                      arms=[{"arm": "ce", "resources": {"retrain": {"nproc": 2}}}])
    study, out = write_study(tmp_path / "tiny.yaml", spec), tmp_path / "out"
    code, log, seconds = run_timed(study, out)
    assert code == 0, log
    assert "retrain tiny/ce: epoch 2/2" in log
    assert torch.load(out / "tiny" / "ce" / "checkpoint.pt", weights_only=True)["world_size"] == 2
    assert len((out / "tiny" / "ce" / "metrics.jsonl").read_text().splitlines()) == 2
    pytest.importorskip("ray")
    code, log, _ = run_timed(study, tmp_path / "ray", "--executor", "ray")
    assert code == 0, log
    assert evaluations(tmp_path / "ray", ("tiny/ce/eval-pixel.json",)) == evaluations(out, ("tiny/ce/eval-pixel.json",))
