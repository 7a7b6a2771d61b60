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


@pytest.mark.parametrize("command,code", [(["teachers", "--robustbench"], 141), (["eval", "--list-attacks"], 141),
                                          (["spaces"], 141),
                                          (["--help"], 141)])
def test_a_reader_that_stops_early_is_a_quiet_end(command, code):
    """rnas ... | head: stdout closed before rnas writes is the end of the output (128 + SIGPIPE, as for a Unix
    tool), not an internal error."""
    import os
    import subprocess

    from helpers import rnas_cmd

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the write fails at a flush
    process = subprocess.Popen(rnas_cmd(*command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader is gone before the first line
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == code and err == ""


def test_defaults_show_as_fractions_of_255_only_where_the_flag_reads_fractions():
    """--eps 8/255 is shown as written; the 80/20 split's 0.2 is 0.2, not the 51/255 it happens to equal."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(out.getvalue().split())
    assert "used for the arch step (default: 0.2;" in text
    assert "alpha of the fbnetv2 factor (default: 0.2;" in text
    assert "51/255" not in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["retrain", "--help"])
    text = " ".join(out.getvalue().split())
    assert "(default: 8/255; range: > 0)" in text and "(default: 2/255; range: > 0)" in text
