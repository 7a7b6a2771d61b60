"""`rnas report` on a tiny study (real search, retrain and eval runs) and on run dirs given directly."""
import base64
import csv
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import main_in_process, write_cifar10, write_space, write_teacher

from rnas.config.defaults import TUTOR_DERIVE, TUTOR_OBJECTIVE
from rnas.report.collect import MANIFEST
from rnas.report.tables import pareto_front

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


EPS = 8 / 255


class _Page(HTMLParser):
    """index.html: linked PNG names, embedded data: URIs and the text of each cell of table#models."""

    def __init__(self, text: str):
        super().__init__()
        self.links, self.images, self.rows, self._in_models, self._cell = [], [], [], False, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href", "").endswith(".png"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table":
            self._in_models = attrs.get("id") == "models"
        if self._in_models and tag == "tr":
            self.rows.append([])
        if self._in_models and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_models = False
        if self._in_models and tag in ("td", "th"):
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _eval(run, name, *extra):
    code, err = main_in_process("eval", run / "checkpoint.pt", "--json", run / name, *extra)
    assert code == 0, err
    return json.loads((run / name).read_text())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """study/: search-t (2 epochs, derived), t/rnas-cl and t/ce retrained, pixel / normalized / sweep evals of
    rnas-cl, a pixel eval of ce; study.json lists ce's sweep (never written) and a failed TRADES step."""
    root = tmp_path_factory.mktemp("report")
    write_cifar10(root / "data", test=True)
    write_teacher(root / "models")
    write_space(root / "tiny.yaml")
    study = root / "study"
    common = ["--data-dir", root / "data", "--val-size", 50, "--batch-size", 25, "--limit", 100]
    code, err = main_in_process("search", "--space", root / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt",
                                "tiny", "--model-dir", root / "models", *common, "--epochs", 2,
                                "--out", study / "search-t")
    assert code == 0, err
    assert main_in_process("derive", study / "search-t")[0] == 0
    for arm in ("cl", "ce"):
        code, err = main_in_process("retrain", study / "search-t" / "arch.json", *common, "--epochs", 2,
                                    "--baseline", arm, "--out", study / "t" / ("rnas-cl" if arm == "cl" else arm))
        assert code == 0, err
    cl, ce = study / "t" / "rnas-cl", study / "t" / "ce"
    evals = {"cl-pixel": _eval(cl, "eval-pixel.json", "--attacks", "clean,fgsm,pgd20", "--n", 10),
             "cl-normalized": _eval(cl, "eval-normalized.json", "--attacks", "clean,fgsm", "--n", 10,
                                    "--eps-space", "normalized"),
             "cl-sweep": _eval(cl, "eval-sweep.json", "--attacks", "clean,fgsm", "--n", 10, "--eps-sweep", "2/255",
                               "8/255"),
             "ce-pixel": _eval(ce, "eval-pixel.json", "--attacks", "clean,pgd20", "--n", 6)}
    steps = [{"name": "search/t", "kind": "search", "dir": "search-t", "deps": [], "state": "done", "error": None,
              "seconds": 4.2},
             {"name": "derive/t", "kind": "derive", "dir": "search-t", "deps": ["search/t"], "state": "done",
              "error": None, "seconds": 0.1},
             *[{"name": f"retrain/t/{a}", "kind": "retrain", "dir": f"t/{a}", "deps": ["derive/t"], "state": "done",
                "error": None, "seconds": 3.0} for a in ("rnas-cl", "ce")],
             {"name": "finetune/t/trades", "kind": "finetune", "dir": "t/trades", "deps": ["retrain/t/rnas-cl"],
              "state": "failed", "error": "training diverged at epoch 1 step 3 (loss nan)", "seconds": 1.5},
             {"name": "eval/t/trades/pixel", "kind": "eval", "dir": "t/trades", "deps": ["finetune/t/trades"],
              "state": "blocked", "error": None, "seconds": None}]

    def model(arm, finetune=None, run=None):
        run = run or f"t/{arm}"
        return {"name": run, "arm": arm, "finetune": finetune, "space": "T", "budget": None, "teacher": "tiny",
                "run": run, "search": "search-t", "arch": "search-t/arch.json",
                "evals": {p: f"{run}/eval-{p}.json" for p in ("pixel", "normalized", "sweep")}}

    models = [model("rnas-cl"), model("ce"), model("rnas-cl", "trades", "t/trades")]
    models[1]["evals"] = {p: f"t/ce/eval-{p}.json" for p in ("pixel", "sweep")}
    (study / "study.json").write_text(json.dumps({"format": "rnas-study-1", "name": "tiny-study", "steps": steps,
                                                  "models": models}))
    return root, evals


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    root, _ = study
    out = tmp_path_factory.mktemp("out") / "report"
    code, err = main_in_process("report", root / "study", "-o", out)
    assert code == 0, err
    return out


