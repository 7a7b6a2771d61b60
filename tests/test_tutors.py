"""Tutor objectives, derivations and diversity (rnas/tutors.py, rnas/tutor_robust.py): each objective's
gradient reaches the tutor logits it claims to (finite differences in float64 on a tiny net), the
standardised score cannot crown one teacher tap for every student layer, balanced and monotone derivation
are exact, the robust look-ahead gradient matches a finite-difference estimate, and derive writes them."""
import itertools
import json
import math

import numpy as np
import pytest
import torch
from helpers import main_in_process, tiny_search_config, write_tiny_setup

from rnas.data import keyed_generator
from rnas.engine.loop import run_job
from rnas.engine.search import Searcher
from rnas.method import tutor_robust
from rnas.method.tutors import (
    TUTOR_DERIVATIONS,
    TUTOR_OBJECTIVES,
    derive_balanced,
    derive_monotone,
    derive_tutors,
    spearman,
    standardise_columns,
    tutor_diversity,
    weighted_distance,
)
from rnas.nets.derivation import write_archs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("tutors"))


def make(env, **overrides) -> Searcher:
    return Searcher.from_config(tiny_search_config(env, **overrides))


@pytest.fixture
def searcher64(env):
    """A float64 searcher with random tutor and width logits, and a float64 batch with its teacher targets."""
    made = []

    def build(**overrides):
        s = make(env, **overrides)
        made.append(s)
        s.supernet.double(), s.teacher.double(), s.tutor.double()
        with torch.no_grad():
            for p in s.arch_params:
                p.normal_(0, 0.5)
        x, y = next(iter(s.loader.epoch(0)))
        x = x.double()
        return s, x, y, s.teacher_targets(x)

    yield build
    for s in made:
        s.close()


def fd_directional(f, param: torch.Tensor, direction: torch.Tensor, h: float = 1e-5) -> float:
    """(f(p + h u) - f(p - h u)) / 2h, ``param`` restored."""
    saved = param.detach().clone()
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            param.copy_(saved + sign * h * direction)
        value = f()
        values.append(value.item() if torch.is_tensor(value) else value)
    with torch.no_grad():
        param.copy_(saved)
    return (values[0] - values[1]) / (2 * h)


def arch_total(s, x, y, targets, part="arch"):
    """Eq. (2) of the arch step, its Gumbel draw fixed by a keyed generator."""
    return s.objective(x, y, targets, noise=keyed_generator(x.device, 7), part=part)["total"]


# ---- each objective sends the gradient it claims to the tutor logits ----------------------------------------

def test_paper_objective_tutor_gradient_is_eq1s_own(searcher64):
    s, x, y, targets = searcher64(tutor_objective="paper")
    (grad,) = torch.autograd.grad(arch_total(s, x, y, targets), [s.tutor.tutor_logits])
    u = torch.randn_like(grad)
    fd = fd_directional(lambda: arch_total(s, x, y, targets), s.tutor.tutor_logits, u)
    assert float((grad * u).sum()) == pytest.approx(fd, rel=1e-6)
    assert grad.abs().min() > 0  # every tutor logit


