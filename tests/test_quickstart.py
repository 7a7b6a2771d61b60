"""The quickstart's guard rails and table (the full run is timed by hand: see the README)."""
import pytest

from rnas.commands.quickstart import format_table, run_quickstart
from rnas.errors import UserError

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


def test_quickstart_refuses_a_non_empty_out_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists and is not empty"):
        run_quickstart(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1


def _row(model, **figures):
    return {"model": model, "params": 110_000, "macs": 4_743_304, "clean": 90.0, "pgd20": 60.0, "pgd20_subset": 50.0,
            "autoattack_subset": 40.0, "n": 297, "n_subset": 10, **figures}


def _reference(seeds=5, **setting):
    """A reference measurement of ``seeds`` seeds whose RNAS-CL PGD-20 runs 50.0, 51.0, ..."""
    from rnas.commands.quickstart_table import setting as current

    return {"setting": {**current(), **setting}, "seeds": {
        str(s): {"rows": [_row("RNAS-CL", pgd20=50.0 + s, clean=88.0 + s)]} for s in range(seeds)}}


def test_table_lists_every_model_with_its_subset_sizes():
    table = format_table([_row("RNAS-CL"), _row("CE only")], None).splitlines()
    assert "clean n=297" in table[0] and "AutoAttack n=10" in table[0] and "eps 24/255" in table[0]
    assert table[2].split() == ["RNAS-CL", "0.110M", "4.74M", "90.0", "60.0", "50.0", "40.0"]
    assert table[3].split()[:2] == ["CE", "only"] and len(table) == 5
    assert table[4].startswith("(no reference measurement for this setting")


def test_each_row_shows_its_range_over_the_seeds_and_whether_it_lies_inside():
    table = format_table([_row("RNAS-CL", clean=90.0, pgd20=54.0), _row("CE only")], _reference()).splitlines()
    assert table[2].split() == ["RNAS-CL", "0.110M", "4.74M", "90.0", "54.0", "50.0", "40.0"]
    assert table[3].split() == ["range", "of", "5", "seeds", "0.110-0.110M", "4.74-4.74M", "88.0-92.0", "50.0-54.0",
                                "50.0-50.0", "40.0-40.0", "within:", "yes"]
    assert table[4].split()[:2] == ["CE", "only"] and len(table) == 5  # no range measured for it: no range line
    table = format_table([_row("RNAS-CL", clean=87.9, pgd20=54.1)], _reference()).splitlines()
    assert table[3].endswith("within: no (clean, pgd20)")
    assert format_table([_row("RNAS-CL", pgd20=54.04)], _reference()).splitlines()[3].endswith("within: yes")


def test_a_reference_of_another_setting_or_of_fewer_than_5_seeds_is_not_used():
    import json

    from rnas.commands.quickstart_table import load_reference

    assert load_reference(json.dumps(_reference()))["seeds"]["4"]["rows"][0]["pgd20"] == 54.0
    assert load_reference(json.dumps(_reference(seeds=4))) is None
    assert load_reference(json.dumps(_reference(eps_255=8))) is None


@pytest.mark.timeout(300)  # two processes that import torch and train: ~20 s on 2 idle cores
def test_the_shipped_reference_is_of_this_setting_with_every_row_of_the_table():
    from rnas.commands.quickstart import TEACHER_TITLE
    from rnas.commands.quickstart_table import load_reference
    from rnas.method.baselines import BASELINES

    reference = load_reference()
    assert reference is not None and len(reference["seeds"]) >= 5
    for run in reference["seeds"].values():
        assert [r["model"] for r in run["rows"]] == [TEACHER_TITLE, *(b.title for b in BASELINES.values())]
        assert all(r["n"] == 297 for r in run["rows"]) and ("seconds" in run) != run["resumed"]


def test_quickstart_computes_on_one_thread_whatever_the_environment_says(tmp_path):
    """The same one-epoch teacher training under OMP_NUM_THREADS=1 and =2 gives the same weights, bit for bit
    (without the pinning the two differ), so a machine's core count does not change the quickstart's table."""
    import os
    import subprocess
    import sys

    script = (
        "import hashlib, sys, torch\n"
        "from pathlib import Path\n"
        "from rnas.commands.quickstart import pinned_threads\n"
        "from rnas.engine.teacher_train import TeacherTrainConfig, run_teacher_training\n"
        "with pinned_threads():\n"
        "    threads = torch.get_num_threads()\n"
        "    path = run_teacher_training(TeacherTrainConfig(arch='wrn-16-1', at='nfgsm', epochs=1, eps=24 / 255,\n"
        "        data='digits', batch_size=32, limit=128, eval_n=32, log_every=0, out=sys.argv[1]),\n"
        "        Path(sys.argv[1]))\n"
        "weights = torch.load(path)['state_dict'].values()\n"
        "print(threads, hashlib.sha256(b''.join(w.numpy().tobytes() for w in weights)).hexdigest())\n")
    printed = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / threads)], env=env, capture_output=True,
                              text=True, timeout=110)
        assert done.returncode == 0, done.stderr
        printed.append(done.stdout.split())
    assert printed[0] == printed[1] and printed[0][0] == "1"


