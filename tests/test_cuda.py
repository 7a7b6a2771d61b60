"""The GPU path: AMP fp16 with its gradient scaler, bf16 against fp32, the supernet's argmax net against the
derived net, attacks under autocast, channels_last, the teacher's taps under autocast. Marked ``cuda``: they
run on ``RNAS_TEST_DEVICE`` (e.g. ``cuda:1``; ``cpu`` runs them on the CPU's autocast) or on the first CUDA
device, and are skipped where there is none (CI). ``tools/gpu_check.py`` runs them on a GPU."""
import contextlib
import json
import os

import pytest
import torch
import yaml
from conftest import ALL_SPACES, TINY_BLOCKS, builtin, randomize, randomize_batchnorm, tiny_spec
from helpers import main_in_process, tiny_search_and_derive, tiny_search_config, write_tiny_setup

from rnas.config.defaults import TUTOR_DERIVE
from rnas.engine.search import Searcher
from rnas.method.distill import channel_energy, teacher_targets
from rnas.method.taps import Taps, conv_taps
from rnas.nets.derivation import arch_filename
from rnas.robust.attacks import run_attack
from rnas.runtime.device import autocast, full_precision, place
from rnas.teachers.wideresnet import WideResNet
from supernets import Network, build_model, derive

pytestmark = pytest.mark.cuda


