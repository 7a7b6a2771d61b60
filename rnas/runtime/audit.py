"""What a training step costs the host, measured on any device (a CPU too): the host synchronisations it
makes, the operators it dispatches (a proxy for a GPU's kernel launches) and the graph breaks
``torch.compile`` meets in it. ``tools/bench.py --launch`` and the tests of the captured step use these."""
from __future__ import annotations

import collections
from collections.abc import Callable

from torch.overrides import TorchFunctionMode

# tensor methods that copy a value to the host (on a GPU each one waits for the device to finish)
HOST_SYNCS = frozenset({"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "cpu",
                        "numpy", "__array__", "__format__"})


class _SyncCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_SYNCS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def host_syncs(fn: Callable[[], object]) -> dict[str, int]:
    """Run ``fn()`` once and count the calls that read a tensor's value on the host (``.item()``,
    ``.tolist()``, ``bool(t)``, ``float(t)``, ``nonzero`` ...), by name. Calls made inside code that
    ``torch.compile`` traced are not seen: a compiled graph reads no value."""
    with _SyncCounter() as counter:
        fn()
    return dict(counter.calls)


def operator_calls(fn: Callable[[], object]) -> dict[str, int]:
    """Run ``fn()`` once under ``torch.profiler`` (CPU activity) and count its operators: ``aten`` = every
    aten operator call the dispatcher made, nested ones included (each costs host time, the overhead a
    launch-bound GPU step pays); ``leaf`` = aten calls with no aten call inside them (the ones that run a
    kernel, views included); ``compiled`` = calls into graphs ``torch.compile`` made."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.events()
    aten = [e for e in events if e.name.startswith("aten::")]
    leaf = [e for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    compiled = [e for e in events if e.name.startswith(("CompiledFunction", "Torch-Compiled Region"))]
    return {"aten": len(aten), "leaf": len(leaf), "compiled": len(compiled)}


def graph_breaks(fn: Callable, *args) -> dict:
    """``torch._dynamo.explain`` of ``fn(*args)``: the number of graphs and graph breaks, and each break's
    reason (first line) with the user frame it happened in."""
    import torch._dynamo

    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    reasons = []
    for reason in explained.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        where = f" ({frame.filename}:{frame.lineno})" if frame is not None else ""
        reasons.append(reason.reason.splitlines()[0] + where)
    return {"graphs": explained.graph_count, "graph_breaks": explained.graph_break_count, "reasons": reasons}
