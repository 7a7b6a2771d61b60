"""A study's ``seeds:``: one search per seed (its search and retrain --seed both), or with ``share_search: true``
one search retrained under each seed; and the report-split guard: no step before the final evaluation reads an
image of the report split, and the evaluations read exactly it."""
import json

import pytest
import torch
import yaml
from helpers import main_in_process, write_tiny_setup

from rnas.data import make_loaders
from rnas.data.splits import HeldOut


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("seeds"))


def seeds_study(root, **changes) -> dict:
    study = {
        "name": "tiny",
        "data": {"data": "cifar10", "data_dir": str(root / "data"), "val_select": 40, "val_report": 60,
                 "split_seed": 5},
        "teacher": {"teacher": "wrn-10-1", "teacher_ckpt": "tiny", "model_dir": str(root / "models")},
        "searches": [{"space": str(root / "tiny.yaml")}],
        "search": {"epochs": 1, "batch_size": 20, "arch_lr": 0.05, "limit": 40, "workers": 0},
        "retrain": {"epochs": 1, "batch_size": 20, "limit": 40, "robust_val": 20, "steps": 1, "workers": 0},
        "arms": ["rnas-cl", "ce"],
        "eval": {"attacks": ["clean"]},
        "seeds": [0, 1],
    }
    study.update(changes)
    return study


def plan(root, tmp_path, name="s", **changes):
    from rnas.study.plan import plan_study

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(seeds_study(root, **changes)))
    return plan_study(path, tmp_path / f"{name}-out")


def test_each_seed_plans_its_own_search_derive_and_retrains(root, tmp_path):
    study = plan(root, tmp_path)
    searches = {s.path: s.config.seed for s in study.steps() if s.kind == "search"}
    assert searches == {"search-tiny": 0, "search-tiny-s1": 1}
    derives = [(s.name, s.path) for s in study.steps() if s.kind == "derive"]
    assert derives == [("derive/tiny", "search-tiny"), ("derive/tiny-s1", "search-tiny-s1")]
    trained = {s.path: (s.config.seed, s.config.arch.split("/")[-2]) for s in study.steps() if s.kind == "retrain"}
    assert trained == {"tiny/rnas-cl": (0, "search-tiny"), "tiny/ce": (0, "search-tiny"),
                       "tiny/rnas-cl-s1": (1, "search-tiny-s1"), "tiny/ce-s1": (1, "search-tiny-s1")}
    rows = {m["name"]: (m["seed"], m["search_seed"], m["search"]) for m in study.models}
    assert rows["tiny/ce-s1"] == (1, 1, "search-tiny-s1") and rows["tiny/ce"] == (0, 0, "search-tiny")
    assert (study.seeds, study.share_search) == ([0, 1], False)
    assert study.graph.has_edge("derive/tiny-s1", "retrain/tiny/ce-s1")
    assert not study.graph.has_edge("derive/tiny", "retrain/tiny/ce-s1")


def test_a_shared_search_is_one_search_retrained_under_each_seed(root, tmp_path):
    study = plan(root, tmp_path, share_search=True, seeds=[0, 2])
    assert [(s.path, s.config.seed) for s in study.steps() if s.kind == "search"] == [("search-tiny", 0)]
    trained = {s.path: (s.config.seed, s.config.arch.split("/")[-2]) for s in study.steps() if s.kind == "retrain"}
    assert trained == {"tiny/rnas-cl": (0, "search-tiny"), "tiny/ce": (0, "search-tiny"),
                       "tiny/rnas-cl-s2": (2, "search-tiny"), "tiny/ce-s2": (2, "search-tiny")}
    assert {m["name"]: m["search_seed"] for m in study.models}["tiny/ce-s2"] == 0
    assert (study.seeds, study.share_search) == ([0, 2], True)


def test_without_seeds_the_plan_and_its_rows_are_as_before(root, tmp_path):
    study = plan(root, tmp_path, seeds=None)
    assert [s.path for s in study.steps() if s.kind == "search"] == ["search-tiny"]
    assert all("search_seed" not in m for m in study.models) and study.seeds is None


BAD = [
    ({"seeds": [0, 0]}, "seeds: [0, 0]: each seed once"),
    ({"seeds": [-1]}, "seeds: -1: a whole number >= 0"),
    ({"seeds": []}, "seeds: expected a non-empty list"),
    ({"share_search": True, "seeds": None}, "share_search: only with seeds:"),
    ({"share_search": "yes"}, "share_search: 'yes': true or false"),
    ({"arms": [{"arm": "ce", "seeds": [3]}]}, "arms[0].seeds: beside the study's seeds:"),
    ({"retrain": {"epochs": 1, "seed": 2}}, "retrain.seed: set beside the study's seeds:"),
    ({"search": {"epochs": 1, "seed": 2}}, "search.seed: set beside the study's seeds:"),
    ({"archs": ["x.json"]}, "archs: nets derived elsewhere have no search to repeat"),
    ({"data": {"data": "cifar10", "val_size": 50, "val_select": 40}}, "data.val_size: beside val_select"),
]


