"""The data-loss cases: an output flag pointed at a run's files, a run that takes a directory while another is
starting (through a paused build, not a sleep), a resume from a checkpoint with an impossible position, a
study directory given to another study, a teacher name that is a path. Each is one line, exit 2, and every
file already on disk is byte for byte what it was."""
import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_SPACE, main_in_process, search_args, trained_checkpoint, write_tiny_setup

import rnas.engine.search

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("overwritten"))


def snapshot(folder: Path) -> dict:
    """Every file's bytes (the empty .lock files of run and study directories are no one's data)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def model_run(root):
    run = root / "model"
    run.mkdir()
    arch = {"spec": TINY_SPACE, "widths": [8, 16, 16], "num_classes": 10}
    trained_checkpoint(root, arch, images=100, steps=2).rename(run / "checkpoint.pt")
    (run / "config.yaml").write_text("data: cifar10\n")
    return run


@pytest.mark.parametrize("target", ["checkpoint.pt", "config.yaml"])
def test_eval_json_never_replaces_a_file_that_is_not_its_own_result(model_run, target):
    before = snapshot(model_run)
    code, err = main_in_process("eval", model_run / "checkpoint.pt", "--attacks", "clean", "--n", 20,
                                "--json", model_run / target)
    assert code == 2 and "exists and is not an earlier rnas eval result" in one_line(err)
    assert snapshot(model_run) == before


def test_eval_json_replaces_its_own_earlier_result(model_run, tmp_path):
    out = tmp_path / "eval.json"
    for _ in range(2):
        code, err = main_in_process("eval", model_run / "checkpoint.pt", "--attacks", "clean", "--n", 20,
                                    "--json", out)
        assert code == 0, err
    other = tmp_path / "other.pt"
    other.write_bytes((model_run / "checkpoint.pt").read_bytes())
    code, err = main_in_process("eval", other, "--attacks", "clean", "--n", 20, "--json", out)
    assert code == 2 and "not an earlier rnas eval result of" in one_line(err)  # another checkpoint's result


def test_a_run_that_takes_the_directory_while_a_search_is_building_is_kept(root, tmp_path, monkeypatch):
    """The search checks --out, then pauses while it builds (the fault point: its Searcher.from_config); a
    second search runs to completion into the same directory; the first then stops with one line instead of
    replacing the finished run's config.yaml and checkpoint.pt and mixing its metrics.jsonl."""
    run = tmp_path / "contested"
    build = rnas.engine.search.Searcher.from_config
    calls = []

    def paused_build(cfg, *args, **kwargs):
        calls.append(cfg)
        if len(calls) == 1:  # while the first search is "paused" here, another run completes into --out
            code, err = main_in_process(*search_args(root, run, "--epochs", 1))
            assert code == 0, err
        return build(cfg, *args, **kwargs)

    monkeypatch.setattr(rnas.engine.search.Searcher, "from_config", paused_build)
    code, err = main_in_process(*search_args(root, run, "--epochs", 1))
    monkeypatch.undo()
    assert len(calls) == 2
    finished = snapshot(run)
    assert code == 2 and "another run was written there while this one was starting" in one_line(err)
    assert snapshot(run) == finished
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("field,value", [("epoch", -2), ("step", -1), ("epoch", 1.5)])
def test_resume_from_an_impossible_position_changes_nothing(root, tmp_path, field, value):
    run = tmp_path / "run"
    code, err = main_in_process(*search_args(root, run, "--epochs", 1))
    assert code == 0, err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state[field] = value
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(run)
    code, err = main_in_process("search", "--resume", run)
    assert code == 2 and f"{field} {value!r} is not a position a run can resume from" in one_line(err)
    assert snapshot(run) == before


def _study(path: Path, name: str) -> Path:
    path.write_text(f"name: {name}\ndata: {{data: cifar10}}\nteacher: {{teacher: wrn-10-1}}\n"
                    "searches: [{space: s3}]\narms: [{arm: ce}]\n")
    return path


