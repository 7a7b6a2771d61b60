"""The docs' search driven from Python (a user-made teacher and DataLoader) runs as printed."""
import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


PAGE = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def test_the_python_api_search_runs_as_printed(tmp_path, monkeypatch):
    text = PAGE.read_text()
    section = text[text.index("## The engine from Python"):text.index("## Where the engine's pieces are")]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/python-api.md", "exec"), namespace)  # noqa: S102 - the page's own example
    printed = out.getvalue().split("\n")
    assert [line.split()[0] for line in printed if line] == ["0", "1"]  # the callback saw both epochs
    records = [json.loads(line) for line in (tmp_path / "runs/my-search/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and all(r["weight/total"] > 0 for r in records)
    arch = namespace["arch"]
    assert arch["macs"] == namespace["searcher"].supernet.cost()[1]  # the derived net is the supernet's argmax
    assert os.path.isfile(tmp_path / "runs/my-search/checkpoint.pt")


def test_no_submodule_shadows_a_public_name():
    """Importing every rnas module must leave each name of rnas.__all__ what __init__ made it (a submodule
    named like a public function, e.g. rnas/derive.py, would replace rnas.derive once imported)."""
    import importlib
    import pkgutil
    import types

    import rnas

    for module in pkgutil.iter_modules(rnas.__path__):
        if module.name != "__main__":  # that one runs the CLI
            importlib.import_module(f"rnas.{module.name}")
    shadowed = [name for name in rnas.__all__ if isinstance(getattr(rnas, name), types.ModuleType)]
    assert not shadowed and callable(rnas.derive)