def _row(result: dict, attack: str) -> dict:
    return next(r for r in result["results"] if r["attack"] == attack and (attack == "clean" or
                                                                         abs(r["eps"] - EPS) < 1e-9))


def test_study_report_figures_are_pngs_linked_and_embedded(report):
    import matplotlib.pyplot as plt

    page = _Page((report / "index.html").read_text())
    expected = {"pareto.png", "cost.png", "eps_sweep.png", "search-t-losses.png", "search-t-schedule.png",
                "search-t-widths.png", "search-t-tutors.png", "search-t-arch.png", "retrain-t-rnas-cl-curves.png",
                "retrain-t-ce-curves.png", "retrain-overlay.png"}
    assert expected <= set(page.links) and len(page.links) == len(set(page.links)) == len(page.images)
    for name, src in zip(page.links, page.images, strict=True):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert plt.imread(report / name).ndim == 3
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == data  # the page alone suffices
    assert {p.name for p in report.iterdir()} == {*page.links, "index.html", "models.csv", "models.json",
                                                  "paired.csv", "searches.json", MANIFEST}


def test_study_report_numbers_equal_the_eval_files(study, report):
    root, evals = study
    table = json.loads((report / "models.json").read_text())
    with open(report / "models.csv") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    html_rows = _Page((report / "index.html").read_text()).rows
    header, cells = html_rows[0], {r[0]: r for r in html_rows[1:]}
    assert [m["name"] for m in table["models"]] == list(rows) == list(cells) == ["t/rnas-cl", "t/ce", "t/trades"]
    assert table["main_eps"] == pytest.approx(EPS)
    assert [c["key"] for c in table["columns"]] == ["clean", "fgsm", "pgd20", "mifgsm", "cw", "autoattack",
                                                    "clean_norm", "fgsm_norm"]
    expect = {("t/rnas-cl", "clean"): _row(evals["cl-pixel"], "clean"),
              ("t/rnas-cl", "fgsm"): _row(evals["cl-pixel"], "fgsm"),
              ("t/rnas-cl", "pgd20"): _row(evals["cl-pixel"], "pgd20"),
              ("t/rnas-cl", "clean_norm"): _row(evals["cl-normalized"], "clean"),
              ("t/rnas-cl", "fgsm_norm"): _row(evals["cl-normalized"], "fgsm"),
              ("t/ce", "clean"): _row(evals["ce-pixel"], "clean"), ("t/ce", "pgd20"): _row(evals["ce-pixel"], "pgd20")}
    arch = json.loads((root / "study" / "search-t" / "arch.json").read_text())
    for m in table["models"]:
        name, row, cell = m["name"], rows[m["name"]], cells[m["name"]]
        # t/trades has no eval yet: its params and MACs are its arch.json's
        source = {"t/rnas-cl": evals["cl-pixel"], "t/ce": evals["ce-pixel"], "t/trades": arch}[name]
        assert (m["params"], m["macs"]) == (source["params"], source["macs"])
        assert (row["params"], row["macs"]) == (str(source["params"]), str(source["macs"]))
        assert (cell[3], cell[4]) == (f"{source['params']:,}", f"{source['macs']:,}")
        for i, col in enumerate(table["columns"]):
            want = expect.get((name, col["key"]))
            got = m["accuracy"].get(col["key"])
            assert (got and got["accuracy"], got and got["n"]) == ((want["accuracy"], want["n"]) if want else
                                                                   (None, None))
            assert row[col["key"]] == (str(want["accuracy"]) if want else "")
            assert row[col["key"] + "_n"] == (str(want["n"]) if want else "")
            shown = cell[8 + i].split()  # after model, arm, fine-tune, params, MACs and the three cost columns
            assert shown[0] == (f"{want['accuracy']:.2f}" if want else "–")
            if want and col["key"] in ("clean", "pgd20"):  # n 10 and 6: n per cell
                assert shown[1:] == [f"n={want['n']}", "test"]  # and the split it is on
    assert header[5:12] == ["cost (CE ep.)", "GMAC-epochs", "seconds", "clean", "FGSM n=10 test", "PGD-20", "MI-FGSM"]
    assert header[8 + 6:] == ["clean (norm.) n=10 test", "FGSM (norm.) n=10 test"]
    assert table["models"][1]["missing_evals"] == ["t/ce/eval-sweep.json"]
    for m in table["models"][:2]:  # the training cost is the run's own, as its last metrics line measured it
        last = json.loads((root / "study" / m["name"] / "metrics.jsonl").read_text().splitlines()[-1])
        assert m["cost"]["ce_epochs"] == last["cost/ce_epochs"] > 0
        assert m["cost"]["student_fwd_images"] == last["cost/total_student_fwd_images"]
    assert len(table["models"][2]["missing_evals"]) == 3
    page = (report / "index.html").read_text()
    assert "training diverged at epoch 1 step 3 (loss nan)" in page and 'class="state-failed"' in page
    assert "t/ce/eval-sweep.json" in page


