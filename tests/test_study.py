"""`rnas study`: bad study files are one line before anything runs; a study runs its graph, isolates a
failed step, stops on SIGTERM with every run checkpointed, and a restart finishes it without redoing
finished steps."""
import json
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml
from helpers import main_in_process, rnas_cmd, write_teacher, write_tiny_setup

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = write_tiny_setup(tmp_path_factory.mktemp("study"))
    write_teacher(root / "models", name="control")
    # a control teacher that is not a wrn-10-1: its arm fails when it loads it, the others go on
    write_teacher(root / "models", name="not-a-wrn-10-1", depth=16)
    return root


def study_dict(root, **changes) -> dict:
    study = {
        "name": "tiny",
        "data": {"data": "cifar10", "data_dir": str(root / "data"), "val_size": 50},
        "teacher": {"teacher": "wrn-10-1", "teacher_ckpt": "tiny", "model_dir": str(root / "models")},
        "control_teacher": {"teacher": "wrn-10-1", "teacher_ckpt": "control", "model_dir": str(root / "models")},
        "searches": [{"space": str(root / "tiny.yaml")}],
        "search": {"epochs": 1, "batch_size": 25, "arch_lr": 0.05},
        "retrain": {"epochs": 1, "batch_size": 25},
        "arms": [{"arm": "rnas-cl", "finetune": ["trades"]}, "ce"],
        "finetune": {"epochs": 1, "steps": 2},
        "eval": {"attacks": ["clean", "fgsm"], "n": 20, "sweep": {"attacks": ["fgsm"], "eps": ["2/255", "8/255"]}},
        "jobs": 2, "threads": 1,
    }
    study.update(changes)
    return study


def write_study(path, study: dict):
    path.write_text(yaml.safe_dump(study))
    return path


