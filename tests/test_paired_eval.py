"""Per-image results and `rnas compare`: every `rnas eval --json` row records which images it got right (its
``hits``), resumed and split over ranks alike, and `rnas compare A.json B.json` compares two evaluations of the
same images image by image (paired 95 % interval, McNemar's exact test)."""
import json

import pytest
import torch
from helpers import TINY_SPACE, main_in_process, trained_checkpoint, write_cifar10

from rnas.evaluation.eval_state import digest, pack_hits, unpack_hits
from rnas.evaluation.evaluate import eval_batches, load_model
from rnas.evaluation.paired import mcnemar_p, paired_interval
from rnas.robust.attacks import run_attack


def test_hits_pack_four_images_a_hex_digit_first_image_highest():
    assert pack_hits("01101") == "68"  # 0110 -> 6, 1(000) -> 8
    assert unpack_hits("68", 5).tolist() == [False, True, True, False, True]
    bits = "".join("1" if b else "0" for b in torch.rand(1003, generator=torch.Generator().manual_seed(0)) > 0.6)
    assert "".join("1" if b else "0" for b in unpack_hits(pack_hits(bits), 1003).tolist()) == bits
    assert pack_hits("") == "" and unpack_hits("", 0).tolist() == []
    for text, n in (("69", 5), ("6", 5), ("680", 5), (" 68", 9), ("0x6", 9), ("-6", 5), ("6_8", 9), ("6A", 5)):
        # a padding bit set; too few digits; too many; what int(text, 16) would take but pack_hits never writes
        with pytest.raises(ValueError):
            unpack_hits(text, n)


