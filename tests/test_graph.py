"""`rnas derive --graph` and rnas.nets.graph on a tiny search run: the GraphML holds exactly arch.json's taps,
widths and tutors; the PNG drawing has its documented size; a missing matplotlib names the extra."""
import json
import sys
from itertools import pairwise

import networkx
import pytest
from helpers import main_in_process, write_tiny_setup

from rnas.errors import UserError
from rnas.nets.graph import arch_graph, draw_arch_graph, tap_block

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch search (100 images) of the tiny space with the tiny teacher (made once for the module)."""
    root = write_tiny_setup(tmp_path_factory.mktemp("graph"))
    out = root / "run"
    code, err = main_in_process(
        "search", "--space", root / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt", "tiny",
        "--model-dir", root / "models", "--data", "cifar10", "--data-dir", root / "data", "--val-size", 20,
        "--limit", 100, "--batch-size", 20, "--epochs", 1, "--out", out, "--arch-lr", 0.05)
    assert code == 0, err
    return out


def check_graphml(path, arch):
    """Every number of the GraphML read back equals its arch.json's."""
    graph = networkx.read_graphml(path)
    students, teachers = arch["student_layers"], arch["teacher_layers"]
    n_s, n_t = len(students), len(teachers)
    assert graph.number_of_nodes() == n_s + n_t
    assert {k: graph.graph[k] for k in ("space", "params", "macs", "teacher")} == {
        "space": arch["space"], "params": arch["params"], "macs": arch["macs"],
        "teacher": f"{arch['teacher']['name']} ({arch['teacher']['checkpoint']})"}
    edges = list(graph.edges(data=True))
    tutor = {a: (b, d["probability"]) for a, b, d in edges if d["kind"] == "tutor"}
    flow = [(a, b) for a, b, d in edges if d["kind"] == "flow"]
    assert len(tutor) == sum(d["kind"] == "tutor" for *_, d in edges) == n_s
    assert len(flow) == (n_s - 1) + (n_t - 1)
    assert set(flow) == {(f"student:{a}", f"student:{b}") for a, b in pairwise(students)} | \
        {(f"teacher:{a}", f"teacher:{b}") for a, b in pairwise(teachers)}
    for i, (layer, j) in enumerate(zip(students, arch["tutors"], strict=True)):
        node = graph.nodes[f"student:{layer}"]
        assert (node["kind"], node["layer"], node["order"]) == ("student", layer, i)
        block = int(layer.split(".")[1]) if layer.startswith("blocks.") else -1
        assert node["block"] == block
        assert node["width"] == (arch["widths"][block] if block >= 0 else -1)
        target, probability = tutor[f"student:{layer}"]
        assert target == f"teacher:{teachers[j]}"
        assert probability == pytest.approx(arch["tutor_probabilities"][i][j], abs=1e-9)
    assert [graph.nodes[f"teacher:{t}"]["order"] for t in teachers] == list(range(n_t))
    # the taps cover every block of the net: each width of arch.json is on some student node
    assert {d["block"] for _, d in graph.nodes(data=True) if d["kind"] == "student"} == \
        {-1, *range(len(arch["widths"]))}


def test_derive_graph_matches_arch_json(run, capsys):
    assert main_in_process("derive", run)[0] == 0
    assert not (run / "arch.graphml").exists()  # only on request
    code, err = main_in_process("derive", run, "--graph")
    assert code == 0, err
    assert f"wrote {run / 'arch.graphml'}" in capsys.readouterr().out
    arch = json.loads((run / "arch.json").read_text())
    assert len(arch["student_layers"]) == 7 and len(arch["teacher_layers"]) == 9  # tiny space, wrn-10-1
    check_graphml(run / "arch.graphml", arch)


def test_derive_graph_one_file_per_budget(run, capsys):
    code, err = main_in_process("derive", run, "--mac-target", "0.2M,0.25M", "--graph")
    assert code == 0, err
    out = capsys.readouterr().out
    macs = []
    for name in ("arch-0.2M", "arch-0.25M"):
        assert f"wrote {run / (name + '.graphml')}" in out
        arch = json.loads((run / f"{name}.json").read_text())
        check_graphml(run / f"{name}.graphml", arch)
        macs.append(networkx.read_graphml(run / f"{name}.graphml").graph["macs"])
    assert macs[0] <= 0.2e6 < macs[1] <= 0.25e6  # each file is its own budget's net


def test_bad_budget_writes_no_graph(run, tmp_path):
    """Every budget is derived before any file is written: one impossible budget, no file at all."""
    code, err = main_in_process("derive", run, "--mac-target", "0.22M,1k", "--graph")
    assert code == 2 and "below the smallest net" in err
    assert not list(run.glob("arch-0.22M.*")) and not list(run.glob("arch-0.001M.*"))


def test_draw_arch_graph_png(run, tmp_path):
    pyplot = pytest.importorskip("matplotlib.pyplot")
    main_in_process("derive", run)
    arch = json.loads((run / "arch.json").read_text())
    path = draw_arch_graph(arch, tmp_path / "arch.png")
    assert path == tmp_path / "arch.png" and path.read_bytes()[:8] == PNG_MAGIC
    image = pyplot.imread(path)
    rows = max(len(arch["student_layers"]), len(arch["teacher_layers"]))
    assert image.shape == (120 + 25 * rows, 900, 4)  # the documented size: 120 px + 25 px per row, 900 wide
    assert image[..., :3].min() < 0.5 and image[..., :3].max() == 1.0  # something drawn on a white page


def test_draw_without_matplotlib_names_the_extra(run, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.collections"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of a None entry raises ImportError
    main_in_process("derive", run)
    arch = json.loads((run / "arch.json").read_text())
    with pytest.raises(UserError, match=r"needs matplotlib: pip install -e '\.\[report\]'"):
        draw_arch_graph(arch, tmp_path / "arch.png")
    assert not (tmp_path / "arch.png").exists()


def test_tap_names_to_blocks_and_broken_arch():
    assert [tap_block(n) for n in ("tap_stem", "blocks.0.tap_hidden", "blocks.12.tap_out")] == [-1, 0, 12]
    arch = {"space": "T", "params": 1, "macs": 2, "widths": [8], "student_layers": ["tap_stem", "blocks.1.tap_out"],
            "teacher_layers": ["conv"], "tutors": [0, 0], "tutor_probabilities": [[1.0], [1.0]],
            "teacher": {"name": "t", "checkpoint": None}}
    with pytest.raises(UserError, match=r"student_layers\[1\] 'blocks.1.tap_out' is in block 1, but widths has 1"):
        arch_graph(arch)
    arch["widths"] = [8, 16]
    graph = arch_graph(arch)
    assert graph.graph["teacher"] == "t (random weights)"
    assert [graph.nodes[n]["width"] for n in ("student:tap_stem", "student:blocks.1.tap_out")] == [-1, 16]
    with pytest.raises(UserError, match="no 'tutors'"):
        arch_graph({k: v for k, v in arch.items() if k != "tutors"})
