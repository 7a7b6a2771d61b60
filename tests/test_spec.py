"""Spec loading and validation: every malformed spec is one line naming file, field and problem."""
import json
import subprocess
import sys

import pytest
import yaml

from search_spaces import SpecError, available_spaces, load_space, parse_space, spec_to_dict

GOOD = {
    "name": "mine", "input_size": 32, "num_classes": 10,
    "stem": {"type": "conv", "channels": 16, "stride": 1},
    "block": {"type": "mbconv", "expansion": 4},
    "stages": [{"depth": 2, "widths": [16, 12]}, {"depth": 2, "stride": 2, "widths": [32, 24]}],
}


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def mutated(change) -> str:
    data = json.loads(json.dumps(GOOD))
    change(data)
    return yaml.safe_dump(data)


def _set(path, value):
    def change(d):
        *parents, last = path
        for key in parents:
            d = d[key]
        d[last] = value
    return change


CASES = [
    # (id, yaml text or mutation, field named, problem fragment)
    ("unknown-key", mutated(_set(["colour"], "red")), "colour", "unknown key"),
    ("unknown-stage-key", mutated(_set(["stages", 0, "kernel"], 5)), "stages[0].kernel", "unknown key"),
    ("wrong-type-depth", mutated(_set(["stages", 1, "depth"], "three")), "stages[1].depth", "expected an integer"),
    ("wrong-type-widths", mutated(_set(["stages", 0, "widths"], "16,12")), "stages[0].widths", "expected a list"),
    ("empty-choices", mutated(_set(["stages", 1, "widths"], [])), "stages[1].widths", "empty width choices"),
    ("duplicate-width", mutated(_set(["stages", 1, "widths"], [32, 24, 32])), "stages[1].widths", "duplicate width 32"),
    ("zero-width", mutated(_set(["stages", 0, "widths"], [16, 0])), "stages[0].widths[1]", "must be >= 1"),
    ("negative-width", mutated(_set(["stages", 0, "widths"], [-4, 16])), "stages[0].widths[0]", "must be >= 1"),
    ("unknown-block", mutated(_set(["block", "type"], "transformer")), "block.type", "unknown value 'transformer'"),
    ("depth-choices-mismatch", mutated(_set(["stages", 1, "widths"], [[32, 24], [32, 28], [32]])),
     "stages[1].widths", "3 per-block width lists for depth 2"),
    ("bad-yaml", "name: x\nstages: [1, 2\n", "line 3", "bad YAML"),
    ("missing-key", mutated(lambda d: d.pop("stem")), "stem", "missing required key"),
    ("even-kernel", mutated(_set(["block", "kernel"], 4)), "block.kernel", "kernel size must be odd"),
    ("bad-stride", mutated(_set(["stages", 1, "stride"], 3)), "stages[1].stride", "must be 1 or 2"),
    ("param-of-other-block", mutated(_set(["block"], {"type": "basic", "expansion": 6})), "block.expansion",
     "not a parameter of block type 'basic'"),
    ("mean-length", mutated(lambda d: d.update(mean=[0.5, 0.5], std=[0.2, 0.2, 0.2])), "mean", "list of 3 numbers"),
    ("mean-without-std", mutated(lambda d: d.update(mean=[0.5, 0.5, 0.5])), "std", "given together"),
    ("robust-res-groups", mutated(lambda d: (d.update(block={"type": "robust_res", "scales": 4}),
                                             d["stages"][0].update(widths=[16, 10]))), "stages[0].widths",
     "divisible by scales=4"),
    ("bool-is-not-int", mutated(_set(["num_classes"], True)), "num_classes", "expected an integer"),
    ("not-a-mapping", "- just\n- a list\n", "expected a mapping", "got list"),
    ("too-small-input", mutated(_set(["input_size"], 1)), "input_size", "smaller than the network's total stride"),
    ("unknown-stem", mutated(_set(["stem", "type"], "patch")), "stem.type", "unknown value 'patch'"),
    ("duplicate-key", mutated(lambda d: None) + "num_classes: 100\n", "line", "duplicate key 'num_classes'"),
    ("duplicate-nested-key", "stem: {type: conv, type: convstem}\n", "line 1", "duplicate key 'type'"),
    ("too-deep", mutated(_set(["stages", 0, "depth"], 65)), "stages[0].depth", "must be <= 64, got 65"),
    ("too-wide", mutated(_set(["stages", 1, "widths"], [32, 10000])), "stages[1].widths[1]", "must be <= 8192"),
    ("too-wide-stem", mutated(_set(["stem", "channels"], 8193)), "stem.channels", "must be <= 8192"),
    ("gray-input", mutated(_set(["in_channels"], 1)), "in_channels", "must be 3"),
    ("nul-byte", "name: x\x00\n", "", "unacceptable character"),
]