def test_report_replaces_its_own_directory(study, report):
    root, _ = study
    before = (report / "models.json").read_text()
    (report / "pareto.png").unlink()
    code, err = main_in_process("report", root / "study", "-o", report)
    assert code == 0, err
    assert (report / "pareto.png").is_file() and (report / "models.json").read_text() == before
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")]  # no staging dir left


def test_run_dirs_given_directly(study, tmp_path):
    root, evals = study
    search, run = root / "study" / "search-t", root / "study" / "t" / "rnas-cl"
    out = tmp_path / "direct"
    code, err = main_in_process("report", search, run, "-o", out)
    assert code == 0, err
    (model,) = json.loads((out / "models.json").read_text())["models"]
    assert (model["name"], model["arm"], model["finetune"]) == ("rnas-cl", "rnas-cl", None)
    assert model["accuracy"]["pgd20"]["accuracy"] == _row(evals["cl-pixel"], "pgd20")["accuracy"]
    assert model["accuracy"]["fgsm_norm"]["accuracy"] == _row(evals["cl-normalized"], "fgsm")["accuracy"]
    (summary,) = json.loads((out / "searches.json").read_text())
    arch = json.loads((search / "arch.json").read_text())
    assert summary["epochs_done"] == 2 and summary["final"]["val_acc"] == json.loads(
        (search / "metrics.jsonl").read_text().splitlines()[-1])["val_acc"]
    derived = summary["archs"]["arch.json"]
    assert (derived["widths"], derived["params"], derived["macs"]) == (arch["widths"], arch["params"], arch["macs"])
    assert [t["teacher"] for t in derived["tutors"]] == [arch["teacher_layers"][j] for j in arch["tutors"]]
    assert (derived["tutor_objective"], derived["tutor_derive"]) == (TUTOR_OBJECTIVE, TUTOR_DERIVE)
    assert derived["tutor_diversity"]["tutors_distinct"] == len(set(arch["tutors"]))
    assert summary["final"]["tutors_distinct"] == json.loads(
        (search / "metrics.jsonl").read_text().splitlines()[-1])["tutors_distinct"]
    page = _Page((out / "index.html").read_text())
    assert {"search-t-widths.png", "retrain-rnas-cl-curves.png", "eps_sweep.png"} <= set(page.links)
    for name in page.links:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_runs_that_differ_only_in_their_seed_are_averaged(study, tmp_path):
    """A retrain run and its copy under another seed (-s1, as a study's seeds: names it) in one folder:
    models.json and the page give each column's mean and sample standard deviation over the two; a third
    (-s2) trained for other epochs is not averaged with them."""
    import shutil

    import yaml

    root, evals = study
    first, second, longer = (tmp_path / "t" / name for name in ("rnas-cl", "rnas-cl-s1", "rnas-cl-s2"))
    for run in (first, second, longer):
        shutil.copytree(root / "study" / "t" / "rnas-cl", run)
    config = yaml.safe_load((second / "config.yaml").read_text())
    # seed 1 written by a newer rnas: a field the first run's config lacks does not split them
    (second / "config.yaml").write_text(yaml.safe_dump({**config, "seed": 1, "out": str(second), "new_flag": 0}))
    (longer / "config.yaml").write_text(yaml.safe_dump({**config, "seed": 2, "epochs": 3}))  # not the same setting
    pixel = json.loads((second / "eval-pixel.json").read_text())
    row = _row(pixel, "pgd20")
    row["accuracy"] = round(row["accuracy"] + 10.0, 2)
    (second / "eval-pixel.json").write_text(json.dumps(pixel))
    out = tmp_path / "seeds"
    code, err = main_in_process("report", first, second, longer, "-o", out)
    assert code == 0, err
    table = json.loads((out / "models.json").read_text())
    assert [m["seed"] for m in table["models"]] == [config["seed"], 1, 2] == [0, 1, 2]
    (group,) = table["over_seeds"]
    assert (group["name"], group["seeds"], group["models"]) == ("rnas-cl", [0, 1], ["rnas-cl", "rnas-cl-s1"])
    pgd = _row(evals["cl-pixel"], "pgd20")["accuracy"]
    assert group["accuracy"]["pgd20"] == {"mean": round(pgd + 5.0, 2), "sd": round(10 / 2 ** 0.5, 2), "seeds": 2}
    assert group["accuracy"]["clean"]["sd"] == 0.0
    assert 'id="seeds"' in (out / "index.html").read_text()
    assert "seed" in (out / "models.csv").read_text().splitlines()[0].split(",")