@pytest.mark.parametrize(("changes", "message"), BAD)
def test_bad_seed_settings_are_one_line_naming_the_field_and_nothing_runs(root, tmp_path, changes, message):
    spec = seeds_study(root, **changes)
    spec["data"].setdefault("data_dir", str(root / "data"))
    spec = {k: v for k, v in spec.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, err = main_in_process("study", path, "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


class _Events:
    """What a study step reports to (unused here)."""

    def send(self, *values):
        pass

    def on_step(self, job, terms):
        pass

    def on_epoch(self, job, record):
        pass


def _image_keys(images: torch.Tensor) -> set[bytes]:
    return {bytes(img.contiguous().numpy()) for img in images.cpu()}


@pytest.mark.slow
def test_independent_searches_differ_and_nothing_before_the_final_eval_reads_the_report_split(root, tmp_path,
                                                                                             monkeypatch):
    """Every step of a two-seed study run in this process, each loader and each evaluated batch recorded:
    searches, derives and retrains read no report image (their validation is the select split, --robust-val
    included), every evaluation reads exactly the report split; the two seeds' searches end apart."""
    import rnas.data.loaders as loaders
    import rnas.evaluation.evaluate as evaluate
    from rnas.study.steps import STEP_KINDS

    study = plan(root, tmp_path)
    raw = make_loaders("cifar10", str(root / "data"), 10, "cpu", val_size=0).train.images
    parts = HeldOut(40, 60, seed=5).positions(len(raw))
    report, select = _image_keys(raw[parts["report"]]), _image_keys(raw[parts["select"]])
    read: dict[str, list[set[bytes]]] = {}
    current = {"step": None}
    loader_init, batches_of = loaders.InMemoryLoader.__init__, evaluate.eval_batches

    def recording_loader(self, data, *args, **kwargs):
        read.setdefault(current["step"], []).append(_image_keys(data.images))
        loader_init(self, data, *args, **kwargs)

    def recording_batches(*args, **kwargs):
        batches, n, size = batches_of(*args, **kwargs)

        def recorded():
            for x, y in batches():
                read.setdefault(current["step"], []).append(_image_keys((x * 255).round().to(torch.uint8)))
                yield x, y
        return recorded, n, size

    monkeypatch.setattr(loaders.InMemoryLoader, "__init__", recording_loader)
    monkeypatch.setattr(evaluate, "eval_batches", recording_batches)
    for step in study.steps():
        current["step"] = step.name
        STEP_KINDS[step.kind].run(step, study.out, _Events(), lambda: False)
    before = {name: set().union(*sets) for name, sets in read.items() if not name.startswith("eval/")}
    assert {n.split("/")[0] for n in before} == {"search", "retrain"}  # the steps that read data did
    for name, images in before.items():
        assert not images & report, f"{name} read {len(images & report)} report-split images"
        assert select <= images, name  # validation (and --robust-val) on the select split
    evals = {name: set().union(*sets) for name, sets in read.items() if name.startswith("eval/")}
    assert len(evals) == 8 and all(images == report for images in evals.values())  # last and best epochs
    result = json.loads((study.out / "tiny" / "ce-s1" / "eval-pixel.json").read_text())
    assert (result["split"], result["n"], result["val_select"], result["val_report"], result["split_seed"]) == \
        ("report", 60, 40, 60, 5)

    # the two seeds' searches: their own --seed, and architecture logits that end apart
    states = [torch.load(study.out / d / "checkpoint.pt", weights_only=True) for d in ("search-tiny", "search-tiny-s1")]
    configs = [yaml.safe_load((study.out / d / "config.yaml").read_text()) for d in ("search-tiny", "search-tiny-s1")]
    assert [c["seed"] for c in configs] == [0, 1]
    arch = [json.loads((study.out / d / "arch.json").read_text()) for d in ("search-tiny", "search-tiny-s1")]
    assert arch[0]["tutor_probabilities"] != arch[1]["tutor_probabilities"]
    weights = [s["supernet"] for s in states]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_shipped_tutors_study_searches_once_per_seed_and_reports_on_2000_held_out_images(tmp_path):
    from helpers import plan_shipped_study

    study = plan_shipped_study("cifar10-tutors-seeds", tmp_path)
    searches = {s.path: (s.config.seed, s.config.epochs, s.config.limit) for s in study.steps() if s.kind == "search"}
    assert searches == {"search-s3": (0, 10, 20000), "search-s3-s1": (1, 10, 20000), "search-s3-s2": (2, 10, 20000)}
    retrains = [s.config for s in study.steps() if s.kind == "retrain"]
    assert sorted(s.path for s in study.steps() if s.kind == "retrain") == sorted(
        f"s3/{arm}{suffix}" for arm in ("rnas-cl", "fixed", "kd", "ce") for suffix in ("", "-s1", "-s2"))
    assert {(c.epochs, c.limit, c.val_select, c.val_report, c.split_seed, c.split_pool) for c in retrains} == \
        {(15, 20000, 2000, 2000, 0, 5000)}
    evals = [s.config for s in study.steps() if s.kind == "eval"]
    assert len(evals) == 12 and {(e.attack_list() == ["clean", "pgd20", "autoattack"], e.n, e.split, e.val_report)
                                 for e in evals} == {(True, None, "auto", 2000)}  # auto: all of the report split
    assert (study.seeds, study.share_search, study.jobs, study.threads) == ([0, 1, 2], False, 2, 1)
