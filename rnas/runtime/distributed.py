"""Data-parallel runs under ``torchrun``: one process per rank, PyTorch's own process group (gloo on CPUs,
NCCL on CUDA, chosen from ``--device``), and a single-process run as the world of one.

The design goal is that a run on W ranks *is* the single-process run with the same global batch:

- every rank walks the same global batches (order and augmentation depend on (seed, epoch, step) only)
  and keeps its share of each; a batch made of parts (the search's 80 % weight / 20 % arch samples) is
  shared part by part, so the weight step's samples are those of the single process;
- per-sample random draws (Gumbel weights of the widths and tutors) are drawn for the global batch on
  every rank (they share the RNG state) and sliced, so each sample gets the noise it gets in one process;
- each rank's loss is its shard's mean scaled by ``share_weight`` (its share of the global batch times W),
  so the mean of the ranks' gradients, which ``average_gradients`` all-reduces, is the global batch's
  gradient even when the world size does not divide a part of the batch;
- BatchNorm normalises with each rank's own statistics unless ``--sync-bn`` (then with the global batch's).
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import os

import torch
from torch import nn

from rnas.errors import UserError
from rnas.runtime.world import environment_place


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size and local rank (the GPU index on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes config, metrics, TensorBoard and checkpoints."""
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's share of ``n`` items: contiguous, sizes differing by at most one."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def positions(self, sizes: list[int]) -> torch.Tensor:
        """Positions in a global batch made of consecutive parts of ``sizes`` that this rank keeps: its
        share of every part, parts in order."""
        out, offset = [], 0
        for size in sizes:
            start, stop = self.share(size)
            out.append(torch.arange(offset + start, offset + stop))
            offset += size
        return torch.cat(out)

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's share of the rows of ``t`` (a per-sample draw made for the whole global part)."""
        start, stop = self.share(t.shape[0])
        return t[start:stop]

    def share_size(self, n: int) -> int:
        """How many of ``n`` items are this rank's."""
        start, stop = self.share(n)
        return stop - start

    def share_weight(self, n_global: int) -> float:
        """Factor on this rank's mean loss so that averaging the ranks' gradients gives the global mean."""
        return self.share_size(n_global) * self.world / n_global

    def global_means(self, terms: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
        """Per-sample means over this rank's samples (``fraction`` of the global batch or part) -> the
        global means, in one all-reduce (float64, so float64 runs keep their precision)."""
        if not self.enabled:
            return terms
        keys = list(terms)
        values = self.sum(torch.stack([terms[k].detach().double().reshape(()) for k in keys]) * fraction)
        return dict(zip(keys, values.unbind(), strict=True))

    # ---- collectives (no-ops in a world of one) ------------------------------------------------
    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """All-reduce the gradients of ``params`` (those that require grad) to their mean over ranks, as
        one flat buffer: one collective per optimizer step."""
        if not self.enabled:
            return
        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone() if p.grad is None else \
                p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over ranks (a new tensor on ``t``'s device; ``t`` itself in a world of one)."""
        return self._reduce(t, torch.distributed.ReduceOp.SUM) if self.enabled else t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        return self._reduce(t, torch.distributed.ReduceOp.MAX) if self.enabled else t

    @staticmethod
    def _reduce(t: torch.Tensor, op) -> torch.Tensor:
        """``t`` all-reduced on the device the group's backend works on (NCCL: this rank's GPU, so that a
        count kept on the CPU can be summed too), returned to ``t``'s device."""
        reduced = t.to(collective_device(), copy=True)
        torch.distributed.all_reduce(reduced, op=op)
        return reduced.to(t.device)

    def differentiable_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks that gradients flow back through (the backward all-reduces the gradient too)."""
        if not self.enabled:
            return t
        return _DifferentiableSum.apply(t)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: without --sync-bn each rank's
        statistics follow its own shard, and rank 0's are the ones checkpointed, so validation uses them."""
        if self.enabled:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer, 0)

    def first_error(self, message: str | None) -> str | None:
        """Every rank's check result gathered: the first rank's error message (``rank k: ...``), or None when
        all ranks passed. Called before rank 0 writes anything, so one rank's bad data or missing teacher
        stops the whole job with nothing written."""
        if not self.enabled:
            return message
        messages = [None] * self.world
        torch.distributed.all_gather_object(messages, message)
        return next((f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None), None)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


SINGLE = Dist()


def from_environment() -> Dist:
    """The place ``torchrun`` gives this process (RANK / WORLD_SIZE / LOCAL_RANK), or a world of one."""
    rank, world, local_rank = environment_place()
    return SINGLE if world <= 1 else Dist(rank, world, local_rank)


class _DifferentiableSum(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the incoming gradient: d(sum_r t_r)/d t_r = 1 on every
    rank for every rank's loss, so each rank receives the sum of the ranks' upstream gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(grad)
        return grad


def collective_timeout() -> float:
    """Seconds a rank waits for the others in one collective before it gives up (a rank stopped, stuck or
    killed without the job noticing): RNAS_COLLECTIVE_TIMEOUT, 1800 by default."""
    value = os.environ.get("RNAS_COLLECTIVE_TIMEOUT", "1800")
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise UserError(f"RNAS_COLLECTIVE_TIMEOUT={value!r}: give the seconds a rank waits for the others (> 0)")
    return seconds


def collective_device() -> torch.device:
    """Where the process group's collectives take their tensors: this rank's GPU under NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(device: torch.device) -> Dist:
    """Join the ``torchrun`` job (a no-op outside one): NCCL when ``device`` is CUDA, gloo otherwise. On CUDA
    each rank takes the GPU of its local rank (``--device cuda`` or ``auto``; ``cuda:N`` is refused, since
    torchrun assigns the GPUs). A collective that waits longer than ``collective_timeout()`` fails."""
    dist = from_environment()
    if not dist.enabled or torch.distributed.is_initialized():
        return dist
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        if not torch.distributed.is_nccl_available():
            raise UserError("--device cuda under torchrun needs NCCL, which this PyTorch build lacks")
        torch.cuda.set_device(dist.local_rank)
    # torch._dynamo, imported by the first optimizer, takes references to a default group that exists by then,
    # so the group would outlive destroy_process_group and gloo's threads would be torn down at interpreter exit,
    # where a rank can abort (SIGABRT) after its work is done; imported first, it holds none (~1 s, once)
    importlib.import_module("torch._dynamo")
    timeout = datetime.timedelta(seconds=collective_timeout())
    torch.distributed.init_process_group(backend, timeout=timeout)
    return dist


def join_job(device_name: str, dist: Dist | None = None) -> tuple[torch.device, Dist]:
    """This rank's device and place in the job: ``--device`` resolved, the torchrun job joined (unless
    ``dist`` is given), ``cuda`` made ``cuda:<LOCAL_RANK>``."""
    from rnas.runtime.device import resolve_device

    device = resolve_device(device_name)
    dist = init_distributed(device) if dist is None else dist
    return rank_device(device, dist), dist


def device_name(device: torch.device, dist: Dist) -> str:
    """What ``--device`` resolved to, as a run's config records it: cpu, cuda:N, or cuda under torchrun (where
    each rank takes the GPU of its local rank)."""
    return device.type if dist.enabled else str(device)


def rank_device(device: torch.device, dist: Dist) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:<local rank>`` in a multi-rank job."""
    if device.type != "cuda" or not dist.enabled:
        return device
    if device.index is not None and device.index != dist.local_rank:
        raise UserError(f"--device {device}: under torchrun each rank uses cuda:<LOCAL_RANK>; give --device cuda")
    return torch.device("cuda", dist.local_rank)


