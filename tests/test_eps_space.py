"""`rnas eval --eps-space normalized`: the official RNAS-CL protocol (eps on the normalised input, i.e. a
per-channel pixel budget eps·std) next to the standard pixel threat model, on a tiny model trained here."""
import dataclasses
import json

import pytest
import torch
from helpers import TINY_SPACE, main_in_process, trained_checkpoint, write_cifar10, write_teacher
from torch import nn

from rnas.errors import UserError
from rnas.evaluation.evaluate import EvalConfig, evaluate, input_std, normalized_warning, run_eval
from rnas.robust.attacks import autoattack, run_attack
from rnas.runtime.distributed import Dist
from rnas.teachers import CIFAR10_MEAN, CIFAR10_STD
from supernets import Normalize

LINF = ["fgsm", "pgd5", "mifgsm", "cw"]


def cifar_std_model() -> nn.Module:
    """A small CNN behind CIFAR-10 normalisation (three different stds)."""
    torch.manual_seed(0)
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An rnas retrain-format checkpoint of the tiny space with std 0.5 in every channel, trained until it
    classifies the generated CIFAR well, evaluated on its last 60 training images (val)."""
    root = tmp_path_factory.mktemp("eps_space")
    write_cifar10(root / "data")
    arch = {"spec": {**TINY_SPACE, "std": [0.5, 0.5, 0.5]}, "widths": [8, 16, 16], "num_classes": 10}
    return trained_checkpoint(root, arch, images=240, steps=40)


def eval_json(checkpoint, out, *extra) -> tuple[dict, str]:
    code, err = main_in_process("eval", checkpoint, "--attacks", "clean," + ",".join(LINF), "--cw-steps", 5,
                                "--batch-size", 25, "--json", out, *extra)
    assert code == 0, err
    return json.loads(out.read_text()), err


@pytest.mark.parametrize("name", LINF)
def test_linf_attacks_keep_and_reach_the_per_channel_budget(name):
    """|x_adv - x| <= eps·std_c per channel, x_adv in [0, 1]; the box is reached in every channel."""
    model = cifar_std_model()
    std = input_std(model)
    assert std.shape == (1, 3, 1, 1) and std.flatten().tolist() == pytest.approx(CIFAR10_STD)
    budget = 8 / 255 * std
    torch.manual_seed(1)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    x[0], x[1] = 0.0, 1.0  # corners of the [0, 1] box
    x_adv = run_attack(name, model, x, y, budget, cw_steps=5)
    reach = (x_adv - x).abs().amax((0, 2, 3))
    assert (reach <= budget.flatten() + 1e-7).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    interior = (x[2:] - x_adv[2:]).abs().amax((0, 2, 3))
    assert torch.allclose(interior, budget.flatten(), atol=1e-6)  # 2.0, 1.9, 2.1 (/255): not one scalar
    if name == "fgsm":  # one full step: |delta| = eps·std_c wherever the box does not cut it
        inside = (x[2:] > budget) & (x[2:] < 1 - budget)
        delta = (x_adv[2:] - x[2:]).abs()
        assert torch.allclose(delta[inside], budget.expand_as(delta)[inside], atol=1e-7)


@pytest.mark.parametrize("name", ["fgsm", "pgd5", "mifgsm", "cw"])
def test_tensor_budget_equal_in_every_channel_is_the_float_budget(name):
    """A per-channel tensor holding one value gives the float budget's x_adv (the pixel path is the same code)."""
    model = cifar_std_model()
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,))
    eps = 4 / 255
    a = run_attack(name, model, x, y, eps, cw_steps=5, seed=3)
    b = run_attack(name, model, x, y, torch.full((1, 3, 1, 1), eps), cw_steps=5, seed=3)
    assert torch.allclose(a, b, rtol=0, atol=1e-7)


def test_normalized_eval_equals_pixel_eval_at_eps_times_std(checkpoint, tmp_path, capsys):
    """std = 0.5 in every channel: normalized 32/255, 64/255 == pixel 16/255, 32/255 row for row (same seed),
    and differs from pixel 32/255; JSON fields, table marker and the warning line. (The generated classes are
    25/255 apart in colour, hence budgets this large.)"""
    pixel, pixel_err = eval_json(checkpoint, tmp_path / "p.json", "--eps-sweep", "16/255", "32/255")
    capsys.readouterr()
    normal, err = eval_json(checkpoint, tmp_path / "n.json", "--eps-sweep", "32/255", "64/255",
                            "--eps-space", "normalized")
    table = capsys.readouterr().out
    assert pixel_err == "" and err.splitlines() == [
        "rnas: warning: --eps-space normalized is the official RNAS-CL protocol, not the standard threat model: "
        "eps 32/255, 64/255 on normalised inputs are pixel budgets of (16.0/255, 16.0/255, 16.0/255) and "
        "(32.0/255, 32.0/255, 32.0/255) per channel (table rows marked 'n')"]
    assert (pixel["eps_space"], normal["eps_space"]) == ("pixel", "normalized")
    assert list(pixel) == ["checkpoint", "params", "macs", "data", "split", "split_source", "val_size", "n", "seed",
                           "eps_space", "device", "tf32", "results"]
    assert all("pixel_eps" not in r for r in pixel["results"])
    by_pixel = {(r["attack"], round(r["eps"] * 255)): r for r in pixel["results"]}
    by_normal = {(r["attack"], round(r["eps"] * 255)): r for r in normal["results"]}
    assert by_pixel[("clean", 0)]["accuracy"] == by_normal[("clean", 0)]["accuracy"] >= 80
    assert "pixel_eps" not in by_normal[("clean", 0)] and by_normal[("clean", 0)]["n"] == 60
    for name in LINF:
        for nominal, pixel_eps in ((32, 16), (64, 32)):
            n_row, p_row = by_normal[(name, nominal)], by_pixel[(name, pixel_eps)]
            assert n_row["eps"] == nominal / 255 and n_row["pixel_eps"] == pytest.approx([pixel_eps / 255] * 3)
            assert {**n_row, "eps": 0, "pixel_eps": 0, "seconds": 0} == {**p_row, "eps": 0, "pixel_eps": 0,
                                                                         "seconds": 0}
    assert by_pixel[("pgd5", 32)]["accuracy"] < by_pixel[("pgd5", 16)]["accuracy"] < by_pixel[("clean", 0)]["accuracy"]
    assert by_pixel[("pgd5", 32)]["accuracy"] < by_normal[("pgd5", 32)]["accuracy"]  # the scaling matters
    rows = [line.split() for line in table.splitlines()[2:]]
    assert rows[0][:2] == ["clean", "-"] and len(rows) == 1 + 2 * len(LINF)
    assert [r[1:3] for r in rows[1:]] == [["32/255", "n"], ["64/255", "n"]] * len(LINF)