@pytest.mark.parametrize("name,seed,expected", [
    ("s3/rnas-cl-s1-trades", 1, "s3/rnas-cl-trades"), ("s3/rnas-cl-s1@best", 1, "s3/rnas-cl@best"),
    ("s3/rnas-cl-s12", 1, "s3/rnas-cl-s12"), ("s3/rnas-cl", 0, "s3/rnas-cl"), ("s-s1/ce-s1", 1, "s-s1/ce"),
    ("rnas-cl-15ce-s1", 1, "rnas-cl-15ce"), ("x-s1", None, "x-s1")])
def test_unseeded_name(name, seed, expected):
    from rnas.report.tables import unseeded_name

    assert unseeded_name(name, seed) == expected


def test_pareto_front():
    points = [(5.0, 80.0), (6.0, 85.0), (6.0, 82.0), (7.0, 84.0), (4.0, 70.0), (4.0, 70.0)]
    assert pareto_front(points) == [0, 1, 4, 5]


def test_missing_matplotlib_bad_paths_and_foreign_out(study, tmp_path, monkeypatch):
    root, _ = study
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = main_in_process("report", root / "study", "-o", out)
    assert code == 2 and err.count("\n") == 1 and "notes.txt" in err and str(out) in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    for bad in (tmp_path / "nowhere", root / "data"):
        code, err = main_in_process("report", bad, "-o", tmp_path / "new")
        assert code == 2 and err.count("\n") == 1 and str(bad) in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "study.json").write_text('{"format": "rnas-study-1", "steps": [')
    code, err = main_in_process("report", broken, "-o", tmp_path / "new")
    assert code == 2 and err.count("\n") == 1 and re.search(rf"{re.escape(str(broken))}/study.json: unreadable", err)
    assert not (tmp_path / "new").exists()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, err = main_in_process("report", root / "study", "-o", tmp_path / "new")
    assert code == 2 and err.count("\n") == 1 and ".[report]" in err
    assert not (tmp_path / "new").exists()


