"""The documentation holds: every ```python block of README.md and docs/**/*.md runs as printed (a block that
needs data, a GPU, a teacher checkpoint or a long run is fenced ```python notest instead), every relative
link and image points to a file that exists (and a #anchor into a page to one of its headings), and the
README stays a short page in front of docs/."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def split_fences(page: Path):
    """(prose lines with their numbers, fenced blocks as (info, first line number, code))."""
    prose, blocks = [], []
    fence = info = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if fence is None:
            if match and not (match[1][0] == "`" and "`" in match[2]):
                fence, info, start, body = match[1], match[2].strip(), number, []
            else:
                prose.append((number, line))
        elif match and match[1][0] == fence[0] and len(match[1]) >= len(fence) and not match[2].strip():
            blocks.append((info, start, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{rel(page)}:{start}: a code fence that is never closed"
    return prose, blocks


def python_blocks():
    for page in PAGES:
        for info, start, code in split_fences(page)[1]:
            if info == "python" and ".fit(" not in code:  # the block that trains: tests/test_library.py runs it
                yield pytest.param(page, start, code, id=f"{rel(page)}:{start}")


@pytest.mark.parametrize(("page", "start", "code"), list(python_blocks()))
def test_python_block_runs(page, start, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # padded so that a traceback's line numbers are the page's own
    exec(compile("\n" * start + code, str(page), "exec"), {"__name__": "__docs__"})  # noqa: S102 - the docs' own code


def slug(heading: str) -> str:
    """The #anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m[0].strip("`"), heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading counts by its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in split_fences(page)[0]:
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path):
    for number, line in split_fences(page)[0]:
        reference = REFERENCE.match(line)
        if reference:
            yield number, reference[1]
            continue
        for match in LINK.finditer(CODE_SPAN.sub(lambda m: " " * len(m[0]), line)):
            yield number, match[1]


def test_relative_links_point_to_existing_files():
    broken = []
    for page in PAGES:
        for number, target in links(page):
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
                continue  # an external address (https:, mailto:, ...)
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{rel(page)}:{number}: {target}"
            if not file.exists():
                broken.append(f"{where}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{where}: no heading #{anchor} in {file.relative_to(ROOT).as_posix()}")
    assert not broken, "\n".join(broken)


def test_readme_is_short_and_docs_hold_the_rest():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move reference material into docs/"
    assert len(list((ROOT / "docs").rglob("*.md"))) >= 5


def test_every_page_starts_with_its_title():
    for page in PAGES:
        first = page.read_text(encoding="utf-8").splitlines()[0]
        assert re.match(r"^# \S", first), f"{rel(page)}: the first line is not a '# Title'"


def check_docs():
    """tools/check_docs.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_docs", ROOT / "tools" / "check_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_stated_default_is_the_clis():
    problems, checked = check_docs().check_defaults()
    assert not problems, "\n".join(problems)
    assert checked >= 14  # README's --device, docs/cli.md's flags, docs/evaluation.md's --split, ...


def test_a_wrong_default_in_a_page_is_named(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## `rnas search`\n\nThe device: `--device cpu` (the default), and `--tau`,\n"
                    "`--tutor-tau` (both 4.0); `rnas eval --split auto` (the default).\n")
    tool = check_docs()
    tool.ROOT = tmp_path
    problems, checked = tool.check_defaults([page])
    assert checked == 4
    assert problems == ["page.md:5: --device is stated to default to cpu; `rnas search --help` says auto",
                        "page.md:5: --tau is stated to default to 4.0; `rnas search --help` says 5.0",
                        "page.md:5: --tutor-tau is stated to default to 4.0; `rnas search --help` says 5.0"]


def test_the_readmes_quickstart_table_and_times_are_the_committed_measurements():
    from rnas.commands.quickstart_table import load_reference

    problems = check_docs().check_quickstart_claims((ROOT / "README.md").read_text(encoding="utf-8"), load_reference())
    assert not problems, "\n".join(problems)


def test_a_quickstart_table_or_time_that_is_not_the_measurements_is_named():
    from rnas.commands.quickstart_table import format_table, setting

    rows = [{"model": "RNAS-CL (searched tutors)", "params": 124_250, "macs": 5_493_296, "clean": 90.0 + s,
             "pgd20": 20.0, "n": 297} for s in range(5)]
    reference = {"setting": setting(), "seeds": {str(s): {"seconds": 300.0 + 10 * s, "rows": [rows[s]]}
                                                 for s in range(5)}}
    reference["seeds"]["4"]["cpu_seconds"] = {"training": 250.0, "evaluation": 100.0}
    reference["seeds"]["3"]["cpu_seconds"] = {"training": 240.0, "evaluation": 90.0}
    claims = ("`rnas quickstart` takes under 6 minutes on 2 CPU cores; seeds 3 and 4 take on\n"
              "2 idle cores about 285–300 s.\n"
              '`-m "not slow"` skips them and finishes in under 3 minutes on 2 idle cores.\n')
    good = f"```\n{format_table([rows[0]], reference)}\n```\n{claims}"
    tool = check_docs()
    assert tool.check_quickstart_claims(good, reference) == []
    assert tool.readme_claims(good) == {"table": format_table([rows[0]], reference), "suite_minutes": (3,),
                                        "quickstart_minutes": (6,), "idle_times": (285, 300)}
    wrong = good.replace("  90.0", "  91.0", 1).replace("about 285–300", "about 285–290")
    problems = tool.check_quickstart_claims(wrong.replace("under 6 minutes", "under 4 minutes"), reference)
    assert [p.splitlines()[0] for p in problems] == [
        "README.md: the quickstart table is not the reference's seed 0; it should read:",
        "README.md: the quickstart's times on 2 idle cores read (285, 290); the reference's CPU times give (285, 300)",
        "README.md: the quickstart is said to take under 4 minutes; on 2 idle cores the reference's CPU times give "
        "(285, 300) s"]
