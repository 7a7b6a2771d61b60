"""The captured step (``--graphs on``): the search's weight and arch steps, the teacher forward and the retrain
step compile to one graph each (no graph break), read no value on the host, compute what the eager step
computes, count the training cost the eager hooks count and resume bit-exactly; the loop reads values only at
log steps, checkpoints and epoch ends. Most tests compile with dynamo's ``aot_eager`` backend (the same
graphs, no C++ compilation); one compiles as ``rnas search --graphs on`` does."""
import pytest
import torch
from helpers import (
    main_in_process,
    search_args,
    tiny_retrain_config,
    tiny_search_and_derive,
    tiny_search_config,
    write_tiny_setup,
)

import rnas.engine.search as search_module
import rnas.engine.trainer as trainer_module
from rnas.engine.loop import RunStopped
from rnas.engine.retrain import build_retrain
from rnas.engine.search import Searcher
from rnas.errors import UserError
from rnas.runtime.audit import graph_breaks, host_syncs
from rnas.runtime.rundir import load_checkpoint, resume_checkpoint

compiles = [pytest.mark.slow, pytest.mark.timeout(600)]  # each compiles graphs: seconds on an idle machine


def aot_eager(fn, device):
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False  # as rnas.runtime.device.capture
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


@pytest.fixture
def light_capture(monkeypatch):
    monkeypatch.setattr(search_module, "capture", aot_eager)
    monkeypatch.setattr(trainer_module, "capture", aot_eager)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = write_tiny_setup(tmp_path_factory.mktemp("captured"))
    tiny_search_and_derive(root, root / "search", "--limit", 40, "--batch-size", 10)
    return root