def test_width_probabilities_of_an_older_search_come_from_its_tensorboard_scalars(study, tmp_path):
    """A search written before metrics.jsonl carried width_probs still gets its width figure: the numbers are
    read back from tb/ and equal what metrics.jsonl now logs."""
    from rnas.report.collect import width_probs_from_tensorboard

    root, _ = study
    old = tmp_path / "search-old"
    shutil.copytree(root / "study" / "search-t", old)
    records = [json.loads(line) for line in (old / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["width_probs"] for r in records)
    stripped = [{k: v for k, v in r.items() if k != "width_probs"} for r in records]
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped))
    choices = json.loads((old / "arch.json").read_text())["width_choices"]
    filled = width_probs_from_tensorboard(old / "tb", stripped, choices)
    for got, want in zip(filled, records, strict=True):
        assert [len(row) for row in got["width_probs"]] == [len(row) for row in want["width_probs"]]
        assert np.allclose(np.concatenate(got["width_probs"]), np.concatenate(want["width_probs"]), atol=1.01e-4)
    assert width_probs_from_tensorboard(tmp_path / "no-tb", stripped, choices) == stripped
    code, err = main_in_process("report", old, "-o", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "search-old-widths.png").read_bytes()[:4] == b"\x89PNG"


def _tampered(study_dir, tmp_path, change) -> Path:
    """A copy of the study directory whose study.json ``change`` edits."""
    copy = tmp_path / "tampered"
    shutil.copytree(study_dir, copy, symlinks=True)
    data = json.loads((copy / "study.json").read_text())
    change(data, copy)
    (copy / "study.json").write_text(json.dumps(data))
    return copy


def _eval_path(data, copy, value):
    data["models"][0]["evals"]["pixel"] = value


def _symlink_out(data, copy):
    (copy / "t" / "outside.json").symlink_to(Path("/etc/hostname"))
    data["models"][0]["evals"]["pixel"] = "t/outside.json"