class _Stop(Exception):
    pass


def test_quickstart_writes_absolute_paths_into_every_config(tmp_path, monkeypatch):
    """The stages are stubbed (the real ones take minutes): only the configs the quickstart builds are checked."""
    import json
    from pathlib import Path

    import rnas.commands.quickstart as qs

    monkeypatch.chdir(tmp_path)
    seen = {}

    def teacher(cfg, run, resume=False):
        seen["teacher"] = (cfg.out, run)
        path = Path("qs/teacher/models/digits/Linf/wrn-16-1.pt")  # cwd-relative, as a relative --out gives
        path.parent.mkdir(parents=True)
        path.with_suffix(".json").write_text(json.dumps({"val": {}}))
        return path

    def retrain(cfg, run, resume=False):
        seen["retrain"] = (cfg.arch, cfg.teacher_ckpt, cfg.out, run)
        raise _Stop

    monkeypatch.setattr(qs, "run_teacher_training", teacher)
    monkeypatch.setattr(qs, "run_search",
                        lambda cfg, run, resume=False: seen.setdefault("search", (cfg.teacher_ckpt, cfg.out, run)))
    monkeypatch.setattr(qs, "write_arch", lambda run: (Path("qs/search/arch.json"), {}))
    monkeypatch.setattr(qs, "format_arch", lambda arch: "")
    monkeypatch.setattr(qs, "run_retrain", retrain)
    with pytest.raises(_Stop):
        run_quickstart("qs")
    root = tmp_path.resolve() / "qs"
    ckpt = str(root / "teacher" / "models" / "digits" / "Linf" / "wrn-16-1.pt")
    assert seen["teacher"] == (str(root / "teacher"), root / "teacher")
    assert seen["search"] == (ckpt, str(root / "search"), root / "search")
    assert seen["retrain"] == (str(root / "search" / "arch.json"), ckpt, str(root / "retrain-cl"), root / "retrain-cl")


def test_the_reference_tool_refuses_fewer_than_5_seeds_in_one_line(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "quickstart_reference.py"
    spec = importlib.util.spec_from_file_location("quickstart_reference", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--seeds", "0,1,2,3,3", "--out", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err == ("quickstart_reference: error: --seeds 0,1,2,3,3: at least 5 different seeds "
                                       ">= 0\n")
    assert tool.main(["--seeds", "0,1,x", "--out", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err == "quickstart_reference: error: --seeds 0,1,x: comma-separated whole numbers\n"
    assert not (tmp_path / "r.json").exists()


def test_a_negative_seed_is_one_line_and_exit_2(tmp_path):
    from helpers import main_in_process

    code, err = main_in_process("quickstart", "--seed", "-1", "--out", tmp_path / "qs")
    assert code == 2 and err.strip() == "rnas: error: --seed -1: a whole number >= 0"
    assert not (tmp_path / "qs").exists()


def test_the_idle_time_is_the_training_threads_cpu_time_and_half_the_evaluations():
    from rnas.commands.quickstart import cpu_seconds, idle_seconds

    assert idle_seconds({"training": 100.0, "evaluation": 60.0}) == 130.0
    spent = cpu_seconds()
    assert set(spent) == {"training", "evaluation"} and spent["training"] > 0


def test_resume_keeps_a_finished_teacher_and_resumes_the_runs_it_finds(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    import rnas.commands.quickstart as qs

    folder = tmp_path / "teacher" / "models" / "digits" / "Linf"
    folder.mkdir(parents=True)
    (folder / "wrn-16-1-nfgsm.json").write_text(json.dumps({"val": {}}))
    (tmp_path / "search").mkdir()
    seen = {}

    def retrain(cfg, run, resume=False):
        seen["retrain"] = (cfg.teacher_ckpt, resume)
        raise _Stop

    monkeypatch.setattr(qs, "run_teacher_training", lambda *a: pytest.fail("a finished teacher is trained again"))
    monkeypatch.setattr(qs, "run_search", lambda cfg, run, resume=False: seen.setdefault("search", resume))
    monkeypatch.setattr(qs, "write_arch", lambda run: (Path(run) / "arch.json", {"params": 1, "macs": 2}))
    monkeypatch.setattr(qs, "format_arch", lambda arch: "")
    monkeypatch.setattr(qs, "run_retrain", retrain)
    with pytest.raises(_Stop):
        run_quickstart(tmp_path, resume=True)
    assert seen == {"search": True, "retrain": (str(folder.resolve() / "wrn-16-1-nfgsm.pt"), False)}
