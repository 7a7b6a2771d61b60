"""RobustScaling and the WRN-A teachers (rnas/scaling.py, rnas/teachers/robustresnet.py): the built WRN-A1..A4
match the paper's table within 3 % and their layer-by-layer count exactly, a checkpoint in RobustBench's
Huang2022Revisiting_WRN-A4 layout written by an independent implementation loads by name and gives its
logits, and `rnas scale --flops` prints the paper's presets and the rule's own layouts. The same for the
RobustResNet-A teachers (RobustResBlocks, the authors' released key names and forward)."""
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import main_in_process, tiny_search_and_derive, write_tiny_setup
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rnas.nets.scaling import PRESETS, Layout, layout_at, robust_res_cost, robust_scaling, scale_arch, wrn_a_cost
from rnas.runtime.rundir import load_checkpoint
from rnas.teachers import load_teacher, teacher_arch
from supernets import build_model


@pytest.mark.parametrize("family,cost,tolerance", [("wrn", wrn_a_cost, 0.03), ("robustresnet", robust_res_cost, 0.01)])
@pytest.mark.parametrize("name", list(PRESETS))
def test_built_presets_match_their_count_and_the_papers_table(name, family, cost, tolerance):
    """WRN-A1..A4 within 3 % of the paper's table, RobustResNet-A1..A4 within 1 %; both exactly their
    layer-by-layer count (which `rnas teachers` prints)."""
    preset = PRESETS[name]
    with torch.device("meta"):  # shapes only: A4 has 147M parameters
        net = teacher_arch(f"{family}-{name.lower()}", "cifar10").build(10)
        with FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 3, 32, 32))
    params, macs = sum(p.numel() for p in net.parameters()), counter.get_total_flops() // 2
    assert (params, macs) == cost(Layout(preset.depths, preset.widths))
    assert abs(params / preset.params - 1) <= tolerance and abs(macs / preset.flops - 1) <= tolerance


def test_the_rule_keeps_its_ratios_and_meets_the_budget():
    for scale in (1.0, 2.5, 4.0, 6.3):
        layout = layout_at(scale)
        d1, d2, d3 = layout.depths
        w1, w2, w3 = layout.widths
        assert d1 == d2 and abs(d1 / d3 - 2) <= 2 / d3  # 2 : 2 : 1 up to rounding
        assert abs(w2 / w1 - 1.25) <= 0.5 / w1 + 0.5 / w2 and abs(w1 / w3 - 2) <= 1.5 / w3 + 0.5
        assert abs(sum(layout.depths) / sum(layout.widths) - 7 / 3) < 0.5
    for target in (3e9, 5e9, 12e9, 33e9):
        macs = wrn_a_cost(robust_scaling(target))[1]
        assert abs(macs / target - 1) < 0.15  # the closest layout the rounding allows
    assert robust_scaling(5e9) == Layout(*[(PRESETS["A1"].depths), PRESETS["A1"].widths])


