"""This process's place in a ``torchrun`` job, read from the environment without torch, so that the command line
can ask it before anything heavy is loaded (``rnas.runtime.distributed.from_environment`` builds its Dist)."""
from __future__ import annotations

import os


def environment_place() -> tuple[int, int, int]:
    """(rank, world size, local rank) that ``torchrun`` gives this process (RANK / WORLD_SIZE / LOCAL_RANK);
    (0, 1, 0) outside a job."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
