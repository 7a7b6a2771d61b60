"""Files written by an earlier rnas (tests/data/legacy-3d9d125: a tiny search's checkpoint, its arch.json
and a cl retrain checkpoint, written by the code of commit 3d9d125, before the dataset registry and the
module renames) still load and give the same numbers."""
import json
import shutil
from pathlib import Path

import torch
from helpers import main_in_process, write_cifar10

import rnas

LEGACY = Path(__file__).parent / "data" / "legacy-3d9d125"


def test_an_old_retrain_checkpoint_loads_and_computes_the_same_logits():
    model = rnas.load_model(LEGACY / "retrain.pt").eval()
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)  # the input the old code saw
    with torch.no_grad():
        logits = model(x)
    expected = torch.tensor(json.loads((LEGACY / "expected.json").read_text())["logits"])
    assert torch.allclose(logits, expected, rtol=1e-5, atol=1e-4)


def test_an_old_arch_json_builds_and_an_old_search_derives_the_same_file(tmp_path):
    old = json.loads((LEGACY / "arch.json").read_text())
    state = torch.load(LEGACY / "retrain.pt", weights_only=True)["model"]
    rnas.build_model(LEGACY / "arch.json").load_state_dict(state)  # every key and shape as before
    run = tmp_path / "search"
    run.mkdir()
    shutil.copy(LEGACY / "search.pt", run / "checkpoint.pt")
    shutil.copy(LEGACY / "search-config.yaml", run / "config.yaml")
    code, err = main_in_process("derive", run, "--tutor-derive", "argmax")  # the derivation it was written by
    assert code == 0, err
    new = json.loads((run / "arch-argmax.json").read_text())
    added = {"tutor_derive", "tutor_objective", "tutor_diversity"}  # what arch.json has said since
    def same(arch):
        return {k: v for k, v in arch.items() if k != "rnas_version" and k not in added}
    assert same(new) == same(old)
    assert (new["tutor_derive"], new["tutor_objective"]) == ("argmax", "paper")
    shutil.copy(LEGACY / "arch.json", run / "arch.json")  # the old file under today's default name
    code, err = main_in_process("derive", run)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{run / 'arch.json'}: holds argmax tutors, not balanced" in err
    assert (run / "arch.json").read_bytes() == (LEGACY / "arch.json").read_bytes()
    (run / "arch.json").unlink()
    code, err = main_in_process("derive", run)  # today's default: the same net, balanced tutors
    assert code == 0, err
    balanced = json.loads((run / "arch.json").read_text())
    assert balanced["tutor_derive"] == "balanced" and balanced["widths"] == old["widths"]
    cap = -(-len(balanced["tutors"]) // len(balanced["teacher_layers"]))
    assert max(balanced["tutors"].count(j) for j in set(balanced["tutors"])) <= cap


def test_an_old_checkpoint_is_evaluated(tmp_path):
    write_cifar10(tmp_path / "data")  # the data the old run was trained on (its config names it by a relative path)
    out = tmp_path / "eval.json"
    code, err = main_in_process("eval", LEGACY / "retrain.pt", "--data-dir", tmp_path / "data", "--attacks",
                                "clean,pgd10", "--n", 20, "--json", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert (result["data"], result["split"], result["n"]) == ("cifar10", "val", 20)
    assert [r["attack"] for r in result["results"]] == ["clean", "pgd10"]


def test_an_old_search_run_resumes_with_the_tutor_objective_it_ran_with():
    from rnas.config import read_run_config
    from rnas.engine.search import SearchConfig

    old = (LEGACY / "search-config.yaml").read_text()
    assert "tutor_objective" not in old  # written before the setting existed: it ran Eq. (1)
    assert read_run_config(SearchConfig, LEGACY / "search-config.yaml", "search")["tutor_objective"] == "paper"


def test_a_teacher_run_written_before_the_normalisation_wrapper_evaluates_and_resumes(tmp_path):
    """rnas teacher train now trains ``TrainableTeacher`` (normalisation, then ``net``); a run checkpoint of the
    bare net (keys without ``net.``, as earlier versions wrote) evaluates to the same accuracy and resumes."""
    write_cifar10(tmp_path / "data", n_per_batch=12)
    run = tmp_path / "teacher"
    code, err = main_in_process("teacher", "train", "--teacher", "wrn-10-1", "--data-dir", tmp_path / "data",
                                "--val-size", 20, "--batch-size", 10, "--epochs", 1, "--at", "nfgsm", "--eval-n", 10,
                                "--out", run, "--model-dir", tmp_path / "models")
    assert code == 0, err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert all(k.startswith("net.") for k in ckpt["model"])
    old = tmp_path / "old.pt"
    torch.save({**ckpt, "model": {k[len("net."):]: v for k, v in ckpt["model"].items()}}, old)
    results = []
    for path in (run / "checkpoint.pt", old):
        code, err = main_in_process("eval", path, "--data-dir", tmp_path / "data", "--val-size", 20,
                                    "--attacks", "clean,fgsm", "--n", 20, "--json", tmp_path / f"{path.stem}.json")
        assert code == 0, err
        results.append([r["accuracy"] for r in json.loads((tmp_path / f"{path.stem}.json").read_text())["results"]])
    assert results[0] == results[1]
    from rnas.engine.teacher_train import TeacherTrainConfig, build_teacher_training

    trainer = build_teacher_training(TeacherTrainConfig(arch="wrn-10-1", data_dir=str(tmp_path / "data"),
                                                        val_size=20, batch_size=10, epochs=2, at="nfgsm"))
    trainer.load_state(torch.load(old, weights_only=False))
    for key, value in trainer.model.net.state_dict().items():
        assert torch.equal(value, ckpt["model"]["net." + key]), key