def test_a_study_directory_is_not_taken_over_by_another_study(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.yaml").write_text("name: first\n")
    (out / "study.json").write_text(json.dumps({"format": "rnas-study-1", "name": "first", "steps": []}) + "\n")
    before = snapshot(out)
    code, err = main_in_process("study", _study(tmp_path / "other.yaml", "second"), "--out", out,
                                "--data-dir", tmp_path, "--model-dir", tmp_path)
    assert code == 2 and "holds the study 'first', not 'second'" in one_line(err)
    assert snapshot(out) == before


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "/abs"])
def test_teacher_train_names_are_file_names(root, tmp_path, name):
    models = tmp_path / "models"
    code, err = main_in_process("teacher", "train", "--arch", "wrn-10-1", "--data-dir", root / "data",
                                "--val-size", 50, "--limit", 40, "--batch-size", 10, "--epochs", 1,
                                "--model-dir", models, "--name", name, "--out", tmp_path / "run")
    assert code == 2 and "a checkpoint file name" in one_line(err)
    assert not models.exists() and not (tmp_path / "run").exists() and not (tmp_path.parent / "escaped.pt").exists()


def test_an_unexpected_exception_is_one_line_with_its_traceback_in_a_file(monkeypatch, capsys):
    import rnas.cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.delenv("RNAS_DEBUG")
    parser = rnas.cli.build_parser(["teachers"])
    monkeypatch.setattr(rnas.cli, "build_parser", lambda argv: parser)
    parser._subparsers._group_actions[0].choices["teachers"].set_defaults(func=broken)
    code = rnas.cli.main(["teachers"])
    err = capsys.readouterr().err
    assert code == 1 and one_line(err).startswith("rnas: internal error: ZeroDivisionError: a bug (traceback in ")
    path = Path(err.split("traceback in ")[1].split(";")[0])
    assert "ZeroDivisionError: a bug" in path.read_text() and "Traceback" in path.read_text()
    path.unlink()
    monkeypatch.setenv("RNAS_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):  # under the tests it is raised
        rnas.cli.main(["teachers"])


def test_ctrl_c_outside_a_run_is_one_line_exit_130(monkeypatch, capsys):
    import rnas.cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = rnas.cli.build_parser(["teachers"])
    monkeypatch.setattr(rnas.cli, "build_parser", lambda argv: parser)
    parser._subparsers._group_actions[0].choices["teachers"].set_defaults(func=interrupted)
    assert rnas.cli.main(["teachers"]) == 130
    assert one_line(capsys.readouterr().err) == "rnas: stopped (Ctrl-C)"


BOMB = "name: bomb\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize("command", [["study", "{}", "--dry-run"], ["search", "--config", "{}", "--random-teacher"]])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, command):
    """A few hundred bytes of nested anchors (9**9 values expanded) is one line, not a hang."""
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    start = time.perf_counter()
    code, err = main_in_process(*[str(path) if a == "{}" else a for a in command])
    assert code == 2 and "bad YAML: more than 100,000 values once its aliases are expanded" in one_line(err)
    assert time.perf_counter() - start < 10


def test_a_second_eval_on_the_same_json_is_refused(model_run, tmp_path):
    from rnas.runtime.rundir import OutputLock

    out = tmp_path / "eval.json"
    with OutputLock(out, "the first eval"):  # a first rnas eval is writing OUT
        code, err = main_in_process("eval", model_run / "checkpoint.pt", "--attacks", "clean", "--n", 20,
                                    "--json", out)
    assert code == 2 and f"--json {out}: in use by another rnas process" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # its lock file is gone, nothing else written
    code, err = main_in_process("eval", model_run / "checkpoint.pt", "--attacks", "clean", "--n", 20, "--json", out)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def test_a_second_export_to_the_same_file_keeps_the_first(model_run, tmp_path, monkeypatch):
    """Two exports to one -o: the first finishes while the second is writing (the fault point: the second's
    writer); the second then stops with one line and the first's file stays as it was."""
    import dataclasses

    import rnas.evaluation.export

    out = tmp_path / "net.pt"
    form = rnas.evaluation.export.FORMATS["torchscript"]
    to_bytes = form.to_bytes

    def slow_bytes(module, example, batch):
        out.write_bytes(b"the first export's file")  # the other process published meanwhile
        return to_bytes(module, example, batch)

    monkeypatch.setitem(rnas.evaluation.export.FORMATS, "torchscript", dataclasses.replace(form, to_bytes=slow_bytes))
    code, err = main_in_process("export", model_run / "checkpoint.pt", "--format", "torchscript", "-o", out)
    assert code == 2 and "written by another process while this export ran" in one_line(err)
    assert out.read_bytes() == b"the first export's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]  # no partial file left


def _tamper(ckpt: dict, how: str) -> dict:
    from supernets import build_model

    state = ckpt["model"]
    if how == "missing-key":
        state.pop(next(iter(state)))
    elif how == "extra-key":
        state["extra.weight"] = torch.zeros(3)
    elif how == "width-mismatch":
        ckpt["arch"] = {**ckpt["arch"], "widths": [4, 16, 16]}
    elif how == "wrong-kind":
        ckpt["kind"] = "search"
    elif how == "mbn-flag":
        ckpt["mbn"] = True
    elif how == "config-string":
        ckpt["config"] = "data: cifar10"
    elif how == "arch-string":
        ckpt["arch"] = "s3"
    elif how == "1000-classes":
        ckpt["arch"] = {**ckpt["arch"], "num_classes": 1000}
        ckpt["model"] = build_model(ckpt["arch"]).state_dict()
    return ckpt


TAMPERED = {"missing-key": "its weights do not fit its arch", "extra-key": "its weights do not fit its arch",
            "width-mismatch": "its weights do not fit its arch", "wrong-kind": "kind 'search'",
            "mbn-flag": "(is its mbn flag right?)", "config-string": "its 'config' is a str",
            "arch-string": "its 'arch' is a str", "1000-classes": "a net with 1000 outputs; cifar10 has 10 classes"}


@pytest.mark.parametrize("how", list(TAMPERED))
def test_a_tampered_checkpoint_is_one_line_in_eval_and_export(model_run, tmp_path, how):
    path = tmp_path / "checkpoint.pt"
    torch.save(_tamper(torch.load(model_run / "checkpoint.pt", weights_only=True), how), path)
    code, err = main_in_process("eval", path, "--attacks", "clean", "--n", 10, "--json", tmp_path / "e.json")
    assert code == 2 and TAMPERED[how] in one_line(err), err
    if how != "1000-classes":  # export has no dataset to compare the head with
        code, err = main_in_process("export", path, "--format", "torchscript", "-o", tmp_path / "net.pt")
        assert code == 2 and (TAMPERED[how] in one_line(err) or how == "wrong-kind"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


NUMBERS_AND_PATHS = [
    (["eval", "{ckpt}", "--attacks", "clean", "--eps", "1e400"], "bad eps '1e400': use a finite number"),
    (["eval", "{ckpt}", "--attacks", "fgsm", "--eps-sweep", "1e400"], "bad eps '1e400': use a finite number"),
    (["eval", "{ckpt}", "--attacks", "pgd0"], "attack 'pgd0': needs at least one step"),
    (["eval", "{ckpt}", "--attacks", "clean", "--device", "meta"], "--device meta: not a device rnas runs on"),
    (["export", "{ckpt}", "--format", "torchscript", "-o", "{tmp}/x.pt", "--input-size", "200000"],
     "--input-size 200000: at most 4096"),
    (["export", "{ckpt}", "--format", "torchscript", "-o", "{tmp}/x.pt", "--batch", "100000000"],
     "--batch 100000000: at most 4096"),
    (["search", "--space", "{root}/tiny.yaml", "--teacher", "wrn-10-1", "--random-teacher", "--data-dir",
      "{root}/data", "--out", "{tmp}/run", "--device", "meta"], "--device meta: not a device rnas runs on"),
    (["search", "--space", "{root}/tiny.yaml", "--teacher", "wrn-10-1", "--random-teacher", "--data-dir",
      "{root}/data", "--out", "{tmp}/dangling"], "dangling: a symbolic link to"),
    (["search", "--space", "{root}/tiny.yaml", "--teacher", "wrn-10-1", "--random-teacher", "--data-dir",
      "{root}/data", "--out", "{tmp}/run\udcff"], "run\\xff: the path is not valid UTF-8"),  # argv's bytes 0xff
]


@pytest.mark.parametrize("args,message", NUMBERS_AND_PATHS, ids=[f"{a[0]}-{m[:24]}" for a, m in NUMBERS_AND_PATHS])
def test_numbers_devices_and_paths_are_checked_before_anything_runs(root, model_run, tmp_path, args, message):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    values = {"ckpt": model_run / "checkpoint.pt", "tmp": tmp_path, "root": root}
    code, err = main_in_process(*[a.format(**values) for a in args])
    assert code == 2 and message in one_line(err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling"]


@pytest.mark.parametrize("tail", ['{"epoch": 1, "weig', "not json", "null", "7", '{"epoch": "one"}'])
def test_a_damaged_last_line_of_metrics_does_not_stop_a_resume(root, tmp_path, tail):
    run = tmp_path / "run"
    code, err = main_in_process(*search_args(root, run, "--epochs", 1))
    assert code == 0, err
    first = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(first + tail)  # a kill or a full disk in the middle of a write
    code, err = main_in_process("search", "--resume", run, "--epochs", 2)
    assert code == 0, err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == first.strip() and [json.loads(x)["epoch"] for x in lines] == [0, 1]


@pytest.mark.parametrize("body,message", [
    ("searches: [{space: nope}]", "searches[0].space: nope: unknown search space"),
    ("searches: [{space: missing.yaml}]", "missing.yaml: cannot read file"),
    ("searches: [{space: s3, budgets: [1]}]", "searches[0].budgets: 1 MACs is below the smallest net of s3"),
    ("searches: [{space: s3}]\nthreads: 1000000000", "threads: 1000000000: a whole number from 1 to 1024"),
], ids=["unknown-space", "missing-spec", "tiny-budget", "threads"])
def test_a_study_with_a_plan_problem_fails_its_dry_run(tmp_path, body, message):
    path = tmp_path / "study.yaml"
    path.write_text(f"name: p\ndata: {{data: cifar10}}\nteacher: {{teacher: wrn-10-1}}\n{body}\narms: [{{arm: ce}}]\n")
    code, err = main_in_process("study", path, "--dry-run", "--data-dir", tmp_path, "--model-dir", tmp_path,
                                "--out", tmp_path / "out")
    assert code == 2 and message in one_line(err), err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def retrained(root):
    search = root / "for-retrain"
    assert main_in_process(*search_args(root, search, "--epochs", 1))[0] == 0
    assert main_in_process("derive", search)[0] == 0
    run = root / "retrained"
    code, err = main_in_process("retrain", search / "arch.json", "--data-dir", root / "data", "--val-size", 50,
                                "--batch-size", 25, "--epochs", 1, "--out", run)
    assert code == 0, err
    return search / "arch.json", run


@pytest.mark.parametrize("line", ["null", "7", '{"val_acc": 3}', '{"epoch": "one"}'])
def test_report_of_a_run_with_a_foreign_metrics_line_is_one_line(retrained, tmp_path, line):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(retrained[1], run)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(line + "\n")
    code, err = main_in_process("report", run, "-o", tmp_path / "report")
    assert code == 2 and "metrics.jsonl:2: not a metrics record" in one_line(err)
    assert not (tmp_path / "report").exists()


def test_arch_macs_that_are_not_a_number_are_refused_by_retrain(root, retrained, tmp_path):
    arch = json.loads(retrained[0].read_text())
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({**arch, "macs": "lots"}))
    code, err = main_in_process("retrain", path, "--data-dir", root / "data", "--val-size", 50, "--batch-size", 25,
                                "--epochs", 1, "--out", tmp_path / "run")
    assert code == 2 and "macs: expected a whole number >= 0, got 'lots'" in one_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("edit,message", [("epochs: ten", "epochs: expected int, got 'ten'"),
                                          ("batch_size: [1, 2]", "batch_size: expected int")])
def test_resume_of_a_run_whose_config_was_edited_is_one_line(retrained, tmp_path, edit, message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(retrained[1], run)
    key = edit.split(":")[0]
    text = "".join(edit + "\n" if line.startswith(f"{key}:") else line + "\n"
                   for line in (run / "config.yaml").read_text().splitlines())
    (run / "config.yaml").write_text(text)
    before = snapshot(run)
    code, err = main_in_process("retrain", "--resume", run)
    assert code == 2 and message in one_line(err), err
    assert snapshot(run) == before


def _write_half_then_ctrl_c(*args, **kwargs):
    """A stand-in for a writer: it writes part of its output (to its first path or file argument), then is
    stopped by Ctrl-C."""
    for arg in args:
        if isinstance(arg, Path) or hasattr(arg, "write"):
            (arg.write(b"half") if hasattr(arg, "write") else arg.write_bytes(b"half"))
            break
    raise KeyboardInterrupt


def test_ctrl_c_in_report_export_and_derive_leaves_no_partial_file(retrained, model_run, tmp_path, monkeypatch):
    """Ctrl-C in the middle of each command's writing: exit 130, one line, and the output folder holds what it
    held before (no report folder, no export file, no arch.json or temp file)."""
    import shutil

    import rnas.evaluation.export
    import rnas.report.collect
    import rnas.runtime.rundir

    arch, run = retrained
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(rnas.report.collect, "write_models_csv", _write_half_then_ctrl_c)
    code, err = main_in_process("report", run, "-o", out / "report")
    assert code == 130 and one_line(err) == "rnas: stopped (Ctrl-C)"
    monkeypatch.setattr(rnas.evaluation.export, "_write_new",
                        lambda partial, data, out: _write_half_then_ctrl_c(partial))
    code, err = main_in_process("export", model_run / "checkpoint.pt", "--format", "torchscript", "-o", out / "n.pt")
    assert code == 130 and one_line(err) == "rnas: stopped (Ctrl-C)"
    search = tmp_path / "search"
    shutil.copytree(arch.parent, search)
    (search / "arch.json").unlink()
    before = snapshot(search)
    atomic_write = rnas.runtime.rundir._atomic_write

    def half_written(path, write, fault_point=False):
        return atomic_write(path, _write_half_then_ctrl_c)

    monkeypatch.setattr(rnas.runtime.rundir, "_atomic_write", half_written)
    code, err = main_in_process("derive", search)
    assert code == 130 and one_line(err) == "rnas: stopped (Ctrl-C)"
    assert snapshot(search) == before
    assert sorted(out.iterdir()) == []


def test_derive_and_export_into_a_read_only_directory_are_one_line(retrained, model_run, tmp_path, read_only):
    import shutil

    arch, _ = retrained
    search = tmp_path / "search"
    shutil.copytree(arch.parent, search)
    (search / "arch.json").unlink()
    before = snapshot(search)
    read_only(search)
    code, err = main_in_process("derive", search)
    assert code == 2 and one_line(err) == (f"rnas: error: {search}: not writable; rnas derive writes its arch "
                                           "files into the search run (copy the run to a writable place and "
                                           "derive there)")
    assert snapshot(search) == before
    (tmp_path / "shelf").mkdir()
    shelf = read_only(tmp_path / "shelf")
    code, err = main_in_process("export", model_run / "checkpoint.pt", "--format", "torchscript", "-o",
                                shelf / "net.pt")
    assert code == 2 and one_line(err) == f"rnas: error: -o {shelf / 'net.pt'}: directory {shelf} is not writable"
    assert list(shelf.iterdir()) == []


def _edit_json(name, change):
    def edit(run):
        data = json.loads((run / name).read_text()) if name != "metrics.jsonl" else None
        if data is None:
            lines = [json.loads(line) for line in (run / name).read_text().splitlines()]
            change(lines[0])
            (run / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
        else:
            change(data)
            (run / name).write_text(json.dumps(data))
    return edit


def _results(rows):
    return _edit_json("eval-pixel.json", lambda d: d.update(results=rows))


DAMAGED_RUNS = {  # (search or retrain, edit of a copy of the run, the one line)
    "width-probs-ragged": ("search", _edit_json("metrics.jsonl", lambda r: r.update(width_probs=[[0.5, "x"], 3])),
                           "metrics.jsonl:1: width_probs is not a list of probability rows"),
    "width-probs-string": ("search", _edit_json("metrics.jsonl", lambda r: r.update(width_probs="abc")),
                           "metrics.jsonl:1: width_probs is not a list of probability rows"),
    "arch-macs-string": ("search", _edit_json("arch.json", lambda a: a.update(macs="lots")),
                         "arch.json: macs: expected a number >= 0, got 'lots'"),
    "arch-choices": ("search", _edit_json("arch.json", lambda a: a.update(width_choices=[8, 16])),
                     "arch.json: width_choices: expected a list of lists of widths"),
    "arch-no-choices": ("search", _edit_json("arch.json", lambda a: a.pop("width_choices")),
                        "arch.json: no width_choices (a damaged or edited arch.json"),
    "arch-empty-choice": ("search", _edit_json("arch.json", lambda a: a["width_choices"].__setitem__(0, [])),
                          "arch.json: width_choices: expected a list of lists of widths"),
    "arch-blocks": ("search", _edit_json("arch.json", lambda a: a["width_choices"].pop()),
                    "arch.json: width_choices: 2 blocks but widths has 3"),
    "arch-widths": ("search", _edit_json("arch.json", lambda a: a.update(widths=[8, "wide"])),
                    "arch.json: widths: expected a list of positive whole numbers, got [8, 'wide']"),
    "arch-tutor-range": ("search", _edit_json("arch.json", lambda a: a["tutors"].__setitem__(0, 99)),
                         "arch.json: tutors: expected"),
    "arch-tutor-rows": ("search", _edit_json("arch.json", lambda a: a["tutor_probabilities"].__setitem__(0, [1])),
                        "arch.json: tutor_probabilities: expected"),
    "arch-no-layers": ("search", _edit_json("arch.json", lambda a: a.pop("teacher_layers")),
                       "arch.json: no teacher_layers beside student_layers, tutors, tutor_probabilities"),
    "binary-config-search": ("search", lambda run: (run / "config.yaml").write_bytes(b"\x00\xff binary"),
                             "config.yaml: not a text file (byte 0xff at offset 1 is not UTF-8)"),
    "binary-config-retrain": ("retrain", lambda run: (run / "config.yaml").write_bytes(b"\x00\xff binary"),
                              "config.yaml: not a text file (byte 0xff at offset 1 is not UTF-8)"),
    "eval-row-number": ("retrain", _results([7]), "eval-pixel.json: results[0]: not an object"),
    "eval-row-attack": ("retrain", _results([{"attack": 3, "accuracy": 1.0}]), "results[0]: attack is not a name"),
    "eval-row-accuracy": ("retrain", _results([{"attack": "clean", "accuracy": "high"}]),
                          "results[0]: accuracy is not a number"),
    "eval-row-n": ("retrain", _results([{"attack": "clean", "accuracy": 1.0, "n": "ten"}]),
                   "results[0]: n is not a whole number"),
}


@pytest.mark.parametrize("case", list(DAMAGED_RUNS))
def test_report_of_a_damaged_run_directory_is_one_line(retrained, tmp_path, case):
    import shutil

    kind, edit, message = DAMAGED_RUNS[case]
    arch, run = retrained
    copy = tmp_path / "run"
    shutil.copytree(arch.parent if kind == "search" else run, copy)
    if kind == "retrain":
        code, err = main_in_process("eval", copy / "checkpoint.pt", "--attacks", "clean", "--n", 10, "--json",
                                    copy / "eval-pixel.json")
        assert code == 0, err
    edit(copy)
    code, err = main_in_process("report", copy, "-o", tmp_path / "report")
    assert code == 2 and message in one_line(err), err
    assert not (tmp_path / "report").exists()
