"""The quickstart's guard rails and table (the full run is timed by hand: see the README)."""
import pytest

from rnas.errors import UserError
from rnas.quickstart import format_table, run_quickstart


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