def batch(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def searcher(root, graphs, **flags):
    torch.manual_seed(0)
    return Searcher.from_config(tiny_search_config(root, graphs=graphs, **flags))


@compiles[0]
@compiles[1]
def test_the_captured_search_step_is_one_graph_per_part_and_reads_no_value(root, light_capture):
    s = searcher(root, "on")
    x, y = batch()
    q, t_maps = s.teacher_targets(x)
    for part, rows in (("weight", slice(0, 8)), ("arch", slice(8, 10))):
        widths, tutors = s.draw(len(y[rows]))
        explained = graph_breaks(s.loss_terms, x[rows], y[rows], q[rows], t_maps[rows], widths, tutors,
                                 len(y[rows]), part)
        assert (explained["graphs"], explained["graph_breaks"]) == (1, 0), explained["reasons"]
    assert graph_breaks(s._teacher_targets, x)["graph_breaks"] == 0
    s.step = 1
    assert host_syncs(lambda: s.train_step(x, y)) == {}
    s.step = 0  # a step that also measures the attention term's gradient share (backward twice)
    assert host_syncs(lambda: s.train_step(x, y)) == {}
    eager = searcher(root, "off")
    eager.step = 1
    assert host_syncs(lambda: eager.train_step(x, y)) == {"item": len(eager.arch_params)}  # Adam's step counts


@compiles[0]
@compiles[1]
def test_the_captured_retrain_step_is_one_graph_and_reads_no_value(root, light_capture):
    trainer = build_retrain(tiny_retrain_config(root, 40, 10, graphs="on"))
    x, y = batch()
    explained = graph_breaks(trainer.loss_terms, x, y)
    assert (explained["graphs"], explained["graph_breaks"]) == (1, 0), explained["reasons"]
    for step in (1, 0):
        trainer.step = step
        assert host_syncs(lambda: trainer.train_step(x, y)) == {}


def close(a: dict, b: dict, rel: float = 1e-5) -> list[str]:
    """Keys of two term dicts whose values differ by more than ``rel`` of their size (at least 1)."""
    return [k for k in a if abs(a[k].item() - b[k].item()) > rel * max(1.0, abs(a[k].item()))]


@compiles[0]
@compiles[1]
def test_the_captured_search_step_computes_the_eager_step(root, light_capture):
    x, y = batch()
    runs = {}
    for graphs in ("off", "on"):
        s = searcher(root, graphs)
        s.step = 0
        runs[graphs] = s.train_step(x, y), s
    (a, eager), (b, captured) = runs["off"], runs["on"]
    assert a.keys() == b.keys() and not close(a, b)
    for p, q in zip(eager.weight_params + eager.arch_params, captured.weight_params + captured.arch_params,
                    strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-5)


@compiles[0]
@compiles[1]
def test_the_captured_retrain_step_computes_the_eager_step(root, light_capture):
    x, y = batch()
    runs = {}
    for graphs in ("off", "on"):
        torch.manual_seed(0)
        trainer = build_retrain(tiny_retrain_config(root, 40, 10, graphs=graphs))
        trainer.step = 0
        runs[graphs] = trainer.train_step(x, y), trainer
    (a, eager), (b, captured) = runs["off"], runs["on"]
    assert a.keys() == b.keys() and not close(a, b)
    for p, q in zip(eager.model.parameters(), captured.model.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-5)


@compiles[0]
@compiles[1]
@pytest.mark.parametrize("graphs", ["off", "on"])
def test_the_loop_reads_no_value_between_log_steps(root, tmp_path, graphs, light_capture):
    """A whole epoch of 4 steps and one of 8 read the same values on the host: the epoch's end reads them,
    the loop reads none at a step (log_every 0, no step checkpoints). The eager step keeps PyTorch's Adam,
    which reads each arch parameter's step count once a step."""
    counts = []
    for limit in (40, 80):
        s = searcher(root, graphs, limit=limit, val_size=10)
        s.step = 1
        s.train_step(*batch())  # compiled before counting
        s.step = 0
        counts.append(host_syncs(lambda s=s, run=tmp_path / f"{graphs}-{limit}": s.fit(run)))
    adam = 0 if graphs == "on" else 4 * len(s.arch_params)  # 4 more steps
    assert counts[1] == {**counts[0], "item": counts[0]["item"] + adam}


@compiles[0]
@compiles[1]
def test_a_captured_search_counts_the_cost_the_eager_hooks_count(root, tmp_path, light_capture):
    totals = {}
    for graphs in ("off", "on"):  # log_every 2: every other step also measures the gradient share
        s = searcher(root, graphs, log_every=2)
        s.fit(tmp_path / graphs)
        totals[graphs] = s.meter.total
    assert totals["on"] == totals["off"] == dict.fromkeys(totals["on"], 40)  # 40 images, forward and backward


@compiles[0]
@compiles[1]
def test_a_captured_search_stopped_and_resumed_ends_bit_exact(root, tmp_path, light_capture):
    whole, split = tmp_path / "whole", tmp_path / "split"
    searcher(root, "on", epochs=2).fit(whole)
    s = searcher(root, "on", epochs=2)
    with pytest.raises(RunStopped):
        s.fit(split, should_stop=lambda: (s.epoch, s.step) == (0, 2))
    resumed = searcher(root, "on", epochs=2)
    resumed.load_state(resume_checkpoint(split, True))
    resumed.fit(split, resume=True)
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    for key in a["supernet"]:
        assert torch.equal(a["supernet"][key], b["supernet"][key]), key
    assert torch.equal(a["tutor"]["tutor_logits"], b["tutor"]["tutor_logits"])


def test_what_cannot_be_captured_is_one_line(root, tmp_path):
    with pytest.raises(UserError, match="look-ahead is not captured"):
        searcher(root, "on", tutor_objective="robust")
    with pytest.raises(UserError, match="attack loop .nfgsm. is not captured"):
        build_retrain(tiny_retrain_config(root, 40, 10, graphs="on", at="nfgsm", from_scratch=True))
    code, err = main_in_process(*search_args(root, tmp_path / "run", "--graphs", "on", "--amp", "fp16"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "gradient scaler" in err
    assert not (tmp_path / "run").exists()
    assert searcher(root, "auto").captured is False  # auto: CUDA only


def test_a_divergence_is_reported_at_its_own_step_after_the_deferred_check(root, tmp_path, monkeypatch):
    """The loop checks the loss terms' finiteness at log steps, checkpoints and the epoch's end, and names the
    first non-finite step, with nothing written after it."""
    from rnas.errors import TrainingDiverged

    s = searcher(root, "off")
    step = s.train_step

    def poisoned(x, y):
        terms = step(x, y)
        if s.step == 1:  # the second step of the epoch
            terms["weight/ce"] = terms["weight/ce"] * float("nan")
        return terms
    monkeypatch.setattr(s, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 1, step 2: weight/ce=nan"):
        s.fit(tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 0  # the step-0 checkpoint only


@compiles[0]
@compiles[1]
def test_the_compiled_search_step_equals_the_eager_one(root):
    """Compiled as ``--graphs on`` compiles it (inductor on this CPU): losses and weights within 1e-5."""
    x, y = batch()
    runs = {}
    for graphs in ("off", "on"):
        s = searcher(root, graphs)
        s.step = 1
        runs[graphs] = s.train_step(x, y), s
    (a, eager), (b, captured) = runs["off"], runs["on"]
    assert not close(a, b)
    for p, q in zip(eager.weight_params, captured.weight_params, strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-5)