BAD = [
    ({"arms": ["rnas-cl", "typo"]}, "arms[1]: 'typo': not an arm"),
    ({"arms": [{"arm": "ce", "finetune": ["trade"]}]}, "arms[0].finetune: 'trade': one of trades, trades+mbn"),
    ({"retrain": {"epochs": "x"}}, "retrain: epochs: expected int, got 'x'"),
    ({"retrain": {"epochs": 0}}, "retrain (rnas-cl): --epochs 0: must be >= 1"),
    ({"search": {"space": "s5"}}, "search.space: unknown key (set by the study itself)"),
    ({"search": {"data_dir": "x"}}, "search.data_dir: unknown key (set by the study itself)"),
    ({"data": {"data": "cifar10", "arch_lr": 0.1}}, "data.arch_lr: not a data setting"),
    ({"arms": [["ce"]]}, "arms[0]: ['ce']: not an arm"),
    ({"arms": [{"arm": "ce", "seeds": [0, 1, 1]}]}, "arms[0].seeds: [0, 1, 1]: each seed once"),
    ({"arms": [{"arm": "ce", "seeds": [-1]}]}, "arms[0].seeds: -1: a whole number >= 0"),
    ({"arms": [{"arm": "ce", "seeds": [True]}]}, "arms[0].seeds: True: a whole number >= 0"),
    ({"arms": [{"arm": "ce", "seeds": 1}, {"arm": "ce", "seeds": [1]}]}, "arms[1]: ce is listed twice with seed 1"),
    ({"arms": ["ce", {"arm": "ce", "seeds": [1, 0]}]}, "arms[1]: ce is listed twice with seed 0"),
    ({"arms": [{"arm": "rnas-cl", "seeds": [0, 1], "finetune": ["trades"]}], "finetune": {"seed": 3}},
     "finetune.seed: set beside an arm's seeds:"),
    ({"finetune": {"from_scratch": True}}, "finetune.from_scratch: unknown key (set by the study itself)"),
    ({"eval": {"attacks": ["pgd"]}}, "eval.attacks: unknown attack 'pgd'"),
    ({"eval": {"sweep": {"eps": ["8/0"]}}}, "eval.sweep.eps: bad eps '8/0'"),
    ({"arm": ["ce"]}, "arm: unknown key"),
    ({"jobs": 0}, "jobs: 0: a whole number >= 1"),
    ({"control_teacher": None, "arms": ["control-teacher"]}, "control-teacher needs a control_teacher section"),
    ({"searches": []}, "searches: expected a non-empty list"),
    ({"searches": [{"space": "s3", "budget": 5}]}, "searches[0].budget: unknown key"),
    ({"searches": [{"space": "s3", "budgets": ["6Q"]}]}, "searches[0].budgets: bad MAC count '6Q'"),
    ({"searches": [{"space": "s3", "scale": ["big"]}]}, "searches[0].scale: bad MAC count 'big'"),
    ({"searches": [{"space": "s3", "scale": "9M", "budgets": ["6M"]}]},
     "searches[0].scale: grows the search's own net (arch.json), which budgets leaves out"),
    ({"searches": [{"space": "s3", "tutor_derive": "best"}]},
     "searches[0].tutor_derive: 'best': one of argmax, balanced, monotone"),
    ({"arms": [{"arm": "ce", "at": "fgsm"}]}, "arms[0].at: 'fgsm': one of none, trades, pgd, nfgsm"),
    ({"arms": [{"arm": "ce", "budget": [15, "lots"]}]}, "arms[0].budget: 'lots': a number of CE-epoch equivalents"),
    ({"arms": [{"arm": "ce", "budget": 0}]}, "arms[0].budget: 0: a number of CE-epoch equivalents > 0"),
    ({"arms": [{"arm": "ce", "at": "pgd"}, {"arm": "ce", "at": "pgd"}]}, "arms[1]: ce-pgd is listed twice"),
    ({"retrain": {"at": "pgd"}}, "retrain.at: unknown key (set by the study itself)"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_study_file_is_one_line_naming_the_field_and_nothing_runs(root, tmp_path, changes, message):
    study = write_study(tmp_path / "bad.yaml", study_dict(root, **changes))
    code, err = main_in_process("study", study, "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"bad.yaml: {message}" in lines[0] or message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["teacher"].update(teacher_ckpt="absent"),
     "teacher.teacher_ckpt: teacher checkpoint 'absent' not found"),
    (lambda s: s["data"].update(data_dir="/nonexistent/cifar"), "data.data_dir: /nonexistent/cifar: no such directory"),
])
def test_missing_teacher_or_data_is_caught_before_anything_runs(root, tmp_path, edit, message):
    study = study_dict(root)
    edit(study)
    code, err = main_in_process("study", write_study(tmp_path / "s.yaml", study), "--out", tmp_path / "out")
    assert code == 2 and message in err.strip() and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_yaml_and_missing_file(root, tmp_path):
    (tmp_path / "broken.yaml").write_text("arms: [ce\n")
    code, err = main_in_process("study", tmp_path / "broken.yaml")
    assert code == 2 and "broken.yaml: bad YAML at line" in err
    code, err = main_in_process("study", tmp_path / "absent.yaml")
    assert code == 2 and "absent.yaml: no such study file" in err


def test_plan_is_a_graph_in_file_order(root, tmp_path, capsys):
    study = write_study(tmp_path / "s.yaml", study_dict(root))
    code, _ = main_in_process("study", study, "--out", tmp_path / "out", "--dry-run")
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and not (tmp_path / "out").exists()
    assert [(kind, path) for _, kind, path, *_ in listed] == [
        ("search", "search-tiny"), ("derive", "search-tiny"),
        ("retrain", "tiny/rnas-cl"), ("finetune", "tiny/rnas-cl-trades"),
        ("eval", "tiny/rnas-cl/eval-pixel.json"), ("eval", "tiny/rnas-cl/eval-sweep.json"),
        ("eval", "tiny/rnas-cl-trades/eval-pixel.json"), ("eval", "tiny/rnas-cl-trades/eval-sweep.json"),
        ("retrain", "tiny/ce"), ("eval", "tiny/ce/eval-pixel.json"), ("eval", "tiny/ce/eval-sweep.json")]
    assert all(line[-2:] == ["to", "run"] for line in listed)