class _TheirBlock(nn.Module):
    """RobustBench's PreActBasicBlock as published (robust_resnet.py), written out independently."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.act = nn.SiLU(inplace=True)
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False))

    def forward(self, x):
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        return self.conv2(self.act(self.bn2(self.conv1(out)))) + shortcut


class _TheirStage(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[_TheirBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class _TheirWRNA4(nn.Module):
    """Huang2022Revisiting_WRN-A4: PreActResNet(channels 16-160-448-384, depths 27-28-13, SiLU, pre_process)."""

    def __init__(self, mu, sigma):
        super().__init__()
        self.register_buffer("mu", torch.tensor(mu).view(3, 1, 1))
        self.register_buffer("sigma", torch.tensor(sigma).view(3, 1, 1))
        self.stem_conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.blocks = nn.ModuleList([_TheirStage(27, 16, 160, 1), _TheirStage(28, 160, 448, 2),
                                     _TheirStage(13, 448, 384, 2)])
        self.norm1, self.act1 = nn.BatchNorm2d(384), nn.SiLU(inplace=True)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(384, 10)

    def forward(self, x):
        out = self.stem_conv((x - self.mu) / self.sigma)
        for block in self.blocks:
            out = block(out)
        return self.fc(self.global_pooling(self.act1(self.norm1(out))).flatten(1))


@pytest.mark.slow
def test_a_robustbench_wrn_a4_checkpoint_loads_by_name_with_its_normalisation(tmp_path):
    torch.manual_seed(0)
    mu, sigma = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)  # not the zoo's defaults: read from the file
    theirs = _TheirWRNA4(mu, sigma)
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Conv2d):
                m.weight.mul_(0.5)
    theirs.eval()
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}},
               folder / "Huang2022Revisiting_WRN-A4.pt")
    ours = load_teacher("wrn-a4", "Huang2022Revisiting_WRN-A4", tmp_path / "models", "cifar10")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()
    assert ours.normalize.mean.flatten().tolist() == pytest.approx(list(mu))


class _TheirSE(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c // r, c, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1).expand_as(x)


class _TheirRobustResBlock(nn.Module):
    """The authors' RobustResBlock (models/resnet.py) written out: scales 4, base_width 64, cardinality 1,
    expansion 4, SE reduction 64."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        width = int(math.floor(planes * (64 / 160)))
        self.act, self.stride = nn.ReLU(inplace=True), stride
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, width * 4, 1, bias=False)
        if stride > 1:
            self.pool = nn.AvgPool2d(3, stride, 1)
        self.bn2 = nn.BatchNorm2d(width * 4)
        self.conv2 = nn.ModuleList([nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(3)])
        self.bn3 = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(3)])
        self.conv3 = nn.Conv2d(width * 4, planes * 4, 1, bias=False)
        self.se_bn, self.se = nn.BatchNorm2d(planes * 4), _TheirSE(planes * 4, 64)
        if stride > 1 or cin != planes * 4:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False))

    def forward(self, x):
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.act(self.bn2(self.conv1(x)))
        xs, ys = torch.chunk(out, 4, 1), []
        for s in range(3):
            ys.append(self.act(self.bn3[s](self.conv2[s](xs[s] if s == 0 or self.stride > 1 else xs[s] + ys[-1]))))
        ys.append(xs[3] if self.stride == 1 else self.pool(xs[3]))
        out = self.conv3(torch.cat(ys, 1))
        return out + shortcut + self.se(self.se_bn(out))


class _TheirRobustResNet(nn.Module):
    def __init__(self, depths, channels):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        stages, cin = [], 16
        for i, (n, c) in enumerate(zip(depths, channels, strict=True)):
            stage = nn.Module()
            stage.layer = nn.Sequential(*[_TheirRobustResBlock(cin if j == 0 else 4 * c, c, (1 if i == 0 else 2)
                                                               if j == 0 else 1) for j in range(n)])
            stages.append(stage)
            cin = 4 * c
        self.blocks = nn.ModuleList(stages)
        self.norm1, self.act1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        out = self.stem_conv(x)
        for stage in self.blocks:
            out = stage.layer(out)
        return self.fc(self.act1(self.norm1(out)).mean((2, 3)))


