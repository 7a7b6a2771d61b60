"""`rnas report`'s paired statistics against scipy on fixed, hand-checkable numbers: the t-interval of the
differences over seeds, the verdict read off it, McNemar's exact test per seed and pooled over the seeds."""
import math

import pytest
from scipy import stats

from rnas.evaluation.eval_state import pack_hits
from rnas.evaluation.paired import mcnemar_p
from rnas.report.runs import Model
from rnas.report.stats import compare_pair, mcnemar, t_interval, verdict
from rnas.report.tables import model_table


def test_the_interval_over_seeds_is_the_t_interval_with_n_minus_one_degrees_of_freedom():
    found = t_interval([1.0, 2.0, 3.0])
    t = stats.t.ppf(0.975, 2)
    assert round(t, 6) == 4.302653  # the table value
    assert (found["mean"], found["sd"], found["seeds"]) == (2.0, 1.0, 3)
    assert found["interval"] == pytest.approx([2 - t / math.sqrt(3), 2 + t / math.sqrt(3)], abs=1e-12)
    assert found["interval"] == pytest.approx([-0.484138, 4.484138], abs=1e-6)
    assert verdict(found["interval"]) == "tie"
    assert verdict(t_interval([1.0, 1.5, 2.0])["interval"]) == "wins"  # 1.5 ± 1.242: [0.258, 2.742]
    assert verdict(t_interval([-1.0, -1.5, -2.0])["interval"]) == "loses"
    one = t_interval([4.0])
    assert one["interval"] is None and verdict(one["interval"]) == "tie"  # one seed: no interval, no claim


@pytest.mark.parametrize(("only_a", "only_b", "p"), [(7, 1, 0.0703125), (0, 0, 1.0), (5, 5, 1.0), (10, 0, 2 / 1024)])
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_images(only_a, only_b, p):
    assert mcnemar(only_a, only_b) == pytest.approx(p, rel=1e-12)
    assert mcnemar(only_a, only_b) == pytest.approx(mcnemar_p(only_a, only_b), rel=1e-12)  # rnas compare's


def _row(bits: str, split: str = "report") -> dict:
    return {"accuracy": 100.0 * bits.count("1") / len(bits), "n": len(bits), "split": split, "hits": pack_hits(bits)}


def test_a_pair_pools_the_discordant_images_of_its_seeds():
    # seed 0: A right on images 0-3, B on 3 and 4: only A 0-2, only B 4; seed 1: only A 0-3, only B none
    a = {0: _row("11110000"), 1: _row("11110000")}
    b = {0: _row("00011000"), 1: _row("00000000"), 2: _row("11111111")}  # seed 2: A never ran it
    found = compare_pair(a, b)
    assert found["seeds"] == [0, 1] and found["differences"] == [25.0, 50.0]
    assert found["mean"] == 37.5 and found["sd"] == round(25 / math.sqrt(2), 4)
    t = stats.t.ppf(0.975, 1)
    assert found["interval"] == pytest.approx([37.5 - t * 12.5, 37.5 + t * 12.5], abs=1e-3)
    assert found["verdict"] == "tie"  # two seeds 25 points apart: the interval spans zero
    pooled = found["mcnemar"]
    assert [(s["seed"], s["only_a"], s["only_b"]) for s in pooled["per_seed"]] == [(0, 3, 1), (1, 4, 0)]
    assert (pooled["only_a"], pooled["only_b"]) == (7, 1)
    assert pooled["p"] == pytest.approx(stats.binomtest(7, 8, 0.5).pvalue) == pytest.approx(0.0703125)
    assert (found["split"], found["n"]) == ("report", [8])
    mixed = compare_pair({0: _row("1100")}, {0: _row("1000", split="select")})
    assert mixed["mcnemar"] is None and mixed["split"] == "report, select"  # not the same images: no test


def _model(name: str, arm: str, seed: int, bits: str) -> Model:
    result = {"split": "report", "n": len(bits), "results": [{"attack": "clean", "eps": 0.0, **_row(bits)}]}
    return Model(name, arm, None, "S3", None, "t", evals={"pixel": result}, seed=seed, setting=("study", {}))


def test_the_report_table_holds_every_pair_of_arms_of_one_net():
    models = [_model("s3/rnas-cl", "rnas-cl", 0, "1111000011"), _model("s3/rnas-cl-s1", "rnas-cl", 1, "1111100011"),
              _model("s3/rnas-cl-s2", "rnas-cl", 2, "1111000011"), _model("s3/ce", "ce", 0, "1100000011"),
              _model("s3/ce-s1", "ce", 1, "1110000011"), _model("s3/ce-s2", "ce", 2, "1111000001"),
              _model("s7/ce", "ce", 0, "0000000000"), _model("s7/ce-s1", "ce", 1, "0000000000")]
    table = model_table(models)
    assert table["models"][0]["accuracy"]["clean"]["split"] == "report"
    ((pair),) = [p for p in table["paired"]]  # s7's ce has no other arm of its net to be paired with
    assert (pair["a"], pair["b"]) == ("s3/rnas-cl", "s3/ce")
    clean = pair["columns"]["clean"]
    assert clean["differences"] == [20.0, 20.0, 10.0] and clean["mean"] == pytest.approx(16.6667, abs=1e-4)
    low = 50 / 3 - stats.t.ppf(0.975, 2) * stats.tstd([20.0, 20.0, 10.0]) / math.sqrt(3)
    assert clean["interval"][0] == pytest.approx(low, abs=1e-4) and low > 0 and clean["verdict"] == "wins"
    # only A right: images 2, 3 (seed 0), 3, 4 (seed 1), 8 (seed 2); only B: none -> p = 2 / 2^5
    assert (clean["mcnemar"]["only_a"], clean["mcnemar"]["only_b"]) == (5, 0)
    assert clean["mcnemar"]["p"] == pytest.approx(stats.binomtest(5, 5, 0.5).pvalue) == pytest.approx(0.0625)