def test_mcnemar_exact_p_and_paired_interval_by_hand():
    assert mcnemar_p(8, 1) == pytest.approx(2 * (1 + 9) / 2 ** 9)  # 0.0390625
    assert mcnemar_p(1, 8) == mcnemar_p(8, 1)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 12) == pytest.approx(2 / 2 ** 12)
    # 30 images only A got right, 10 only B, of 1,000: +2 points, s^2 = (40 - 1000 * 0.02^2) / 999
    low, high = paired_interval(30, 10, 1000)
    half = 100 * 1.96 * (39.6 / 999 / 1000) ** 0.5
    assert (low, high) == pytest.approx((2 - half, 2 + half)) and half == pytest.approx(1.234, abs=1e-3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    write_cifar10(root / "data")
    return trained_checkpoint(root, {"spec": TINY_SPACE, "widths": [8, 16, 16], "num_classes": 10}, images=200,
                              steps=20)


def eval_args(checkpoint, out, attacks="clean,fgsm", *extra):
    return ["eval", checkpoint, "--attacks", attacks, "--eps", "48/255", "--n", 40, "--batch-size", 10, "--split",
            "val", "--json", out, *extra]


def test_hits_are_the_images_the_model_gets_right(checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    code, err = main_in_process(*eval_args(checkpoint, out))
    assert code == 0, err
    result = json.loads(out.read_text())
    rows = result["results"]
    assert (result["device"], result["tf32"]) == ("cpu", None)  # where it ran; TF32 applies to CUDA only
    model = load_model(checkpoint)
    batches, n, _ = eval_batches("cifar10", str(checkpoint.parent / "data"), "val", 60, 40, 10, "cpu")
    with torch.no_grad():
        clean = torch.cat([model(x).argmax(1) == y for x, y in batches()])
    fgsm = torch.cat([model(run_attack("fgsm", model, x, y, 48 / 255)).detach().argmax(1) == y for x, y in batches()])
    assert 0 < clean.sum() < n and fgsm.sum() < clean.sum()  # a case where the flags matter
    for row, expected in zip(rows, (clean, fgsm), strict=True):
        assert torch.equal(unpack_hits(row["hits"], n), expected)
        assert row["accuracy"] == round(100.0 * int(expected.sum()) / n, 2)


def test_a_row_resumed_from_progress_without_hits_leaves_them_out(checkpoint, tmp_path, monkeypatch):
    """Progress recorded before rnas kept per-image results: the resumed row's accuracy is still whole and right,
    and it claims no hits it does not know."""
    import rnas.evaluation.evaluate as evaluate

    reference = tmp_path / "reference.json"
    assert main_in_process(*eval_args(checkpoint, reference, "clean"))[0] == 0
    out, calls = tmp_path / "old.json", []

    def stop_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return run_attack(*args, **kwargs)
    monkeypatch.setattr(evaluate, "run_attack", stop_after_two)
    assert main_in_process(*eval_args(checkpoint, out, "clean"))[0] == 130
    monkeypatch.undo()
    state_file = out.with_name(out.name + ".state.json")
    state = json.loads(state_file.read_text())
    assert len(state["current"].pop("outcomes")) == 20  # as an older rnas wrote it
    body = {k: state[k] for k in ("request", "rows", "current")}
    state_file.write_text(json.dumps({**state, "digest": digest(body)}))
    code, err = main_in_process(*eval_args(checkpoint, out, "clean", "--resume"))
    assert code == 0, err
    row, expected = json.loads(out.read_text())["results"][0], json.loads(reference.read_text())["results"][0]
    assert "hits" not in row and "hits" in expected
    assert (row["accuracy"], row["n"]) == (expected["accuracy"], expected["n"])


def eval_json(path, n=8, rows=(("clean", 0.0, "11110000"), ("pgd20", 8 / 255, "11000000")), **fields):
    """An rnas eval --json result of n images, each row's hits given as 0/1 characters (None: no hits)."""
    results = []
    for attack, eps, bits in rows:
        accuracy = round(100 * bits.count("1") / n, 2) if bits and n else 50.0
        row = {"attack": attack, "eps": eps, "accuracy": accuracy, "n": n}
        results.append({**row, **({"hits": pack_hits(bits)} if bits else {})})
    path.write_text(json.dumps({"checkpoint": "x.pt", "data": "cifar10", "split": "val", "val_size": 5000, "n": n,
                                "eps_space": "pixel", **fields, "results": results}))
    return path


def test_compare_counts_the_images_only_one_gets_right(tmp_path, capsys):
    a = eval_json(tmp_path / "a.json", rows=(("clean", 0.0, "11110000"), ("pgd20", 8 / 255, "11000000"),
                                             ("fgsm", 8 / 255, "11100000")))
    b = eval_json(tmp_path / "b.json", rows=(("pgd20", 8 / 255, "01111111"), ("clean", 0.0, "11111111"),
                                             ("fgsm", 4 / 255, "11100000")))  # fgsm at another eps: not compared
    code, err = main_in_process("compare", a, b, "--json", tmp_path / "cmp.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp.json").read_text())["rows"]
    assert [(r["attack"], r["only_a"], r["only_b"], r["difference"]) for r in rows] == \
        [("clean", 0, 4, -50.0), ("pgd20", 1, 6, -62.5)]
    assert rows[0]["p"] == pytest.approx(2 / 2 ** 4) and rows[1]["p"] == pytest.approx(2 * (1 + 7) / 2 ** 7)
    low, high = paired_interval(1, 6, 8)
    assert rows[1]["interval"] == [round(low, 2), round(high, 2)]
    printed = capsys.readouterr().out
    assert "on the same 8 images" in printed and "fgsm" not in printed


def test_compare_without_hits_gives_the_unpaired_numbers_and_says_why(tmp_path, capsys):
    a = eval_json(tmp_path / "a.json", rows=(("clean", 0.0, None), ("pgd20", 8 / 255, "11000000")))
    b = eval_json(tmp_path / "b.json")
    code, err = main_in_process("compare", a, b)
    assert code == 0, err
    lines = capsys.readouterr().out.splitlines()
    clean = next(line for line in lines if line.startswith("clean"))
    assert clean.split()[2:] == ["50.00", "50.00", "+0.00", "-", "-", "-", "-"]
    assert "evaluate it again" in lines[-1]


@pytest.mark.parametrize("b_fields,clean_hits,message", [
    ({"split": "test", "val_size": None}, None, "different images (split 'val' in A, 'test' in B)"),
    ({"val_size": 4000}, None, "different images (val_size 5000 in A, 4000 in B)"),
    ({"val_size": None, "split_source": "validation split: last 4000 training images (--split val)"}, None,
     "different images (val_size 5000 in A, 4000 in B)"),  # a file from before val_size was recorded
    ({"eps_space": "normalized"}, None, "measured eps differently (--eps-space pixel in A, normalized in B)"),
    ({"n": 0}, None, "n 0: no images evaluated"),
    ({}, "f", "hits: not 8 images' worth"),
    ({}, pack_hits("11000000"), "its hits give 25.00 %, its accuracy says 50.0"),
], ids=["other-split", "other-val-size", "other-val-size-old-file", "other-eps-space", "no-images", "short-hits",
       "hits-against-accuracy"])
def test_bad_comparisons_are_one_line(tmp_path, b_fields, clean_hits, message):
    a = eval_json(tmp_path / "a.json")
    b = eval_json(tmp_path / "b.json", **b_fields)
    if clean_hits:
        data = json.loads(b.read_text())
        data["results"][0]["hits"] = clean_hits
        b.write_text(json.dumps(data))
    code, err = main_in_process("compare", a, b)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_compare_keeps_files_it_did_not_write(tmp_path):
    a, b = eval_json(tmp_path / "a.json"), eval_json(tmp_path / "b.json")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    for out, message in ((notes, "not an earlier rnas compare result"), (a, "is one of the files compared"),
                         (tmp_path / "no" / "c.json", "does not exist"), (tmp_path, "is a directory")):
        code, err = main_in_process("compare", a, b, "--json", out)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert notes.read_text() == '{"mine": 1}' and json.loads(a.read_text())["n"] == 8
    assert main_in_process("compare", a, tmp_path / "missing.json")[0] == 2


def test_compare_into_a_read_only_directory_is_one_line(tmp_path, read_only):
    a, b = eval_json(tmp_path / "a.json"), eval_json(tmp_path / "b.json")
    (tmp_path / "shelf").mkdir()
    shelf = read_only(tmp_path / "shelf")
    code, err = main_in_process("compare", a, b, "--json", shelf / "c.json")
    assert code == 2 and err.strip() == f"rnas: error: --json {shelf / 'c.json'}: directory {shelf} is not writable"
    assert list(shelf.iterdir()) == []


def test_compare_tells_validation_splits_of_other_sizes_apart(checkpoint, tmp_path):
    """The same --n of two val splits of different --val-size are different images: refused, not paired."""
    for size in (60, 100):
        code, err = main_in_process(*eval_args(checkpoint, tmp_path / f"v{size}.json", "clean", "--val-size", size))
        assert code == 0, err
        assert json.loads((tmp_path / f"v{size}.json").read_text())["val_size"] == size
    code, err = main_in_process("compare", tmp_path / "v60.json", tmp_path / "v100.json")
    assert code == 2 and "different images (val_size 60 in A, 100 in B)" in err, err


def test_compare_labels_rows_as_rnas_eval_does(tmp_path, capsys):
    rows = (("clean", 0.0, "11110000"), ("cw", 8 / 255, "11000000"), ("fgsm", 0.01, "10000000"))
    a, b = eval_json(tmp_path / "a.json", rows=rows), eval_json(tmp_path / "b.json", rows=rows)
    for path in (a, b):
        data = json.loads(path.read_text())
        data["results"][1]["steps"] = 40
        path.write_text(json.dumps(data))
    assert main_in_process("compare", a, b, "--json", tmp_path / "c.json")[0] == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in table[4:]] == [["clean", "-"], ["cw40", "8/255"], ["fgsm", "0.01"]]
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["eps_space"] == "pixel" and saved["rows"][1]["steps"] == 40


def test_rows_of_other_steps_are_not_paired(tmp_path, capsys):
    a, b = eval_json(tmp_path / "a.json"), eval_json(tmp_path / "b.json")
    data = json.loads(b.read_text())
    data["results"][1]["steps"] = 40  # pgd20 rows of another step count: another attack
    b.write_text(json.dumps(data))
    assert main_in_process("compare", a, b)[0] == 0
    assert "pgd20" not in capsys.readouterr().out