def test_arms_adversarially_trained_for_a_compute_budget(root, tmp_path, capsys):
    from rnas.study.plan import plan_study

    arms = ["rnas-cl", {"arm": "rnas-cl", "at": "nfgsm", "budget": [2, 4]}, {"arm": "ce", "at": "pgd", "budget": 3}]
    study = write_study(tmp_path / "s.yaml", study_dict(root, arms=arms))
    plan = plan_study(study, tmp_path / "out")
    retrains = {s.path: s.config for s in plan.steps() if s.kind == "retrain"}
    assert list(retrains) == ["tiny/rnas-cl", "tiny/rnas-cl-nfgsm-2ce", "tiny/rnas-cl-nfgsm-4ce", "tiny/ce-pgd-3ce"]
    assert (retrains["tiny/rnas-cl"].at, retrains["tiny/rnas-cl"].budget, retrains["tiny/rnas-cl"].epochs) == (
        None, None, 1)
    for path, (at, budget, baseline) in {"tiny/rnas-cl-nfgsm-2ce": ("nfgsm", 2, "cl"),
                                         "tiny/rnas-cl-nfgsm-4ce": ("nfgsm", 4, "cl"),
                                         "tiny/ce-pgd-3ce": ("pgd", 3, "ce")}.items():
        cfg = retrains[path]
        assert (cfg.at, cfg.budget, cfg.baseline, cfg.from_scratch, cfg.epochs) == (at, budget, baseline, True, None)
    models = {m["name"]: m for m in plan.models}
    assert (models["tiny/ce-pgd-3ce"]["at"], models["tiny/ce-pgd-3ce"]["compute_budget"]) == ("pgd", 3.0)


def test_arms_under_several_seeds(root, tmp_path):
    """seeds: one run per seed, fine-tunes with their arm's seed; the retrain section's own seed keeps the
    plain name (a finished study that gains seeds only gains runs), the others are -s<seed>; study.json says
    the seed each model ran with."""
    from rnas.study.plan import plan_study

    arms = [{"arm": "rnas-cl", "seeds": [0, 1, 2], "finetune": ["trades"]}, {"arm": "ce", "seeds": [3]}, "kd"]
    study = write_study(tmp_path / "s.yaml", study_dict(root, arms=arms))
    plan = plan_study(study, tmp_path / "out")
    trained = {s.path: s.config.seed for s in plan.steps() if s.kind in ("retrain", "finetune")}
    assert trained == {"tiny/rnas-cl": 0, "tiny/rnas-cl-trades": 0, "tiny/rnas-cl-s1": 1, "tiny/rnas-cl-s1-trades": 1,
                       "tiny/rnas-cl-s2": 2, "tiny/rnas-cl-s2-trades": 2, "tiny/ce-s3": 3, "tiny/kd": 0}
    assert {m["name"]: m["seed"] for m in plan.models}["tiny/rnas-cl-s2-trades"] == 2
    plain = study_dict(root, arms=[{"arm": "rnas-cl", "finetune": ["trades"]}],
                       finetune={"epochs": 1, "steps": 2, "seed": 5})  # no seeds: the section's seed kept
    plan = plan_study(write_study(tmp_path / "f.yaml", plain), tmp_path / "outf")
    assert [(s.path, s.config.seed) for s in plan.steps() if s.kind == "finetune"] == [("tiny/rnas-cl-trades", 5)]
    assert {m["name"]: m["seed"] for m in plan.models}["tiny/rnas-cl-trades"] == 5  # what it runs with
    seeded = study_dict(root, arms=[{"arm": "ce", "seeds": [0, 7]}], retrain={"epochs": 1, "batch_size": 25,
                                                                            "seed": 7})
    plan = plan_study(write_study(tmp_path / "s7.yaml", seeded), tmp_path / "out7")
    assert {s.path: s.config.seed for s in plan.steps() if s.kind == "retrain"} == {"tiny/ce-s0": 0, "tiny/ce": 7}


def _start(study, out):
    return subprocess.Popen(rnas_cmd("study", study, "--out", out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONHASHSEED="0"))


def _states(out) -> dict:
    return {s["name"]: s for s in json.loads((out / "study.json").read_text())["steps"]}


