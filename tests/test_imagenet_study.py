"""ImageNet-100 end to end, planning side: studies/imagenet100-paper.yaml passes `rnas study --dry-run` on the
on-disk layout it expects (an ImageFolder root of the 100 CMC wnids, the teachers under
<model-dir>/imagenet100/Linf/) with the paper's Table 2 settings, and `tools/bench.py --imagenet` times the
224x224 search step with a 1000-output R-18 serving ImageNet-100's 100 classes."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import main_in_process

from rnas.data import imagenet100_classes

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "imagenet100-paper.yaml"
BENCH = REPO / "tools" / "bench.py"
TEACHERS = ("resnet18_linf_eps4", "resnet18_standard")  # the file's teacher and control_teacher names
SPACES = ("is", "im", "i")
MODELS = ("rnas-cl", "rnas-cl-trades", "rnas-cl-trades-mbn", "ce", "ce-trades", "kd", "kd-trades", "fixed",
          "fixed-trades", "control-teacher", "control-teacher-trades")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """(data dir, model dir): train/ and val/ with one 8x8 PNG per ImageNet-100 class, and the two teacher
    files where the study looks for them (the dry run checks that they exist; it does not read them)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet100-study")
    data = root / "imagenet100"
    for split in ("train", "val"):
        for label, wnid in enumerate(imagenet100_classes()):
            folder = data / split / wnid
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (label, 2 * label, 255 - label)).save(folder / "0.png")
    models = root / "teachers"
    (models / "imagenet100" / "Linf").mkdir(parents=True)
    for name in TEACHERS:
        torch.save({"model": {}}, models / "imagenet100" / "Linf" / f"{name}.pt")
    return data, models


def test_the_paper_study_plans_every_step(dirs, tmp_path, monkeypatch, capsys):
    data, models = dirs
    monkeypatch.chdir(tmp_path)  # the file's placeholder paths are relative to here: only the flags count
    out = tmp_path / "out"
    code, err = main_in_process("study", STUDY, "--data-dir", data, "--model-dir", models, "--out", out, "--dry-run")
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert code == 0, err
    assert not out.exists()
    steps = [(kind, path) for _, kind, path, *_ in listed]
    assert all(line[-2:] == ["to", "run"] for line in listed)
    # per space: search, derive, 5 arms retrained, 6 fine-tunes, 3 evaluations (pixel, normalized, sweep) of
    # each of the 11 models
    assert len(steps) == 3 * (2 + 5 + 6 + 11 * 3) == 138
    kinds = [kind for kind, _ in steps]
    assert {k: kinds.count(k) for k in set(kinds)} == {"search": 3, "derive": 3, "retrain": 15, "finetune": 18,
                                                       "eval": 99}
    assert steps[:6] == [("search", "search-is"), ("derive", "search-is"), ("retrain", "is/rnas-cl"),
                         ("finetune", "is/rnas-cl-trades"), ("finetune", "is/rnas-cl-trades-mbn"),
                         ("eval", "is/rnas-cl/eval-pixel.json")]
    assert [path for kind, path in steps if kind == "search"] == [f"search-{s}" for s in SPACES]
    assert ("retrain", "i/control-teacher") in steps and ("finetune", "i/control-teacher-trades") in steps
    assert steps[-1] == ("eval", "i/control-teacher-trades/eval-sweep.json")
    evaluated = {path.rsplit("/", 1)[0] for kind, path in steps if kind == "eval"}
    assert evaluated == {f"{s}/{m}" for s in SPACES for m in MODELS}


