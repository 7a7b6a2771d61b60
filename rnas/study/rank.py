"""A torchrun rank of a study step of ``nproc`` > 1 (``python -m rnas.study.rank STEP_FILE``, launched by
rnas.study.worker): the step's engine call on this rank (the engine joins the torchrun job); rank 0 writes the
messages and the result beside the step file, every rank stops when the stop file appears there."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
from pathlib import Path

from rnas.runtime.rundir import StopSignal
from rnas.study.worker import FileChannel, Nowhere, StopFile, execute


def main(step_file: str) -> None:
    here = Path(step_file).parent
    with open(step_file, "rb") as fh:
        step, out, threads = pickle.load(fh)
    step = dataclasses.replace(step, resources={**step.resources, "nproc": 1})  # not again under torchrun
    rank = int(os.environ.get("RANK", "0"))
    channel = FileChannel(here / "events.jsonl") if rank == 0 else Nowhere()
    with StopSignal() as signals:
        result = execute(step, Path(out), threads, channel, StopFile(here / "stop", signals))
    if rank == 0:
        (here / "result.json").write_text(json.dumps(list(result)))


if __name__ == "__main__":
    main(sys.argv[1])
