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


def test_table_lists_every_model_with_its_subset_sizes():
    rows = [{"model": name, "params": 110_000, "macs": 4_743_304, "clean": 90.0, "pgd20": 60.0, "pgd20_subset": 50.0,
             "autoattack_subset": 40.0, "n": 297, "n_subset": 10} for name in ("RNAS-CL", "CE only")]
    table = format_table(rows).splitlines()
    assert "clean n=297" in table[0] and "AutoAttack n=10" in table[0]
    assert table[2].split() == ["RNAS-CL", "0.110M", "4.74M", "90.0", "60.0", "50.0", "40.0"]
    assert len(table) == 4


class _Stop(Exception):
    pass


def test_quickstart_writes_absolute_paths_into_every_config(tmp_path, monkeypatch):
    """The stages are stubbed (the real ones take minutes): only the configs the quickstart builds are checked."""
    import json
    from pathlib import Path

    import rnas.commands.quickstart as qs

    monkeypatch.chdir(tmp_path)
    seen = {}

    def teacher(cfg, run):
        seen["teacher"] = (cfg.out, run)
        path = Path("qs/teacher/models/digits/Linf/wrn-16-1.pt")  # cwd-relative, as a relative --out gives
        path.parent.mkdir(parents=True)
        path.with_suffix(".json").write_text(json.dumps({"val": {}}))
        return path

    def retrain(cfg, run):
        seen["retrain"] = (cfg.arch, cfg.teacher_ckpt, cfg.out, run)
        raise _Stop

    monkeypatch.setattr(qs, "run_teacher_training", teacher)
    monkeypatch.setattr(qs, "run_search", lambda cfg, run: seen.setdefault("search", (cfg.teacher_ckpt, cfg.out, run)))
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