@pytest.mark.parametrize("change,message", [
    (lambda d, c: d["steps"][0].update(dir="../../x"), "steps[0].dir: '../../x' points outside the study directory"),
    (lambda d, c: _eval_path(d, c, "/etc/passwd"), "evals.pixel: '/etc/passwd' points outside the study directory"),
    (_symlink_out, "evals.pixel: 't/outside.json' points outside the study directory"),
    (lambda d, c: d["models"][0].update(run="../.."), "models[0].run: '../..' points outside the study directory"),
    (lambda d, c: d.update(steps={"a": 1}), "field 'steps' is a dict, expected a list"),
    (lambda d, c: d["models"].append(7), "models[3]: expected an object, got int"),
    (lambda d, c: d["models"][0].update(evals=["x"]), "field 'evals' is a list, expected a dict"),
])
def test_report_reads_nothing_outside_a_tampered_study(study, tmp_path, change, message):
    copy = _tampered(study[0] / "study", tmp_path, change)
    code, err = main_in_process("report", copy, "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_run_directories_is_reported_like_the_runs_in_it(study, tmp_path):
    """`rnas report FOLDER` (rnas quickstart's output, say): every search and retrain run inside it, a teacher's
    run dir skipped, the eval JSONs of each retrain run in the table."""
    root, evals = study
    folder = tmp_path / "quick"
    folder.mkdir()
    for name, src in (("search", root / "study" / "search-t"), ("retrain-cl", root / "study" / "t" / "rnas-cl")):
        (folder / name).symlink_to(src, target_is_directory=True)
    (folder / "teacher").mkdir()
    (folder / "teacher" / "config.yaml").write_text("arch: wrn-10-1\nat: pgd\n")
    out = tmp_path / "report"
    code, err = main_in_process("report", folder, "-o", out)
    assert code == 0, err
    (model,) = json.loads((out / "models.json").read_text())["models"]
    assert model["accuracy"]["pgd20"]["accuracy"] == _row(evals["cl-pixel"], "pgd20")["accuracy"]
    assert len(json.loads((out / "searches.json").read_text())) == 1


def test_a_run_writes_its_config_and_hparams_to_tensorboard(study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = study
    run = root / "study" / "t" / "rnas-cl"
    events = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["device"] == "cpu"  # --device auto, recorded as what it resolved to
    (text,) = events.Tensors("config/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    assert f"gamma_t: {config['gamma_t']!r}" in shown and f"baseline: {config['baseline']!r}" in shown
    plugins = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugins)
    assert b"gamma_t" in plugins["_hparams_/session_start_info"]


def test_arms_of_one_net_are_drawn_clean_against_robust_and_variants_get_their_own_colour(report):
    page = (report / "index.html").read_text()
    assert "Every model has the same MACs: clean against PGD-20 accuracy" in page
    assert "Every retrain run on shared axes" in page
    from rnas.report.figures import variant

    assert [variant(m) for m in ({"arm": "rnas-cl"}, {"arm": "rnas-cl", "finetune": "trades"})] == [
        "rnas-cl", "rnas-cl+trades"]


def test_the_cost_figure_colours_variants_as_the_accuracy_figure_does(tmp_path, monkeypatch):
    """A fine-tuned or adversarially trained variant (rnas-cl+nfgsm) gets its own colour and legend entry on
    the training-cost figure too, not its base arm's."""
    import rnas.report.figures

    drawn = {}
    pareto = rnas.report.figures.pareto

    def recording(models, robust, path, **kwargs):
        drawn[path.name] = sorted({rnas.report.figures.variant(m) for m in models})
        return pareto(models, robust, path, **kwargs)

    monkeypatch.setattr(rnas.report.figures, "pareto", recording)
    from rnas.report.html import _cost_section

    table = {"main_eps": 8 / 255, "models": [
        {"name": "a", "arm": "rnas-cl", "finetune": None, "cost": {"ce_epochs": 16.0},
         "accuracy": {"clean": {"accuracy": 60.0}, "pgd20": {"accuracy": 10.0}}},
        {"name": "b", "arm": "rnas-cl", "finetune": "nfgsm", "cost": {"ce_epochs": 13.0},
         "accuracy": {"clean": {"accuracy": 50.0}, "pgd20": {"accuracy": 25.0}}}]}
    _cost_section(table, tmp_path)
    assert drawn["cost.png"] == ["rnas-cl", "rnas-cl+nfgsm"]


def test_a_search_with_a_scaled_net_beside_its_arch_is_reported(study, tmp_path):
    """`rnas scale -o SEARCH/arch-grown.json` puts a deeper net (more blocks, no tutor_probabilities) beside
    arch.json: the report lists both with their own widths and draws them in one widths figure."""
    root, _ = study
    search = tmp_path / "search-t"
    shutil.copytree(root / "study" / "search-t", search)
    arch = json.loads((search / "arch.json").read_text())
    code, err = main_in_process("scale", search / "arch.json", "--macs", str(3 * arch["macs"]), "-o",
                                search / "arch-grown.json")
    assert code == 0, err
    grown = json.loads((search / "arch-grown.json").read_text())
    assert len(grown["widths"]) > len(arch["widths"]) and "tutor_probabilities" not in grown
    code, err = main_in_process("report", search, "-o", tmp_path / "out")
    assert code == 0, err
    (summary,) = json.loads((tmp_path / "out" / "searches.json").read_text())
    assert [(name, a["widths"], a["macs"]) for name, a in summary["archs"].items()] == \
        [("arch.json", arch["widths"], arch["macs"]), ("arch-grown.json", grown["widths"], grown["macs"])]
    carried = summary["archs"]["arch-grown.json"]["tutors"]
    assert [(t["student"], t["teacher"], t["probability"]) for t in carried] == \
        [(s, grown["teacher_layers"][j], None) for s, j in zip(grown["student_layers"], grown["tutors"], strict=True)]
    assert (tmp_path / "out" / "search-t-arch.png").read_bytes()[:4] == b"\x89PNG"