def shutdown() -> None:
    """Leave the job: wait for the other ranks, then destroy the process group (errors of a job that
    already lost a rank are ignored here; they have been reported)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.barrier()
        except RuntimeError:
            pass
        torch.distributed.destroy_process_group()


def check_batch(batch_size: int | None, dist: Dist) -> None:
    """Each rank takes an equal share of the global batch: the world size must divide it."""
    if dist.enabled and batch_size is not None and batch_size % dist.world:
        raise UserError(f"--batch-size {batch_size}: not divisible by the {dist.world} ranks of this torchrun job "
                        f"(each rank takes an equal share of the global batch); use a multiple of {dist.world}")


def kill_point(dist: Dist, step: int) -> None:
    """Fault injection for the kill tests: with RNAS_KILL_RANK_AT_STEP=R:N rank R SIGKILLs itself when it
    reaches global step N; with RNAS_STOP_RANK_AT_STEP=R:N it stops itself (SIGSTOP), as a frozen node would;
    with RNAS_TERM_RANK_AT_STEP=R:N it sends itself SIGTERM (a scheduler's stop request), so that step is the
    last one the run takes before it checkpoints and exits, on any machine speed."""
    import signal

    for variable, signum in (("RNAS_KILL_RANK_AT_STEP", signal.SIGKILL), ("RNAS_STOP_RANK_AT_STEP", signal.SIGSTOP),
                             ("RNAS_TERM_RANK_AT_STEP", signal.SIGTERM)):
        if os.environ.get(variable) == f"{dist.rank}:{step}":
            os.kill(os.getpid(), signum)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of all ranks on any device (PyTorch's SyncBatchNorm is GPU-only):
    per-channel sums, sums of squares and counts are all-reduced (differentiably), then each rank
    normalises with the global mean and variance and updates the running statistics as one process
    would (unbiased variance). In eval mode, or in a world of one, it is ``nn.BatchNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x if x.dtype == torch.float64 else x.float()
        stats = torch.cat([xf.sum((0, 2, 3)), xf.square().sum((0, 2, 3)), xf.new_full((1,), x.numel() // c)])
        stats = _DifferentiableSum.apply(stats)
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean.square()).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), momentum)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.affine else 0)
        return (xf * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Every ``nn.BatchNorm2d`` of ``model`` normalised over the global batch (``--sync-bn``): PyTorch's
    SyncBatchNorm on CUDA, ``SyncBatchNorm2d`` elsewhere. Parameters, buffers and state_dict keys are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SyncBatchNorm2d  # same state, hooks and attributes; only forward changes
    return model


def note_world_change(saved_world: int, dist: Dist) -> None:
    """A run resumed on another number of ranks continues (the global batch, data order and Gumbel draws
    do not depend on it), but the per-rank BatchNorm statistics without --sync-bn and float summation
    order do: say so."""
    if saved_world != dist.world:
        import logging

        logging.getLogger("rnas").warning(
            "resuming a run checkpointed on %d rank(s) on %d: same global batch and data order; without "
            "--sync-bn the BatchNorm batch statistics now come from %s", saved_world, dist.world,
            "the whole batch" if dist.world == 1 else f"shares of 1/{dist.world} of the batch")


def on_every_rank(dist: Dist, build):
    """``build()`` on every rank, then agree: if it raised a user error on any rank, every rank raises that
    rank's one-line message (nothing has been written yet), so a rank that cannot read the data or the
    teacher stops the whole job cleanly instead of leaving the others waiting."""
    from rnas.errors import USER_ERRORS

    try:
        result, message = build(), None
    except USER_ERRORS as err:
        if not dist.enabled:
            raise
        result, message = None, str(err)
    message = dist.first_error(message)
    if message is not None:
        raise UserError(message)
    return result