def test_the_paper_study_has_the_table_2_settings(dirs, tmp_path):
    from rnas.study.plan import plan_study

    data, models = dirs
    study = plan_study(STUDY, tmp_path / "out", {"data_dir": str(data), "model_dir": str(models)})
    steps = {s.name: s for s in study.steps()}
    search = steps["search/i"].config
    assert (search.data, search.teacher, search.teacher_ckpt, search.space) == ("imagenet100", "r18",
                                                                                "resnet18_linf_eps4", "i")
    assert (search.data_dir, search.model_dir) == (str(data), str(models))
    for name in ("retrain/i/rnas-cl", "retrain/is/ce", "retrain/im/kd"):
        cfg = steps[name].config
        assert (cfg.epochs, cfg.lr, cfg.cosine, cfg.weight_decay, cfg.batch_size) == (200, 0.05, True, 4e-5, 256)
    control = steps["retrain/i/control-teacher"].config
    assert (control.teacher, control.teacher_ckpt) == ("r18", "resnet18_standard")
    tune = steps["finetune/i/rnas-cl-trades-mbn"].config
    assert tune.trades and tune.mbn and (tune.epochs, tune.lr) == (20, 0.01)
    assert (round(tune.eps * 255, 6), round(tune.step * 255, 6), tune.steps) == (4, 1, 10)
    pixel = steps["eval/i/rnas-cl/pixel"].config
    assert pixel.attack_list() == ["clean", "fgsm", "pgd20", "mifgsm", "cw", "autoattack"]
    assert round(pixel.eps * 255, 6) == 4 and pixel.n == 5000  # every image of val/ (it is ordered by class)
    assert steps["eval/i/rnas-cl/normalized"].config.eps_space == "normalized"


def test_the_study_says_where_the_teacher_checkpoint_goes(dirs, tmp_path):
    data, _ = dirs
    code, err = main_in_process("study", STUDY, "--data-dir", data, "--model-dir", tmp_path, "--dry-run")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "teacher.teacher_ckpt: teacher checkpoint 'resnet18_linf_eps4' not found: no file " in lines[0]
    assert lines[0].endswith(str(tmp_path / "imagenet100" / "Linf" / "resnet18_linf_eps4.pt"))


def _bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_builds_the_imagenet100_search_with_a_1000_output_teacher():
    searcher, standalone, x, y = _bench().setup_imagenet("is", "r18", 2, "cpu", False, False)
    try:
        assert x.shape == (2, 3, 224, 224) and int(y.max()) < 100
        assert searcher.teacher.net.fc.out_features == 1000 and searcher.teacher.class_subset == "imagenet"
        with torch.no_grad():
            assert searcher.teacher(x).shape == (2, 100)
            assert standalone(x).shape == (2, 100)
        assert searcher.supernet.num_classes == 100 and searcher.supernet.spec.input_size == 224
    finally:
        searcher.close()


def _run_bench(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("args,message", [
    (["--imagenet", "--space", "s5"], "--space s5: --imagenet times a 224x224 ImageNet-100 space (is, im, i)"),
    (["--imagenet", "--teacher", "r19"], "--teacher: unknown teacher 'r19'"),
    (["--imagenet", "--steps", "0"], "argument --steps: 0: must be >= 1"),
    (["--steps", "2"], "--steps: only with --imagenet"),
])
def test_bench_bad_flags_are_one_line(args, message):
    result = _run_bench(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.slow
def test_bench_imagenet_times_the_search_step():
    result = _run_bench("--imagenet", "--space", "is", "--batch-size", "4", "--steps", "1", "--threads", "1",
                        "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert (row["mode"], row["space"], row["teacher"], row["batch_size"], row["input_size"]) == (
        "imagenet", "is", "r18", 4, 224)
    assert row["search_step_s"] > 0 and row["search_images_per_s"] == pytest.approx(4 / row["search_step_s"],
                                                                                     rel=1e-3)
    assert row["epoch_hours"] == pytest.approx(row["epoch_images"] / 4 * row["search_step_s"] / 3600, rel=1e-2)
    assert row["step_memory_kind"] == "saved_for_backward" and row["step_memory_bytes"]["f"] > 0
    assert row["peak_rss_bytes"] > 0 and row["step_rss_growth_bytes"] >= 0
