"""Every command's --help renders (argparse formats help strings: a stray % would crash it)."""
import contextlib
import io

import pytest

from rnas.cli import COMMANDS, main


@pytest.mark.parametrize("command", [[name] for name, _, _ in COMMANDS if name != "teacher"] + [["teacher", "train"]])
def test_help_renders(command):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: rnas" in out.getvalue()
    if command == ["retrain"]:  # its milestones help has literal percent signs
        assert "75 % and 90 % of --epochs" in " ".join(out.getvalue().split())
