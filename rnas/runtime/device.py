"""Where and how models run: device names, placement, compilation, autocast, eval mode."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from rnas.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (cpu, cuda, cuda:N, auto)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: not a device rnas runs on (cpu, cuda, cuda:N, auto)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (CUDA: the driver's count; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(spec, num_classes: int, device: torch.device, what: str) -> None:
    """Refuse, in one line and before allocating anything, a network whose weights, gradients and two
    optimizer states (4 x float32 per parameter) exceed the free memory of ``device``: it is built on the
    meta device first, which costs no memory."""
    from supernets import Network

    with torch.device("meta"):
        params = sum(p.numel() for p in Network(spec, num_classes).parameters())
    need, free = 16 * params, available_bytes(device)
    if free is not None and need > free:
        raise UserError(f"{what}: the network has {params:,} parameters, ~{need / 2**30:.1f} GiB with gradients and "
                        f"optimizer state, more than the {free / 2**30:.1f} GiB free on {device}")


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` with its 4-d weights in channels_last (NHWC) layout.

    Convolutions given channels_last weights return channels_last activations, so every layer after
    the first runs in NHWC: on CPUs (oneDNN) the depthwise and 1×1 convolutions of an MBConv step run
    ~2× faster than in NCHW, and on GPUs it is the layout tensor cores want. Values agree with NCHW to
    float rounding (other kernels, other summation order)."""
    return model.to(device=device, memory_format=torch.channels_last)


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile`` the module in place when ``enabled`` (``--compile``): its state_dict keys, hooks
    and checkpoints stay as they are. Fuses the elementwise work (BN, activations, channel masks) on
    GPUs; on a CPU it compiles for minutes and ran slower than eager in our measurements."""
    if enabled:
        model.compile()
    return model


def captured(graphs: str, device: torch.device) -> bool:
    """Whether a step runs captured (``--graphs``): ``on``, ``off``, or ``auto`` = on for CUDA devices."""
    return graphs == "on" or (graphs == "auto" and device.type == "cuda")


def check_capturable(graphs: str, amp: str, distributed: bool) -> None:
    """What ``--graphs on`` cannot capture in any step (search, retrain, teacher training), as one line."""
    from rnas.errors import UserError

    if amp == "fp16":
        raise UserError(f"--graphs {graphs}: fp16's gradient scaler reads a value every step; use --amp bf16")
    if distributed:
        raise UserError(f"--graphs {graphs}: not under torchrun yet; use --graphs off")


def capture(fn, device: torch.device):
    """``fn`` under ``torch.compile(fullgraph=True)``: one graph or an error, never a silent break; on CUDA
    in ``reduce-overhead`` mode, which replays it as a CUDA graph. Its backward may run twice (a step that
    measures the attention term's gradient share keeps the graph), so no compiled graph of this process
    donates its buffers to the backward (``torch._functorch.config.donated_buffer``, read at compile and at
    backward time)."""
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    return torch.compile(fn, fullgraph=True, mode="reduce-overhead" if device.type == "cuda" else None)


def autocast(device: torch.device, amp: str | bool):
    """Autocast of the forward passes: ``bf16`` / ``fp16`` (``--amp``), else a no-op context."""
    if amp in (False, None, "none"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (autocast outputs of bf16/fp16 are upcast; float64 stays float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run in eval mode, restore the previous train/eval state afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