def test_sharded_outcomes_add_up_to_the_single_process_outcomes(checkpoint):
    """Rank r of W attacks batches r, r + W, ... in normalized mode too: each rank's per-image outcomes are the
    single run's on its own batches (zero elsewhere), so their sum over the ranks is one run's."""
    from rnas.evaluation.eval_state import unpack_hits
    from rnas.evaluation.evaluate import eval_batches, load_model

    model = load_model(checkpoint)
    data_dir = str(checkpoint.parent / "data")
    batches, n, _ = eval_batches("cifar10", data_dir, "val", 60, None, 25, "cpu")
    scale = input_std(model)

    class Rank(Dist):
        def sum(self, t):  # no collective: each "rank" reports its own counts
            return t

        def max(self, t):
            return t

    def right(dist):  # which images the rank reports right: its own batches' outcomes, 0 for the others'
        rows = evaluate(model, batches, ["pgd5"], [32 / 255], eps_scale=scale, dist=dist)
        return unpack_hits(rows[0]["hits"], rows[0]["n"])

    single = right(Rank())
    ranks = [right(Rank(rank=r, world=2)) for r in range(2)]
    mine = torch.zeros(2, n, dtype=torch.bool)
    mine[0, :25], mine[1, 25:50], mine[0, 50:] = True, True, True  # batches 0, 2 | 1
    assert n == 60 and 0 < single.sum() < n
    for rank, flags in enumerate(ranks):
        assert torch.equal(flags, single & mine[rank])  # the sum over ranks is then the single run's


def test_warning_numbers_for_cifar10_std():
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert normalized_warning([8 / 255], std).endswith(
        "eps 8/255 on normalised inputs is a pixel budget of 2.0/255, 1.9/255, 2.1/255 per channel "
        "(table rows marked 'n')")


@pytest.mark.parametrize("attack", ["autoattack", "autoattack-l2", "autoattack-l1"])
def test_autoattack_is_refused_in_normalized_space(checkpoint, tmp_path, attack):
    out = tmp_path / "e.json"
    code, err = main_in_process("eval", checkpoint, "--attacks", f"clean,{attack}", "--eps-space", "normalized",
                                "--json", out)
    assert code == 2 and not out.exists()
    assert err.splitlines() == [f"rnas: error: --attacks {attack}: not offered with --eps-space normalized "
                                "(pyautoattack takes one scalar pixel budget, not a per-channel one); drop it or "
                                "use --eps-space pixel"]
    with pytest.raises(UserError, match="scalar budget"):  # and the attack itself refuses a tensor budget
        autoattack(cifar_std_model(), torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long),
                   torch.full((1, 3, 1, 1), 8 / 255))


def test_bad_eps_space_and_model_without_normalisation(checkpoint, tmp_path):
    code, err = main_in_process("eval", checkpoint, "--eps-space", "foo")
    assert code == 2 and len(err.splitlines()) == 1
    assert "--eps-space: invalid choice: 'foo'" in err
    with pytest.raises(UserError, match=r"^--eps-space foo: must be one of pixel, normalized$"):
        run_eval(dataclasses.replace(EvalConfig(checkpoint=str(checkpoint)), eps_space="foo"))
    teacher, out = write_teacher(tmp_path / "models"), tmp_path / "e.json"  # RobustBench file: no mu/sigma
    code, err = main_in_process("eval", teacher, "--teacher-arch", "wrn-10-1", "--data-dir",
                                checkpoint.parent / "data", "--val-size", 20, "--attacks", "clean,fgsm",
                                "--eps-space", "normalized", "--json", out)
    assert code == 2 and not out.exists()
    assert err.splitlines() == [f"rnas: error: --eps-space normalized: {teacher} has no input normalisation (no "
                                "mean/std inside the model), so normalised and pixel units are the same; use "
                                "--eps-space pixel"]
