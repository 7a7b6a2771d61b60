"""Bad flags, config files, specs and arch files: one stderr line, exit 2, nothing written."""
import json

import pytest
import yaml
from helpers import TINY_SPACE, main_in_process, write_tiny_setup

from rnas.cli import main
from search_spaces import parse_space
from supernets import Network, derive


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = write_tiny_setup(tmp_path_factory.mktemp("bad_flags"))
    arch = derive(Network(parse_space(TINY_SPACE, "tiny"), 10))
    (root / "arch.json").write_text(json.dumps(arch))
    (root / "list.json").write_text("[1, 2]\n")
    (root / "ten.json").write_text(json.dumps({**arch, "num_classes": "ten"}))
    (root / "nowidths.json").write_text(json.dumps({k: v for k, v in arch.items() if k != "widths"}))
    (root / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    (root / "dup.yaml").write_text("epochs: 1\nlr: 0.1\nepochs: 2\n")
    (root / "float_epochs.yaml").write_text("epochs: 1.9\n")
    (root / "bool_epochs.yaml").write_text("epochs: true\n")
    space = yaml.safe_dump(TINY_SPACE)
    (root / "dup_space.yaml").write_text(space + "name: again\n")
    for name, change in (("deep", {"depth": 65}), ("wide", {"widths": [9000, 8]})):
        data = json.loads(json.dumps(TINY_SPACE))
        data["stages"][0].update(change)
        (root / f"{name}.yaml").write_text(yaml.safe_dump(data))
    (root / "gray.yaml").write_text(yaml.safe_dump({**TINY_SPACE, "in_channels": 1}))
    return root


def search(root, *extra):
    return ["search", "--space", root / "tiny.yaml", "--teacher", "wrn-10-1", "--teacher-ckpt", "tiny",
            "--model-dir", root / "models", "--data-dir", root / "data", "--val-size", 50, "--batch-size", 25,
            "--epochs", 1, *extra]


def retrain(root, *extra, arch="arch.json"):
    return ["retrain", root / arch, "--random-teacher", "--data-dir", root / "data", "--val-size", 50,
            "--epochs", 1, *extra]


def teacher(root, *extra):
    return ["teacher", "train", "--arch", "wrn-10-1", "--data-dir", root / "data", "--val-size", 50, *extra]


def evaluate(root, *extra):
    return ["eval", root / "absent.pt", "--data-dir", root / "data", *extra]


CASES = [  # (id, command builder, extra args, expected message fragment)
    ("search-epochs-0", search, ("--epochs", 0), "--epochs 0: must be >= 1"),
    ("search-lr-negative", search, ("--lr", -0.1), "--lr -0.1: must be > 0"),
    ("search-lr-nan", search, ("--lr", "nan"), "--lr nan: must be > 0"),
    ("search-weight-decay", search, ("--weight-decay", -1), "--weight-decay -1: must be >= 0"),
    ("search-map-size-0", search, ("--map-size", 0), "--map-size 0: must be >= 1"),
    ("search-batch-0", search, ("--batch-size", 0), "--batch-size 0: must be >= 2"),
    ("search-batch-negative", search, ("--batch-size", -5), "--batch-size -5: must be >= 2"),
    ("search-batch-over-limit", search, ("--batch-size", 5000, "--limit", 100),
     "--batch-size 5000 is larger than the training set (--limit 100 images)"),
    ("search-tau-0", search, ("--tau", 0), "--tau 0: must be > 0"),
    ("search-tutor-tau", search, ("--tutor-tau", -1), "--tutor-tau -1: must be > 0"),
    ("search-tau-decay", search, ("--tau-decay", -0.1), "--tau-decay -0.1: must be >= 0"),
    ("search-arch-lr", search, ("--arch-lr", 0), "--arch-lr 0: must be > 0"),
    ("search-arch-split", search, ("--arch-split", 1), "--arch-split 1: must be in (0, 1)"),
    ("search-momentum", search, ("--momentum", 1), "--momentum 1: must be in [0, 1)"),
    ("search-gamma-s", search, ("--gamma-s", -1), "--gamma-s -1: must be >= 0"),
    ("search-mac-exponent", search, ("--mac-exponent", -0.5), "--mac-exponent -0.5: must be >= 0"),
    ("search-val-size", search, ("--val-size", -1), "--val-size -1: must be >= 0"),
    ("search-limit-0", search, ("--limit", 0), "--limit 0: must be >= 1"),
    ("search-seed", search, ("--seed", -1), "--seed -1: must be >= 0"),
    ("search-checkpoint-every", search, ("--checkpoint-every", -1), "--checkpoint-every -1: must be >= 0"),
    ("search-workers", search, ("--workers", -1), "--workers -1: must be >= 0"),
    ("search-milestone", search, ("--milestones", 10, -5), "--milestones -5: must be >= 0"),
    ("config-float-int", search, ("--config", "{root}/float_epochs.yaml"), "epochs: expected int, got 1.9"),
    ("config-bool-int", search, ("--config", "{root}/bool_epochs.yaml"), "epochs: expected int, got True"),
    ("config-duplicate-key", search, ("--config", "{root}/dup.yaml"), "line 3, column 1: duplicate key 'epochs'"),
    ("config-binary", search, ("--config", "{root}/binary.yaml"), "binary.yaml: not a text file"),
    ("space-binary", search, ("--space", "{root}/binary.yaml"), "binary.yaml: not a text file"),
    ("space-duplicate-key", search, ("--space", "{root}/dup_space.yaml"), "duplicate key 'name'"),
    ("space-depth", search, ("--space", "{root}/deep.yaml"), "stages[0].depth: must be <= 64, got 65"),
    ("space-width", search, ("--space", "{root}/wide.yaml"), "stages[0].widths[0]: must be <= 8192, got 9000"),
    ("space-in-channels", search, ("--space", "{root}/gray.yaml"), "in_channels: must be 3"),
    ("retrain-epochs-0", retrain, ("--epochs", 0), "--epochs 0: must be >= 1"),
    ("retrain-batch-0", retrain, ("--batch-size", 0), "--batch-size 0: must be >= 1"),
    ("retrain-batch-negative", retrain, ("--batch-size", -5), "--batch-size -5: must be >= 1"),
    ("retrain-batch-over-limit", retrain, ("--batch-size", 5000, "--limit", 100),
     "--batch-size 5000 is larger than the training set (--limit 100 images)"),
    ("retrain-lr-0", retrain, ("--lr", 0), "--lr 0: must be > 0"),
    ("retrain-trades-steps", retrain, ("--steps", 0), "--steps 0: must be >= 1"),
    ("retrain-trades-beta", retrain, ("--beta", -1), "--beta -1: must be >= 0"),
    ("retrain-trades-eps", retrain, ("--eps=-8/255",), "--eps -0.0313725: must be > 0"),
    ("arch-list", retrain, ("{root}/list.json",), "list.json: expected a JSON object"),
    ("arch-num-classes", retrain, ("{root}/ten.json",), "ten.json: num_classes: expected int, got 'ten'"),
    ("arch-missing-widths", retrain, ("{root}/nowidths.json",), "nowidths.json: widths: missing required key"),
    ("teacher-epochs-0", teacher, ("--epochs", 0), "--epochs 0: must be >= 1"),
    ("teacher-eval-n", teacher, ("--eval-n", 0), "--n 0: must be >= 1"),
    ("eval-n-0", evaluate, ("--n", 0), "--n 0: must be >= 1"),
    ("eval-n-negative", evaluate, ("--n", -5), "--n -5: must be >= 1"),
    ("eval-batch-0", evaluate, ("--batch-size", 0), "--batch-size 0: must be >= 1"),
    ("eval-eps-negative", evaluate, ("--eps=-8/255",), "--eps -0.0313725: must be >= 0"),
    ("eval-eps-0-attacks", evaluate, ("--eps", 0), "--eps 0: attacks need a budget > 0"),
    ("eval-attacks-empty", evaluate, ("--attacks", ""), "--attacks '': empty list"),
    ("eval-attacks-typo", evaluate, ("--attacks", "clean,pgdx"), "unknown attack 'pgdx'"),
    ("eval-cw-steps", evaluate, ("--cw-steps", 0), "--cw-steps 0: must be >= 1"),
    ("eval-json-missing-dir", evaluate, ("--json", "{root}/nowhere/result.json"), "nowhere does not exist"),
]


@pytest.mark.parametrize("command,extra,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_invocation_is_one_line_exit_2_and_writes_nothing(root, tmp_path, command, extra, message):
    extra = [str(e).format(root=root) for e in extra]
    out = tmp_path / "out"
    if command is retrain and extra and extra[0].endswith(".json"):
        args = retrain(root, *extra[1:], arch=extra[0])
    else:
        args = command(root, *extra)
    if command is not evaluate:
        args += ["--out", out]
    code, err = main_in_process(*args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("rnas: error: "), err
    assert message.format(root=root) in err, err
    assert not out.exists()
    assert not (root / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_states_the_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "range: >= 1" in text and "range: in (0, 1)" in text and "range: in [0, 1)" in text


def test_zero_is_never_a_default(root):
    from rnas.config import validate
    from rnas.engine.retrain import RetrainConfig, fill_defaults

    cfg = fill_defaults(RetrainConfig(arch="a", weight_decay=0.0, epochs=3), {})
    assert cfg.weight_decay == 0.0 and cfg.epochs == 3 and cfg.batch_size == 128
    assert (cfg.lr_per_step, cfg.milestones) == (True, None)  # three epochs: too short to decay per epoch
    validate(cfg)