def test_a_checkpoint_of_the_authors_robustresnet_loads_by_name_and_gives_its_logits(tmp_path):
    torch.manual_seed(0)
    theirs = _TheirRobustResNet((2, 2, 1), (32, 64, 64))  # robustresnet-a-2-2-1-2-2-1
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    theirs.eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, tmp_path / "rr.pt")
    ours = load_teacher("robustresnet-a-2-2-1-2-2-1", tmp_path / "rr.pt", dataset="cifar10")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        mean, std = ours.normalize.mean, ours.normalize.std
        expected, got = theirs((x - mean) / std), ours(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()


def test_rnas_scale_with_robust_res_blocks(tmp_path, capsys):
    out = tmp_path / "a2.json"
    assert main_in_process("scale", "--flops", "10G", "--base", "robust_res", "-o", out)[0] == 0
    report = json.loads(out.read_text())
    assert report["base"] == "robust_res" and report["preset"]["teacher"] == "robustresnet-a2"
    assert report["preset"]["params"] == robust_res_cost(Layout(*[tuple(PRESETS["A2"].depths),
                                                                  tuple(PRESETS["A2"].widths)]))[0]
    rule = report["rule"]
    assert rule["teacher"] == "robustresnet-a-" + "-".join(str(v) for v in rule["depths"] + rule["widths"])
    assert rule["macs"] == robust_res_cost(Layout(tuple(rule["depths"]), tuple(rule["widths"])))[1]
    teacher_arch(rule["teacher"], "cifar10")
    assert "RobustResNet-A: RobustResBlocks" in capsys.readouterr().out
    code, err = main_in_process("scale", "--flops", "10G", "--base", "bottleneck")
    assert code == 2 and "--base" in err


def test_rnas_scale_prints_the_presets_and_the_rule(tmp_path, capsys):
    for name, preset in PRESETS.items():
        out = tmp_path / f"{name}.json"
        code = main_in_process("scale", "--flops", f"{preset.target / 1e9:g}G", "-o", out)[0]
        assert code == 0
        report = json.loads(out.read_text())
        assert report["preset"]["name"] == name and report["preset"]["teacher"] == f"wrn-{name.lower()}"
        assert (report["preset"]["depths"], report["preset"]["widths"]) == (list(preset.depths), list(preset.widths))
        rule = report["rule"]
        assert rule["teacher"] == "wrn-a-" + "-".join(str(v) for v in rule["depths"] + rule["widths"])
        assert rule["macs"] == wrn_a_cost(Layout(tuple(rule["depths"]), tuple(rule["widths"])))[1]
        teacher_arch(rule["teacher"], "cifar10")  # the printed name is a teacher of the zoo
    printed = capsys.readouterr().out
    assert "paper's A4     depths 27-28-13   widening 10-14-6" in printed
    assert "the table rounds the ratios its own way" in printed
    report = json.loads((tmp_path / "A1.json").read_text())
    assert math.isclose(report["rule"]["macs"], report["preset"]["macs"])  # at 5G the rule is the table
    for bad, message in (("lots", "--flops: bad MAC count 'lots'"), ("10k", "--flops 10k: a budget in MACs")):
        code, err = main_in_process("scale", "--flops", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


# ---- growing a derived net ----------------------------------------------------------------------------------

S3_ARCH = Path(__file__).resolve().parents[1] / "studies" / "results" / "cifar10-defaults" / "search-s3" / "arch.json"


@pytest.mark.parametrize("budget", [9e6, 11.02e6, 15.58e6, 20e6])
@pytest.mark.parametrize("width_only", [False, True])
def test_a_grown_net_has_exact_macs_under_its_budget_and_builds_as_its_file_says(budget, width_only):
    arch = json.loads(S3_ARCH.read_text())
    grown = scale_arch(arch, budget, "s3", width_only)
    model = build_model(grown)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    assert counter.get_total_flops() // 2 == grown["macs"] and sum(p.numel() for p in model.parameters()) == \
        grown["params"]
    assert 0.95 * budget <= grown["macs"] <= budget  # within 5 % below: the granularity allows it here
    depths = [s["depth"] for s in grown["spec"]["stages"]]
    if width_only:
        assert depths == [3, 3, 3]
    else:
        assert depths[0] == depths[1] and abs(depths[0] / depths[2] - 2) <= 0.5  # 2 : 2 : 1 up to rounding
    assert grown["student_layers"] == [name for name, _ in model.tap_layers()]
    rule = "width only" if width_only else "RobustScaling"
    assert grown["spec"]["description"] == (f"{arch['spec']['description']}; grown by {rule} to depth "
                                            f"{'-'.join(map(str, depths))}, {grown['macs'] / 1e6:.2f}M MACs")
    tutors, old = grown["tutors"], arch["tutors"]
    assert len(tutors) == len(grown["student_layers"]) and (tutors[0], tutors[-1]) == (old[0], old[-1])
    positions = [round(i * (len(old) - 1) / (len(tutors) - 1)) for i in range(len(tutors))]
    assert tutors == [old[j] for j in positions]


def test_rnas_scale_grows_an_arch_and_refuses_bad_budgets(tmp_path):
    out = tmp_path / "arch-20M.json"
    code, err = main_in_process("scale", S3_ARCH, "--macs", "20M", "-o", out)
    assert code == 0, err
    grown = json.loads(out.read_text())
    assert grown["scaled_from"]["macs"] == json.loads(S3_ARCH.read_text())["macs"] and grown["macs"] <= 20e6
    for args, message in (((S3_ARCH, "--macs", "5M"), "--macs 5M: below the net's own 6.294M MACs"),
                          ((S3_ARCH, "--macs", "lots"), "--macs: bad MAC count 'lots'"),
                          ((S3_ARCH, "--flops", "5G"), "give --flops BUDGET (a WRN-A layout), or ARCH --macs"),
                          ((S3_ARCH, "--macs", "20M", "-o", S3_ARCH), "the input arch file"),
                          ((S3_ARCH, "--macs", "6.3M"), "--macs 6.3M: even the net's own depth in the 2 : 2 : 1 "
                                                        "layout costs 7.635M MACs; give a larger budget, or "
                                                        "--width-only"),
                          (("--flops", "5G", "--width-only"), "--width-only: grows a derived net"),
                          ((S3_ARCH, "--macs", "20M", "--base", "wrn"), "--base wrn: chooses the block of a --flops")):
        before = S3_ARCH.read_bytes()
        code, err = main_in_process("scale", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert S3_ARCH.read_bytes() == before
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    code, err = main_in_process("scale", S3_ARCH, "--macs", "20M", "-o", tmp_path / "notes.json")
    assert code == 2 and "exists and is not an earlier rnas scale output" in err
    assert (tmp_path / "notes.json").read_text() == '{"mine": 1}'
    for out, message in ((tmp_path, "is a directory"), (tmp_path / "no" / "a.json", "does not exist")):
        code, err = main_in_process("scale", S3_ARCH, "--macs", "20M", "-o", out)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_rnas_retrain_takes_a_grown_net_with_its_carried_tutors(tmp_path):
    root = write_tiny_setup(tmp_path)
    arch = json.loads(tiny_search_and_derive(root, root / "search", "--limit", 20, "--batch-size", 10).read_text())
    code, err = main_in_process("scale", root / "search" / "arch.json", "--macs", f"{2 * arch['macs']}",
                                "-o", root / "grown.json")
    assert code == 0, err
    grown = json.loads((root / "grown.json").read_text())
    assert len(grown["student_layers"]) > len(arch["student_layers"])
    code, err = main_in_process("retrain", root / "grown.json", "--data-dir", root / "data", "--val-size", 50,
                                "--limit", 20, "--batch-size", 10, "--epochs", 1, "--out", root / "retrain")
    assert code == 0, err
    assert load_checkpoint(root / "retrain" / "checkpoint.pt")["tutors"]["mapping"] == grown["tutors"]


def test_the_shipped_scaling_study_plans_s3_grown_both_ways_against_an_s7_search(tmp_path):
    """studies/cifar10-scaling.yaml: the tutor study's S3 net grown to 15.58M MACs by RobustScaling and by width
    alone (no second S3 search, no second S3 retrain) and S7 derived at 15.58M, each retrained 15 epochs with
    RNAS-CL and evaluated with AutoAttack."""
    from helpers import plan_shipped_study

    plan = plan_shipped_study("cifar10-scaling", tmp_path)
    retrains = {s.path: s.config for s in plan.steps() if s.kind == "retrain"}
    assert list(retrains) == ["s7-15.58M/rnas-cl", "s3-scaled-15.58M/rnas-cl", "s3-widened-15.58M/rnas-cl"]
    assert [Path(c.arch).relative_to(tmp_path / "out").as_posix() for c in retrains.values()] == [
        "search-s7/arch-15.58M.json", "arch-s3/arch-scaled-15.58M.json", "arch-s3/arch-widened-15.58M.json"]
    assert all(c.epochs == 15 and c.baseline == "cl" for c in retrains.values())
    assert [s.kind for s in plan.steps()].count("search") == 1
    derive = {s.path: s.extra for s in plan.steps() if s.kind == "derive"}
    assert derive["search-s7"]["budgets"] == [15_580_000]
    grow = next(s for s in plan.steps() if s.kind == "grow")
    assert grow.extra["scale"] == [15_580_000] and grow.extra["source"] == str(
        Path(__file__).resolve().parents[1] / "studies" / "results" / "cifar10-tutors" / "search-s3-standardised"
        / "arch-widths.json")
    evals = [s for s in plan.steps() if s.kind == "eval"]
    assert len(evals) == 3 and all(e.config.attack_list() == ["clean", "pgd20", "autoattack"] and e.config.n == 1000
                                   for e in evals)


def test_a_layout_written_as_yaml_is_a_teacher_every_command_takes(tmp_path):
    """`rnas scale --flops B -o FILE.yaml` writes `teacher: NAME` (the preset where the paper has one) beside the
    layout; `--teacher FILE.yaml` trains that teacher and the run's config keeps the name; a YAML without a
    teacher, or an unreadable one, is one line."""
    import yaml

    preset, small = tmp_path / "a2.yaml", tmp_path / "small.yaml"
    assert main_in_process("scale", "--flops", "10G", "-o", preset)[0] == 0
    assert yaml.safe_load(preset.read_text())["teacher"] == "wrn-a2"
    assert main_in_process("scale", "--flops", "0.2G", "-o", small)[0] == 0
    assert main_in_process("scale", "--flops", "0.2G", "-o", small)[0] == 0  # its own earlier output: replaced
    written = yaml.safe_load(small.read_text())
    assert written["teacher"] == written["rule"]["teacher"] == "wrn-a-5-5-3-2-2-1" and "preset" not in written
    root = write_tiny_setup(tmp_path / "tiny")
    code, err = main_in_process("teacher", "train", "--teacher", small, "--data-dir", root / "data", "--val-size", 50,
                                "--limit", 20, "--batch-size", 10, "--epochs", 1, "--at", "nfgsm", "--eval-n", 10,
                                "--out", tmp_path / "teacher", "--model-dir", tmp_path / "models")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "teacher" / "config.yaml").read_text())
    assert config["arch"] == "wrn-a-5-5-3-2-2-1"
    # trained behind its own normalisation, saved as the bare net: loaded as a teacher it computes the same
    from rnas.teachers import TrainableTeacher

    trained = TrainableTeacher(teacher_arch("wrn-a-5-5-3-2-2-1", "cifar10"), 10).eval()
    trained.load_state_dict(load_checkpoint(tmp_path / "teacher" / "checkpoint.pt")["model"])
    exported = tmp_path / "models" / "cifar10" / "Linf" / "wrn-a-5-5-3-2-2-1-nfgsm.pt"
    teacher = load_teacher("wrn-a-5-5-3-2-2-1", exported)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trained(x), teacher(x), atol=1e-6)
    code, err = main_in_process("eval", tmp_path / "teacher" / "checkpoint.pt", "--data-dir", root / "data",
                                "--val-size", 50, "--attacks", "clean", "--n", 10, "--json", tmp_path / "e.json")
    assert code == 0, err
    (tmp_path / "none.yaml").write_text("depths: [1, 2, 3]\n")
    for file, message in ((tmp_path / "none.yaml", "no 'teacher: NAME' in it"), (tmp_path / "absent.yaml",
                                                                                  "cannot read (No such file")):
        code, err = main_in_process("teacher", "train", "--teacher", file, "--data-dir", root / "data",
                                    "--out", tmp_path / "bad")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()