def test_standardised_objective_moves_tutors_by_z_scores_and_leaves_widths_and_values_alone(searcher64):
    s, x, y, targets = searcher64(tutor_objective="standardised")
    total = arch_total(s, x, y, targets)
    widths_std = torch.autograd.grad(total, s.arch_params[:-1], retain_graph=True)
    (tutor_std,) = torch.autograd.grad(total, [s.tutor.tutor_logits])
    s.tutor_objective = TUTOR_OBJECTIVES["paper"]
    total_paper = arch_total(s, x, y, targets)
    widths_paper = torch.autograd.grad(total_paper, s.arch_params[:-1], retain_graph=True)
    (tutor_paper,) = torch.autograd.grad(total_paper, [s.tutor.tutor_logits])
    assert total.item() == total_paper.item()  # the surrogate adds gradient, not value
    for a, b in zip(widths_std, widths_paper, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    assert not torch.allclose(tutor_std, tutor_paper)

    # its tutor gradient is the finite difference of gamma n_f L(g(alpha), z-scored distances)
    with torch.no_grad():
        p, s_maps = s.student_forward(x, s.draw(len(x), keyed_generator(x.device, 7))[0])
        z = standardise_columns(s.tutor.pair_distances(s_maps, targets[1]))
        n_f = s.objective(x, y, targets, noise=keyed_generator(x.device, 7))["n_f"]

    def surrogate():
        tutor_weights = s.draw(len(x), keyed_generator(x.device, 7))[1]
        return s.cfg.gamma_s * n_f * weighted_distance(tutor_weights, z)

    u = torch.randn_like(tutor_std)
    assert float((tutor_std * u).sum()) == pytest.approx(fd_directional(surrogate, s.tutor.tutor_logits, u), rel=1e-6)


def test_robust_objective_arch_step_gives_the_tutor_logits_the_lookahead_gradient_alone(searcher64, monkeypatch):
    s, x, y, targets = searcher64(tutor_objective="robust")
    q, maps = targets
    weight_part = (x[:8], y[:8], (q[:8], maps[:8]), 8)
    expected, _ = tutor_robust.lookahead_tutor_gradient(s, weight_part, (x[8:], y[8:], (q[8:], maps[8:]), 2),
                                                        keyed_generator(x.device, 3))
    seen = {}
    step = torch.optim.Adam.step

    def spy(opt, *args, **kwargs):
        if opt is s.arch_opt:
            seen["tutor"] = s.tutor.tutor_logits.grad.clone()
        return step(opt, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    s.arch_step(x[8:], y[8:], (q[8:], maps[8:]), lookahead=(weight_part, keyed_generator(x.device, 3)))
    torch.testing.assert_close(seen["tutor"], expected, rtol=1e-10, atol=1e-14)
    assert expected.abs().max() > 0


def test_robust_lookahead_gradient_matches_finite_differences_of_the_unrolled_loss(searcher64, monkeypatch):
    """d/d alpha CE(student_{w - xi grad_w L_train(w, alpha)}(x_adv), y) with x_adv held fixed."""
    s, x, y, targets = searcher64(tutor_objective="robust", tutor_attack="pgd", tutor_attack_steps=3)
    q, maps = targets
    weight_part, arch_part = (x[:8], y[:8], (q[:8], maps[:8]), 8), (x[8:], y[8:], (q[8:], maps[8:]), 2)
    made = {}
    attack = tutor_robust.adversarial_examples

    def keep(*args, **kwargs):
        made["x_adv"] = attack(*args, **kwargs)
        return made["x_adv"]

    monkeypatch.setattr(tutor_robust, "adversarial_examples", keep)
    xi = 0.05
    grad, measured = tutor_robust.lookahead_tutor_gradient(s, weight_part, arch_part, keyed_generator(x.device, 3), xi,
                                                           fd_radius=RADIUS)
    assert 0 <= float(measured["adv_acc"]) <= 100
    params = [p for p in s.weight_params if p.requires_grad]

    def unrolled() -> float:
        generator = keyed_generator(x.device, 3)  # the same draws as the look-ahead's
        widths_w, tutor_w = s.draw(8, generator)
        widths_a = s.supernet.width_weights(2, generator)
        with torch.enable_grad():
            total = s.objective(*weight_part[:3], 8, draws=(widths_w, tutor_w))["total"]
            step = torch.autograd.grad(total, params, allow_unused=True)
        step = [torch.zeros_like(p) if g is None else g for p, g in zip(params, step, strict=True)]
        with tutor_robust.weights_moved(params, step, -xi), s.student_taps.paused(), torch.no_grad():
            return float(torch.nn.functional.cross_entropy(s.supernet(made["x_adv"], widths_a), y[8:]))

    for seed in range(3):
        u = torch.randn(grad.shape, generator=torch.Generator().manual_seed(seed), dtype=grad.dtype)
        fd = fd_directional(unrolled, s.tutor.tutor_logits, u, h=1e-4)
        assert float((grad * u).sum()) == pytest.approx(fd, rel=2e-3, abs=1e-9)


def test_robust_standardised_is_the_robust_signal_z_scored_per_teacher_column(searcher64, monkeypatch):
    """The same distance changes along the adversarial-loss gradient as ``robust``, z-scored over the rows."""
    seen = {}
    weighted = tutor_robust.weighted_distance

    def spy(weights, distances):
        seen["change"] = distances.detach().clone()
        return weighted(weights, distances)

    monkeypatch.setattr(tutor_robust, "weighted_distance", spy)
    grads = {}
    for objective in ("robust", "robust-standardised"):
        s, x, y, targets = searcher64(tutor_objective=objective)
        q, maps = targets
        grads[objective], _ = tutor_robust.lookahead_tutor_gradient(
            s, (x[:8], y[:8], (q[:8], maps[:8]), 8), (x[8:], y[8:], (q[8:], maps[8:]), 2), keyed_generator(x.device, 3),
            0.05)
        grads[objective + " change"] = seen["change"]
    z = grads["robust-standardised change"]
    torch.testing.assert_close(z, standardise_columns(grads["robust change"]), rtol=1e-6, atol=1e-8)
    assert z.sum(1).abs().max() < 1e-9  # each sample's columns sum to zero over the student rows
    draws = s.draw(8, keyed_generator(x.device, 3))  # the look-ahead's own draw
    n_f = s.objective(x[:8], y[:8], (q[:8], maps[:8]), 8, draws=draws)["n_f"]
    (expected,) = torch.autograd.grad(s.cfg.gamma_s * n_f.detach() * weighted(draws[1], z), s.tutor.tutor_logits)
    torch.testing.assert_close(grads["robust-standardised"], -0.05 * expected, rtol=1e-10, atol=1e-14)
    assert not torch.allclose(grads["robust-standardised"] / grads["robust-standardised"].norm(),
                              grads["robust"] / grads["robust"].norm())


def test_robust_examples_stay_in_the_eps_ball_and_the_image_range():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 4, (16,))
    for attack, steps in (("fgsm", 1), ("pgd", 5)):
        x_adv = tutor_robust.adversarial_examples(model, x, y, 8 / 255, attack, steps)
        assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-7
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
        assert float((x_adv - x).abs().max()) > 7 / 255  # it moved


# ---- the standardised score cannot crown one column ---------------------------------------------------------

def test_one_nearest_map_wins_every_row_of_eq1_but_not_of_the_standardised_score():
    # teacher tap 0 is the nearest map for every student layer (a flat, easy map); the others fit one layer each
    d = torch.tensor([[[0.20, 0.30, 0.90, 0.90],
                       [0.21, 0.90, 0.30, 0.90],
                       [0.19, 0.90, 0.90, 0.30],
                       [0.22, 0.90, 0.90, 0.90]]], dtype=torch.float64)
    assert d[0].argmin(1).tolist() == [0, 0, 0, 0]
    best = standardise_columns(d)[0].argmin(1).tolist()
    assert best[:3] == [1, 2, 3] and best[3] != 0  # each layer's own tap; tap 0 is nobody's distinctly
    # and in general: a column's z-scores sum to zero over the rows, so none is strictly best in every row
    for seed in range(200):
        z = standardise_columns(torch.rand(1, 7, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        best = z[0].argmin(1)
        assert len(set(best.tolist())) >= 2


def test_standardised_search_spreads_tutors_where_eq1_collapses(env):
    """Arch-step tutor gradients alone, from equal logits: 60 Adam steps on one fixed batch."""
    chosen = {}
    for objective in ("paper", "standardised"):
        s = make(env, tutor_objective=objective)
        x, y = next(iter(s.loader.epoch(0)))
        targets = s.teacher_targets(x)
        opt = torch.optim.Adam([s.tutor.tutor_logits], 0.05)
        for step in range(60):
            total = s.objective(x, y, targets, noise=keyed_generator(x.device, step), part="arch")["total"]
            opt.zero_grad()
            (s.tutor.tutor_logits.grad,) = torch.autograd.grad(total, [s.tutor.tutor_logits])
            opt.step()
        chosen[objective] = tutor_diversity(s.tutor.tutors())
        s.close()
    assert chosen["standardised"]["tutors_distinct"] > chosen["paper"]["tutors_distinct"]
    assert chosen["standardised"]["tutors_largest_share"] < chosen["paper"]["tutors_largest_share"]


# ---- derivations --------------------------------------------------------------------------------------------

def brute_force(scores: np.ndarray, allowed) -> tuple[float, list[int]]:
    n_s, n_t = scores.shape
    best = (-math.inf, None)
    for tutors in itertools.product(range(n_t), repeat=n_s):
        if allowed(tutors):
            total = float(sum(scores[i, j] for i, j in enumerate(tutors)))
            best = max(best, (total, list(tutors)), key=lambda t: t[0])
    return best


def total(scores, tutors) -> float:
    return float(sum(scores[i, j] for i, j in enumerate(tutors)))


def test_balanced_and_monotone_derivations_on_a_hand_made_matrix():
    scores = np.array([[9.0, 1.0, 0.0],
                       [8.0, 7.0, 0.0],
                       [7.0, 0.0, 6.0],
                       [1.0, 9.0, 0.0],
                       [5.0, 0.0, 4.0]])
    assert derive_tutors(torch.tensor(scores), "argmax") == [0, 0, 0, 1, 0]
    # at most ceil(5/3) = 2 rows per column: rows 0 and 2 keep tap 0 (their losses elsewhere are largest)
    assert derive_balanced(scores) == [0, 1, 2, 1, 0] or total(scores, derive_balanced(scores)) == 9 + 7 + 6 + 9 + 5
    assert total(scores, derive_balanced(scores)) == 36.0
    # non-decreasing: 9 + 8 + 7 then tap 1 (9) then row 4 on tap 1 or 2 (0 / 4)
    assert derive_monotone(scores) == [0, 0, 0, 1, 2]


@pytest.mark.parametrize("seed", range(12))
def test_balanced_and_monotone_derivations_are_exact(seed):
    rng = np.random.default_rng(seed)
    n_s, n_t = int(rng.integers(2, 7)), int(rng.integers(2, 4))
    scores = rng.normal(size=(n_s, n_t))
    cap = math.ceil(n_s / n_t)
    balanced = derive_balanced(scores)
    assert max(np.bincount(balanced, minlength=n_t)) <= cap
    assert total(scores, balanced) == pytest.approx(
        brute_force(scores, lambda t: max(np.bincount(t, minlength=n_t)) <= cap)[0], abs=1e-12)
    monotone = derive_monotone(scores)
    assert all(a <= b for a, b in itertools.pairwise(monotone))
    assert total(scores, monotone) == pytest.approx(
        brute_force(scores, lambda t: all(a <= b for a, b in itertools.pairwise(t)))[0], abs=1e-12)


def test_diversity_measures():
    assert tutor_diversity([3, 3, 3, 1]) == {"tutors_distinct": 2, "tutors_largest_share": 0.75,
                                             "tutors_depth_rank_corr": round(spearman([0, 1, 2, 3], [3, 3, 3, 1]), 6)}
    assert spearman([0, 1, 2, 3], [0, 2, 5, 9]) == pytest.approx(1.0)
    assert spearman([0, 1, 2, 3], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([0, 1, 2], [5, 5, 5]) == 0.0
    uniform = torch.full((2, 4), 0.25)
    assert tutor_diversity([0, 1], uniform)["tutor_entropy"] == pytest.approx(math.log(4), abs=1e-6)
    assert tutor_diversity([0, 1], torch.eye(2))["tutor_entropy"] == pytest.approx(0.0, abs=1e-6)


# ---- the search logs it, derive writes it -----------------------------------------------------------------

def test_search_logs_diversity_and_derive_writes_each_derivation(env, tmp_path):
    s = make(env, tutor_objective="robust", epochs=1)
    run = run_job(s, tmp_path / "run")
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("tutors_distinct", "tutors_largest_share", "tutors_depth_rank_corr", "tutor_entropy",
                "arch/adv_ce", "arch/adv_acc"):
        assert key in record, key
    logits = torch.load(run / "checkpoint.pt", weights_only=True)["tutor"]["tutor_logits"]
    for how in TUTOR_DERIVATIONS:
        (path, arch), = write_archs(run, [None], tutor_derive=how)
        assert path.name == ("arch.json" if how == "balanced" else f"arch-{how}.json")
        written = json.loads(path.read_text())
        assert written["tutors"] == derive_tutors(logits, how)
        assert written["tutor_derive"] == how and written["tutor_objective"] == "robust"
        assert written["tutor_diversity"]["tutors_distinct"] == len(set(written["tutors"]))
    # another net's widths, these tutors
    other = json.loads((run / "arch.json").read_text())
    blocks = s.supernet.searched_blocks
    other["widths"] = [b.width_choices[-1] for b in blocks]
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, err = main_in_process("derive", run, "--widths-from", tmp_path / "other.json", "--tutor-derive", "monotone")
    assert code == 0, err
    written = json.loads((run / "arch-widths-monotone.json").read_text())
    assert written["widths"] == other["widths"] and written["tutors"] == derive_tutors(logits, "monotone")
    other["widths"][0] = 999
    (tmp_path / "bad.json").write_text(json.dumps(other))
    code, err = main_in_process("derive", run, "--widths-from", tmp_path / "bad.json")
    assert code == 2 and "block 0 width 999" in err and len(err.strip().splitlines()) == 1
    assert not (run / "arch-widths.json").exists()
RADIUS = 1e-5  # the central difference's weight move; in float64 it converges to the exact mixed derivative