@pytest.mark.timeout(400)  # three study processes, a stop and two restarts: ~60 s alone, more on a loaded machine
def test_study_stops_restarts_isolates_a_failure_and_skips_what_is_done(root, tmp_path):
    spec = study_dict(root, retrain={"epochs": 12, "batch_size": 25},
                      control_teacher={"teacher": "wrn-10-1", "teacher_ckpt": "not-a-wrn-10-1",
                                       "model_dir": str(root / "models")})
    spec["arms"].append("control-teacher")
    study, out = write_study(tmp_path / "tiny.yaml", spec), tmp_path / "out"

    # 1. SIGTERM while the first retrain runs: every running step checkpoints, the study says how to go on
    proc = _start(study, out)
    try:
        deadline = time.time() + 300
        metrics = out / "tiny" / "rnas-cl" / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # after its first epoch (of 12)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"rnas study {study} --out {out} continues it" in err
    states = _states(out)
    assert states["search/tiny"]["state"] == "done"
    assert states["retrain/tiny/rnas-cl"]["state"] == "pending"
    assert not any(s["state"] in ("failed", "running") for name, s in states.items() if "control" not in name)
    search_ckpt = out / "search-tiny" / "checkpoint.pt"
    search_mtime = search_ckpt.stat().st_mtime_ns

    # 2. restart: finishes everything except the broken arm, which blocks only its own evaluations
    proc = _start(study, out)
    printed, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, err
    states = _states(out)
    failed = states["retrain/tiny/control-teacher"]
    assert failed["state"] == "failed" and "\n" not in failed["error"] and "not-a-wrn-10-1" in failed["error"]
    assert {states[f"eval/tiny/control-teacher/{p}"]["state"] for p in ("pixel", "sweep")} == {"blocked"}
    done = [name for name, s in states.items() if "control-teacher" not in name]
    assert all(states[name]["state"] == "done" for name in done)
    assert search_ckpt.stat().st_mtime_ns == search_mtime  # the finished search was not run again
    assert len((out / "tiny" / "rnas-cl" / "metrics.jsonl").read_text().splitlines()) == 12
    assert torch.load(out / "tiny" / "rnas-cl" / "checkpoint.pt", weights_only=True)["epoch"] == 12
    assert "[3/14] retrain tiny/rnas-cl: started (resuming at" in err and "ETA" in err
    assert printed.strip().splitlines()[-1].startswith("study tiny: 11/14 steps done, 1 failed, 2 blocked;")

    # the models and their evaluations, as the report reads them
    models = {m["name"]: m for m in json.loads((out / "study.json").read_text())["models"]}
    assert set(models) == {"tiny/rnas-cl", "tiny/rnas-cl-trades", "tiny/ce", "tiny/control-teacher"}
    assert models["tiny/rnas-cl-trades"]["finetune"] == "trades"
    for name in ("tiny/rnas-cl", "tiny/rnas-cl-trades", "tiny/ce"):
        sweep = json.loads((out / models[name]["evals"]["sweep"]).read_text())["results"]
        assert [(r["attack"], round(r["eps"] * 255)) for r in sweep] == [("fgsm", 2), ("fgsm", 8)]
        pixel = json.loads((out / models[name]["evals"]["pixel"]).read_text())
        assert [r["attack"] for r in pixel["results"]] == ["clean", "fgsm"] and pixel["n"] == 20
    assert not list(out.rglob("*.partial"))

    # 3. a third run redoes nothing that is done (only the broken arm is tried again)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "control-teacher" not in str(p)
              and p.name not in ("study.json", "study.yaml")}
    proc = _start(study, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and err.count(": started") == 1 and "retrain tiny/control-teacher: started" in err
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_more_epochs_extend_a_run_and_redo_its_evaluation_other_changes_are_refused(root, tmp_path, capsys):
    spec = study_dict(root, arms=["ce"], eval={"attacks": ["clean"], "n": 10}, retrain={"batch_size": 25})
    study, out = write_study(tmp_path / "s.yaml", spec), tmp_path / "out"
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    assert code == 0  # epochs left to the recipe: planned without a number
    spec["retrain"]["epochs"] = 1
    code, err = main_in_process("study", write_study(study, spec), "--out", out)
    assert code == 0, err
    evaluation = out / "tiny" / "ce" / "eval-pixel.json"
    first = evaluation.stat().st_mtime_ns
    assert json.loads(evaluation.read_text())["requested"]["n"] == 10

    spec["retrain"]["epochs"] = 2  # the run is extended, and its evaluation (of the 1-epoch model) redone
    code, err = main_in_process("study", write_study(study, spec), "--out", out)
    assert code == 0, err
    assert len((out / "tiny" / "ce" / "metrics.jsonl").read_text().splitlines()) == 2
    assert evaluation.stat().st_mtime_ns > first

    spec["eval"]["n"] = 12  # another evaluation is asked for: redone
    code, err = main_in_process("study", write_study(study, spec), "--out", out)
    assert code == 0 and json.loads(evaluation.read_text())["n"] == 12

    spec["retrain"]["weight_decay"] = 0.01
    code, err = main_in_process("study", write_study(study, spec), "--out", out)
    states = _states(out)
    assert code == 1
    assert "was run with weight_decay 0.0002, the study now asks for 0.01" in states["retrain/tiny/ce"]["error"]
    assert states["eval/tiny/ce/pixel"]["state"] == "blocked"  # waits for its run; its file is kept
    assert json.loads(evaluation.read_text())["n"] == 12
    capsys.readouterr()
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    printed = capsys.readouterr().out
    assert code == 0  # the dry run says what the run refuses
    assert "retrain  tiny/ce" in printed and "refused: " in printed and "weight_decay 0.0002" in printed


@pytest.mark.parametrize("now,refused", [(None, False), (5000, False), (4000, True)])
def test_a_run_that_left_val_size_to_its_dataset_is_the_same_as_one_naming_that_default(now, refused):
    """A run made without --val-size (config.yaml: None) used the dataset's default; a study or resume that
    names that default asks for the same run (CIFAR-10's is 5,000), another size does not."""
    import dataclasses

    from rnas.config import changed_setting
    from rnas.engine.retrain import RetrainConfig

    base = dataclasses.asdict(RetrainConfig(arch="a.json", data="cifar10", val_size=None))
    asked = RetrainConfig(arch="a.json", data="cifar10", val_size=now)
    assert changed_setting(base, asked, unset_ok=True) == (("val_size", None, 4000) if refused else None)
    assert changed_setting({**base, "val_size": 4000}, asked, unset_ok=True) == (
        None if now in (None, 4000) else ("val_size", 4000, 5000))


def test_a_search_scaled_to_a_budget_trains_its_robustscaling_and_widened_nets(root, tmp_path, capsys):
    """`scale: X` grows the derived net to X MACs by RobustScaling and by width alone, as `rnas scale` does,
    and trains every arm on each; a second run finds every step done."""
    spec = study_dict(root, arms=["ce"], eval={"attacks": ["clean"], "n": 10}, control_teacher=None,
                      searches=[{"space": str(root / "tiny.yaml"), "scale": "0.5M"}])
    study, out = write_study(tmp_path / "s.yaml", spec), tmp_path / "out"
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    listed = [line.split()[1:3] for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [p for kind, p in listed if kind == "retrain"] == ["tiny/ce", "tiny-scaled-0.5M/ce",
                                                                           "tiny-widened-0.5M/ce"]
    code, err = main_in_process("study", study, "--out", out)
    assert code == 0, err
    arch = json.loads((out / "search-tiny" / "arch.json").read_text())
    for rule, flag in (("scaled", []), ("widened", ["--width-only"])):
        grown = json.loads((out / "search-tiny" / f"arch-{rule}-0.5M.json").read_text())
        code, err = main_in_process("scale", out / "search-tiny" / "arch.json", "--macs", "0.5M", *flag, "-o",
                                    tmp_path / f"{rule}.json")
        assert code == 0, err
        by_hand = json.loads((tmp_path / f"{rule}.json").read_text())
        assert (grown["widths"], grown["macs"], grown["spec"]) == (by_hand["widths"], by_hand["macs"], by_hand["spec"])
        assert arch["macs"] < grown["macs"] <= 500_000
        saved = torch.load(out / f"tiny-{rule}-0.5M" / "ce" / "checkpoint.pt", weights_only=True)
        assert saved["arch"]["widths"] == grown["widths"] and saved["epoch"] == 1
    models = {m["name"]: m for m in json.loads((out / "study.json").read_text())["models"]}
    assert (models["tiny-widened-0.5M/ce"]["scale"], models["tiny-widened-0.5M/ce"]["budget"]) == ("widened", 500_000)
    capsys.readouterr()
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    assert code == 0 and all(line.split()[-1] == "done" for line in capsys.readouterr().out.splitlines())


def test_a_search_with_budgets_trains_one_net_per_budget(root, tmp_path):
    """`budgets: [X]` without `scale`: the derive step writes arch-<X>.json only (as `rnas derive
    --mac-target X`) and the arms train it (it once failed looking for the arch.json only `scale` asks for)."""
    spec = study_dict(root, arms=["ce"], eval={"attacks": ["clean"], "n": 10}, control_teacher=None,
                      searches=[{"space": str(root / "tiny.yaml"), "budgets": ["0.3M"]}])
    study, out = write_study(tmp_path / "s.yaml", spec), tmp_path / "out"
    code, err = main_in_process("study", study, "--out", out)
    assert code == 0, err
    arch = json.loads((out / "search-tiny" / "arch-0.3M.json").read_text())
    assert arch["mac_target"] == 300_000 and arch["macs"] <= 300_000
    assert not (out / "search-tiny" / "arch.json").exists()
    saved = torch.load(out / "tiny-0.3M" / "ce" / "checkpoint.pt", weights_only=True)
    assert saved["arch"]["widths"] == arch["widths"]


def test_a_search_derives_the_tutors_its_entry_names(root, tmp_path):
    """`tutor_derive: argmax` in a search entry: its derive step writes the paper's argmax tutors
    (arch-argmax.json, as `rnas derive --tutor-derive argmax`) and the arms train that file; the default is
    balanced (arch.json)."""
    spec = study_dict(root, arms=["rnas-cl"], eval={"attacks": ["clean"], "n": 10}, control_teacher=None,
                      searches=[{"space": str(root / "tiny.yaml"), "tutor_derive": "argmax"}])
    study, out = write_study(tmp_path / "s.yaml", spec), tmp_path / "out"
    code, err = main_in_process("study", study, "--out", out)
    assert code == 0, err
    arch = json.loads((out / "search-tiny" / "arch-argmax.json").read_text())
    logits = torch.load(out / "search-tiny" / "checkpoint.pt", weights_only=True)["tutor"]["tutor_logits"]
    assert arch["tutor_derive"] == "argmax" and arch["tutors"] == logits.argmax(1).tolist()
    assert not (out / "search-tiny" / "arch.json").exists()
    saved = torch.load(out / "tiny" / "rnas-cl" / "checkpoint.pt", weights_only=True)
    assert saved["arch"]["tutors"] == arch["tutors"] and saved["arch"]["tutor_derive"] == "argmax"


def test_a_net_derived_elsewhere_is_trained_and_grown_without_searching_again(root, tmp_path, capsys):
    """`archs: [{arch: FILE, name: mine, scale: X}]` and no searches: a grow step copies FILE into the study and
    grows it as `rnas scale` does, every arm trains the copy and the grown nets; a changed FILE is grown again;
    a bad entry is one line naming it."""
    from helpers import tiny_search_and_derive

    from rnas.nets.scaling import scale_arch

    source = tiny_search_and_derive(root, tmp_path / "earlier", "--limit", 20, "--batch-size", 10)
    own = json.loads(source.read_text())
    capsys.readouterr()
    spec = study_dict(root, arms=["ce"], eval={"attacks": ["clean"], "n": 10}, control_teacher=None,
                      archs=[{"arch": str(source), "name": "mine", "scale": "0.5M"}])
    del spec["searches"]
    study, out = write_study(tmp_path / "s.yaml", spec), tmp_path / "out"
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    listed = [line.split()[1:3] for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and listed[0] == ["grow", "arch-mine"]
    assert [p for kind, p in listed if kind == "retrain"] == ["mine/ce", "mine-scaled-0.5M/ce", "mine-widened-0.5M/ce"]
    assert not any(kind == "search" for kind, _ in listed)
    code, err = main_in_process("study", study, "--out", out)
    assert code == 0, err
    assert (out / "arch-mine" / "arch.json").read_text() == source.read_text()
    for rule, width_only in (("scaled", False), ("widened", True)):
        grown = json.loads((out / "arch-mine" / f"arch-{rule}-0.5M.json").read_text())
        by_hand = scale_arch(own, 500_000, str(source), width_only)
        assert (grown["widths"], grown["macs"], grown["spec"]) == (by_hand["widths"], by_hand["macs"], by_hand["spec"])
        saved = torch.load(out / f"mine-{rule}-0.5M" / "ce" / "checkpoint.pt", weights_only=True)
        assert saved["arch"]["widths"] == grown["widths"]
    assert torch.load(out / "mine" / "ce" / "checkpoint.pt", weights_only=True)["arch"]["widths"] == own["widths"]
    models = {m["name"]: m for m in json.loads((out / "study.json").read_text())["models"]}
    assert models["mine/ce"]["search"] is None and models["mine/ce"]["arch"] == "arch-mine/arch.json"
    assert models["mine-scaled-0.5M/ce"]["scale"] == "scaled"
    code, err = main_in_process("report", out, "-o", tmp_path / "report")  # a study without searches reports
    assert code == 0 and "mine-widened-0.5M/ce" in (tmp_path / "report" / "index.html").read_text(), err
    capsys.readouterr()
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    assert code == 0 and all(line.split()[-1] == "done" for line in capsys.readouterr().out.splitlines())
    source.write_text(json.dumps({**own, "tutors": own["tutors"][::-1]}, indent=1))  # the net was re-derived
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    states = {line.split()[2]: line.split()[-1] for line in capsys.readouterr().out.splitlines()}
    assert code == 0 and states["arch-mine"] == "run"
    before = (out / "mine" / "ce" / "checkpoint.pt").read_bytes()
    code, _ = main_in_process("study", study, "--out", out)  # grown again; the runs of the old net are refused
    steps = {s["dir"]: s for s in json.loads((out / "study.json").read_text())["steps"]}
    assert code == 1 and steps["arch-mine"]["state"] == "done"
    assert (out / "arch-mine" / "arch.json").read_text() == source.read_text()
    for run in ("mine/ce", "mine-scaled-0.5M/ce", "mine-widened-0.5M/ce"):
        assert steps[run]["state"] == "failed" and "was trained on another net than" in steps[run]["error"], run
    assert (out / "mine" / "ce" / "checkpoint.pt").read_bytes() == before
    moved = source.rename(tmp_path / "moved.json")  # the study's copy stands in for a file moved away
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    states = {line.split()[2]: line.split()[-1] for line in capsys.readouterr().out.splitlines()}
    assert code == 0 and states["arch-mine"] == "done"
    moved.rename(source)
    twice = [{"arch": str(source), "name": "n"}, {"arch": str(source), "name": "n", "scale": "0.5M", "own": False}]
    for archs, message in (([{"arch": str(tmp_path / "absent.json")}], "archs[0].arch: "
                            f"{tmp_path / 'absent.json'}: cannot read arch file (No such file or directory)"),
                           ([{"arch": str(source), "scale": "1k"}], "archs[0].scale: 1,000 MACs is below"),
                           ([{"arch": str(source), "own": False}], "archs[0].own: False: true or false, and false"),
                           ([{"arch": str(source), "name": "a b"}], "archs[0].name: 'a b': letters, digits"),
                           ([{"arch": str(source), "grow": 1}], "archs[0].grow: unknown key"),
                           (twice, "archs[1].name: 'n' is given twice")):
        bad = write_study(tmp_path / "bad.yaml", {**spec, "archs": archs})
        code, err = main_in_process("study", bad, "--out", tmp_path / "bad-out")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad-out").exists()


def test_runs_with_robust_validation_have_their_best_epoch_evaluated_as_a_row_of_its_own(root, tmp_path, capsys):
    """`retrain: {robust_val: N}`: each eval is done on checkpoint.pt and on best.pt, best.pt's as `<run>@best`,
    with the accuracy `rnas eval best.pt` gives, and `rnas report` lists both rows."""
    spec = study_dict(root, arms=["ce"], eval={"attacks": ["clean"], "n": 10}, control_teacher=None,
                      retrain={"epochs": 2, "batch_size": 25, "robust_val": 20, "steps": 2})
    study, out = write_study(tmp_path / "s.yaml", spec), tmp_path / "out"
    code, _ = main_in_process("study", study, "--out", out, "--dry-run")
    listed = [line.split()[1:3] for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [p for kind, p in listed if kind == "eval"] == ["tiny/ce/eval-pixel.json",
                                                                        "tiny/ce/eval-best-pixel.json"]
    code, err = main_in_process("study", study, "--out", out)
    assert code == 0, err
    models = {m["name"]: m for m in json.loads((out / "study.json").read_text())["models"]}
    assert models["tiny/ce@best"]["evals"] == {"pixel": "tiny/ce/eval-best-pixel.json"}
    assert models["tiny/ce@best"]["run"] == models["tiny/ce"]["run"] == "tiny/ce"
    code, err = main_in_process("eval", out / "tiny/ce/best.pt", "--attacks", "clean", "--n", 10, "--json",
                                tmp_path / "by-hand.json")
    assert code == 0, err
    accuracy = [json.loads(p.read_text())["results"][0]["accuracy"]
                for p in (out / "tiny/ce/eval-best-pixel.json", tmp_path / "by-hand.json")]
    assert accuracy[0] == accuracy[1]
    code, err = main_in_process("report", out, "-o", tmp_path / "report")
    assert code == 0, err
    rows = {m["name"] for m in json.loads((tmp_path / "report" / "models.json").read_text())["models"]}
    assert rows == {"tiny/ce", "tiny/ce@best"}