@pytest.mark.parametrize("text,field,problem", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_spec_is_rejected_naming_file_and_field(tmp_path, text, field, problem):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert field in message and problem in message


def test_binary_spec_is_one_line(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(SpecError, match=r"not a text file \(byte 0x89 at offset 0 is not UTF-8\)") as info:
        load_space(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")


def test_good_user_spec_loads_and_round_trips(tmp_path):
    spec = load_space(write(tmp_path, yaml.safe_dump(GOOD)))
    assert spec.depths == (2, 2) and spec.stages[0].widths == ((16, 12), (16, 12))
    assert spec.stages[0].block.expansion == 4 and spec.stages[0].block.kernel == 3
    again = parse_space(spec_to_dict(spec), "again")
    assert spec_to_dict(again) == spec_to_dict(spec)


def test_widths_are_sorted_descending(tmp_path):
    spec = load_space(write(tmp_path, mutated(_set(["stages", 1, "widths"], [24, 32, 28]))))
    assert spec.stages[1].widths[0] == (32, 28, 24)


@pytest.mark.parametrize("name", available_spaces())
def test_builtin_spaces_match_the_paper_tables(name):
    spec = load_space(name.upper())
    table = {"s3": (3, 3, 3), "s5": (5, 5, 5), "s7": (7, 7, 7), "m": (9, 7, 1), "l": (9, 7, 1),
             "is": (3, 3, 3), "im": (3, 3, 3, 4), "i": (3, 3, 3, 4, 4)}
    assert spec.depths == table[name]
    firsts = {"s3": 16, "m": 80, "l": 160, "is": 28}
    if name in firsts:
        assert spec.stages[0].widths[0][0] == firsts[name]
    if name == "i":
        assert spec.stages[3].widths[0] == (128, 120, 108, 100, 92, 84, 76, 68)
        assert len(spec.stages[4].widths[0]) == 14


def test_unknown_space_name():
    with pytest.raises(SpecError, match="unknown search space"):
        load_space("S9")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rnas", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_spaces_table_and_json():
    result = run_cli("spaces", "s3", "--json")
    assert result.returncode == 0
    (row,) = json.loads(result.stdout)
    assert row["space"] == "S3" and row["depth"] == "3-3-3"
    assert row["min"]["params"] <= row["paper"]["params"] <= row["max"]["params"]
    assert row["min"]["macs"] <= row["paper"]["macs"] <= row["max"]["macs"]
    table = run_cli("spaces", "s3", "m")
    assert table.returncode == 0 and "S3" in table.stdout and "+2.8% above" in table.stdout


@pytest.mark.slow
def test_cli_bad_spec_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, mutated(_set(["stages", 1, "widths"], [32, 32])))
    result = run_cli("spaces", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"rnas: error: {path}: stages[1].widths: duplicate width 32")
    bad_flag = run_cli("spaces", "--colour")
    assert bad_flag.returncode == 2 and bad_flag.stderr.strip().count("\n") == 0
