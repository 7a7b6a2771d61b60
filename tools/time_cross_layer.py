"""Time one batched Eq. (1) (forward + backward) against a WRN-34-10 teacher forward on the same batch.

    python tools/time_cross_layer.py [--batch 128] [--n-student 31] [--n-teacher 36] [--size 8] [--device cpu]
"""
import argparse
import statistics
import time

import torch

from rnas.method.distill import CrossLayerAttention
from rnas.teachers import load_teacher


def timed(fn, repeats: int, device: str) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--n-student", type=int, default=31)
    parser.add_argument("--n-teacher", type=int, default=36)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dev = args.device
    module = CrossLayerAttention(args.n_student, args.n_teacher).to(dev)
    d = args.size * args.size
    s = torch.nn.functional.normalize(torch.rand(args.batch, args.n_student, d, device=dev), dim=-1).requires_grad_()
    t = torch.nn.functional.normalize(torch.rand(args.batch, args.n_teacher, d, device=dev), dim=-1)

    def loss_step():
        module(s, t).backward()

    teacher = load_teacher("wrt34").to(dev)
    x = torch.rand(args.batch, 3, 32, 32, device=dev)

    def teacher_forward():
        with torch.inference_mode():
            teacher(x)

    loss = timed(loss_step, args.repeats, dev)
    fwd = timed(teacher_forward, max(2, args.repeats // 2), dev)
    ml, mf = statistics.median(loss), statistics.median(fwd)
    print(f"Eq.(1) fwd+bwd  B={args.batch} n_s={args.n_student} n_t={args.n_teacher} {args.size}x{args.size}: "
          f"{ml * 1e3:.2f} ms (median of {len(loss)})")
    print(f"WRN-34-10 forward, same batch: {mf * 1e3:.0f} ms (median of {len(fwd)})")
    print(f"ratio: {ml / mf:.4f}")


if __name__ == "__main__":
    main()