@contextlib.contextmanager
def full_fp32():
    """TF32 off for CUDA convolutions and matmuls (PyTorch's default lets cuDNN use it for convolutions)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def device() -> torch.device:
    name = os.environ.get("RNAS_TEST_DEVICE")
    if name is None:
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device (set RNAS_TEST_DEVICE=cpu to run these on the CPU)")
        name = "cuda"
    return torch.device(name)


def _searcher(root, device, amp: str) -> Searcher:
    torch.manual_seed(0)
    return Searcher.from_config(tiny_search_config(root, device=str(device), amp=amp, batch_size=20))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("cuda"))


def test_fp16_scaler_steps_are_finite_and_an_overflow_is_skipped(root, device):
    searcher = _searcher(root, device, "fp16")
    x, y = next(iter(searcher.loader.epoch(0)))
    for _ in range(3):
        terms = searcher.train_step(x, y)
        losses = {k: v for k, v in terms.items() if k.split("/")[-1] in ("ce", "kl", "attn", "total")}
        assert len(losses) == 8 and all(torch.isfinite(v) for v in losses.values()), terms
    scale = searcher.scaler.get_scale()
    weights = [p.detach().clone() for p in searcher.weight_params]
    with torch.no_grad():  # one weight at inf: every gradient of the step overflows
        first = searcher.weight_params[0]
        first[(0,) * first.dim()] = float("inf")
    n = searcher.parts(len(y))[0]
    targets = searcher.teacher_targets(x)
    searcher.weight_step(x[:n], y[:n], (targets[0][:n], targets[1][:n]))
    assert searcher.scaler.get_scale() < scale  # the scaler saw the overflow ...
    for before, after in zip(weights[1:], searcher.weight_params[1:], strict=True):
        assert torch.equal(before, after.detach())  # ... and skipped the step
    searcher.close()


def test_bf16_objective_is_finite_and_near_fp32_on_a_fixed_batch(root, device):
    full, half = _searcher(root, device, "none"), _searcher(root, device, "bf16")
    half.supernet.load_state_dict(full.supernet.state_dict())
    half.tutor.load_state_dict(full.tutor.state_dict())
    x, y = next(iter(full.loader.epoch(0)))
    draws = full.draw(len(x), torch.Generator(device).manual_seed(0))
    terms = {name: s.objective(x, y, s.teacher_targets(x), draws=draws) for name, s in
             (("fp32", full), ("bf16", half))}
    for key in ("ce", "kl", "attn", "total"):
        a, b = terms["fp32"][key].item(), terms["bf16"][key].item()
        assert torch.isfinite(terms["bf16"][key]) and abs(b - a) <= 0.05 * abs(a) + 1e-3, (key, a, b)
    full.close(), half.close()


def _argmax_and_derived(spec, device):
    supernet = place(randomize(Network(spec)), device).eval()
    supernet.mode = "argmax"
    return supernet, place(build_model(derive(supernet), supernet), device).eval()


BF16_ULP = 2.0 ** -7  # the spacing of bfloat16 numbers in [1, 2): its 8-bit significand


@pytest.mark.parametrize("amp", ["none", "bf16"])
@pytest.mark.parametrize("name", ALL_SPACES)
def test_argmax_supernet_equals_the_derived_net(name, amp, device):
    """fp32: within 1e-5, with TF32 off (cuDNN's default TF32 convolutions keep 10 mantissa bits: on an H200
    the two nets then differed by 2.1e-5 (l), 1.3e-4 (im) and 2.1e-4 (i), and by <= 1.2e-7 with it off).
    bf16: the logits are bf16 numbers, so two nets that sum the same products in another order (other
    kernels for other channel counts) differ by whole bf16 steps; within 2 steps at the logits' magnitude
    (1e-4 would demand bit-identical kernels: on this CPU s5, m and l differ by one)."""
    spec = builtin(name)
    supernet, model = _argmax_and_derived(spec, device)
    x = torch.rand(2, spec.in_channels, spec.input_size, spec.input_size, device=device)
    with torch.no_grad(), autocast(device, amp), full_fp32():
        ours, theirs = full_precision(supernet(x)), full_precision(model(x))
    diff = (ours - theirs).abs().max().item()
    step = BF16_ULP * 2.0 ** torch.floor(torch.log2(theirs.abs().max())).item()
    assert diff <= (1e-5 if amp == "none" else 2 * step), (diff, step)


@pytest.mark.parametrize("objective,derive,adversary", [("paper", "argmax", "none"),
                                                        ("standardised", "monotone", "trades"),
                                                        ("robust", "balanced", "pgd")])
def test_search_derive_retrain_eval_run_end_to_end_on_the_device(objective, derive, adversary, root, device,
                                                                    tmp_path):
    """Every command of the pipeline on the device, each tutor objective, derivation and adversary once: a
    tensor left on the CPU among a step's terms stopped every search on CUDA at its first step while each
    part alone passed (the step's temperatures were CPU scalars)."""
    flags = ("--device", str(device))
    arch = tiny_search_and_derive(root, tmp_path / "search", *flags, "--limit", 40, "--batch-size", 10,
                                  "--tutor-objective", objective)
    if derive != TUTOR_DERIVE:
        assert main_in_process("derive", tmp_path / "search", "--tutor-derive", derive)[0] == 0
        arch = arch.with_name(arch_filename(None, derive))
    derived = json.loads(arch.read_text())
    assert (derived["tutor_objective"], derived["tutor_derive"]) == (objective, derive)
    at = () if adversary == "none" else ("--at", adversary, "--from-scratch")
    code, err = main_in_process("retrain", arch, "--data-dir", root / "data", "--val-size", 50, "--limit", 40,
                                "--batch-size", 10, "--epochs", 1, *at, *flags, "--out", tmp_path / "retrain")
    assert code == 0, err
    code, err = main_in_process("eval", tmp_path / "retrain" / "checkpoint.pt", "--attacks", "clean,pgd20", "--n", 20,
                                *flags, "--json", tmp_path / "eval.json")
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert [r["attack"] for r in result["results"]] == ["clean", "pgd20"] and result["device"].startswith(device.type)
    assert result["tf32"] == (torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None)
    for run in ("search", "retrain"):  # config.yaml says where it ran
        assert yaml.safe_load((tmp_path / run / "config.yaml").read_text())["device"].startswith(device.type)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_attacks_stay_inside_the_ball_under_autocast(amp, device):
    spec = tiny_spec(TINY_BLOCKS["mbconv"])
    _, model = _argmax_and_derived(spec, device)
    x = torch.rand(8, 3, 16, 16, device=device)
    y = torch.randint(0, spec.num_classes, (8,), device=device)
    eps = 8 / 255
    for attack in ("fgsm", "pgd20", "mifgsm"):
        with autocast(device, amp):
            adv = run_attack(attack, model, x, y, eps)
        assert adv.dtype == x.dtype and adv.device == x.device
        assert (adv - x).abs().max().item() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_channels_last_is_kept_through_the_taps(device):
    _, model = _argmax_and_derived(tiny_spec(TINY_BLOCKS["robust_res"]), device)
    x = torch.rand(2, 3, 16, 16, device=device).contiguous(memory_format=torch.channels_last)
    with Taps(model.tap_layers()) as taps, torch.no_grad():
        model(x)
        outputs = taps.collect()
    assert outputs and all(t.is_contiguous(memory_format=torch.channels_last) for t in outputs if t.dim() == 4)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_teacher_maps_under_autocast_are_near_fp32(amp, device):
    torch.manual_seed(0)
    teacher = place(randomize_batchnorm(WideResNet(16, 2, 10)), device).eval()
    x = torch.rand(4, 3, 32, 32, device=device)
    with Taps(conv_taps(teacher, x[:1], include_shortcuts=False), channel_energy) as taps:
        q32, maps32 = teacher_targets(teacher, x, taps, 8)
        q16, maps16 = teacher_targets(teacher, x, taps, 8, autocast(device, amp))
    assert maps16.dtype == torch.float32 and torch.isfinite(maps16).all()
    assert (maps16 - maps32).abs().max().item() <= 2e-2  # unit-norm maps: at most 2 % of the norm
    assert (q16 - q32).abs().max().item() <= 5e-2 * q32.abs().max().item() + 1e-3
