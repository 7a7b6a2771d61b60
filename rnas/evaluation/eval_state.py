"""The progress of an `rnas eval --json OUT`, kept in OUT.state.json so that `--resume` continues an
interrupted evaluation: its request, the finished result rows and the row in progress (batches done, counts
and per-image outcomes so far), rewritten atomically after every batch (every round of batches under
torchrun, by rank 0)."""
from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rnas.errors import UserError
from rnas.runtime.distributed import SINGLE, Dist, on_every_rank
from rnas.runtime.rundir import atomic_write_json, first_line


@dataclass
class RowProgress:
    """An (attack, eps) row so far: batches done (the first ``batches`` of the split), correct predictions
    among their ``n`` images, seconds spent on them, and which images were right: ``outcomes``, one
    character per image in the split's order, 1 right, 0 wrong (empty for a row begun by an rnas that did
    not keep them; the finished row packs them as ``hits``)."""

    batches: int = 0
    correct: int = 0
    n: int = 0
    seconds: float = 0.0
    outcomes: str = ""

    def add(self, right: torch.Tensor, batches: int, seconds: float) -> None:
        """A round of batches gathered over the ranks: whether each of its images (in order) was classified
        right, now ``batches`` done in ``seconds``."""
        right = right.to("cpu", torch.uint8).flatten()
        self.outcomes += (right + ord("0")).numpy().tobytes().decode() if len(self.outcomes) == self.n else ""
        self.correct, self.n = self.correct + int(right.sum()), self.n + len(right)
        self.batches, self.seconds = batches, seconds

    def packed_hits(self) -> dict:
        """``{"hits": HEX}`` when every image's outcome is known (see pack_hits), else ``{}``."""
        return {"hits": pack_hits(self.outcomes)} if self.n and len(self.outcomes) == self.n else {}


def pack_hits(bits: str) -> str:
    """'01101...' (one character per image) as hex, four images a digit, the first image the highest bit of
    the first digit, the last digit padded with 0s: an eval row's ``hits`` (which images it got right)."""
    padded = bits + "0" * (-len(bits) % 4)
    return f"{int(padded, 2):0{len(padded) // 4}x}" if padded else ""


def unpack_hits(text: str, n: int) -> torch.Tensor:
    """The [n] bool tensor of an eval row's ``hits`` (see pack_hits); a ValueError if it is not n images'."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9a-f]*", text) or len(text) != -(-n // 4):
        raise ValueError(f"hits: not {n} images' worth of hex digits")
    bits = bin(int(text, 16))[2:].zfill(4 * len(text)) if text else ""
    if "1" in bits[n:]:
        raise ValueError("hits: padding bits set")
    return torch.tensor(bytearray(bits[:n].encode()), dtype=torch.uint8) == ord("1")



STATE_FORMAT = "rnas-eval-state-1"


class EvalState:
    """Progress of one evaluation: its request, the finished result rows and the row in progress (batches
    done, counts so far). With a ``path`` (rank 0 of rnas eval --json) it is rewritten atomically at every
    change; without one it only lives in memory."""

    def __init__(self, request: dict | None = None, path: Path | None = None, rows: list | None = None,
                 current: dict | None = None):
        self.request, self.path = request or {}, path
        self.rows, self.current = list(rows or []), current

    def finished_row(self, index: int) -> dict | None:
        return self.rows[index] if index < len(self.rows) else None

    def row_progress(self, index: int) -> RowProgress:
        current = self.current if self.current and self.current["row"] == index else {}
        return RowProgress(**{k: current[k] for k in ("batches", "correct", "n", "seconds", "outcomes")
                              if k in current})

    def save_progress(self, index: int, attack: str, eps: float, part: RowProgress) -> None:
        self.current = {"row": index, "attack": attack, "eps": eps, **asdict(part)}
        self.write()

    def save_row(self, row: dict) -> None:
        self.rows.append(row)
        self.current = None
        self.write()

    def write(self) -> None:
        if self.path is not None:
            body = {"request": self.request, "rows": self.rows, "current": self.current}
            atomic_write_json(self.path, {"format": STATE_FORMAT, **body, "digest": digest(body)})

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def summary(self) -> str:
        """'2 rows finished, pgd20 eps 0.0314 after 3 batches'."""
        text = f"{len(self.rows)} row{'s' * (len(self.rows) != 1)} finished"
        if self.current:
            text += f", {self.current['attack']} eps {self.current['eps']:.4g} after {self.current['batches']} batches"
        return text


def digest(body: dict) -> str:
    """sha256 of the request, rows and row in progress (canonical JSON): --resume refuses a progress file
    whose rows were edited or damaged instead of reporting them as results."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def state_path(json_path: str | Path) -> Path:
    """Where ``rnas eval --json OUT`` keeps its progress: OUT.state.json."""
    return Path(json_path).with_name(Path(json_path).name + ".state.json")


def read_state(path: Path, request: dict) -> dict | None:
    """The rows and row in progress an interrupted evaluation of the same ``request`` recorded in ``path``
    (None when there is no such file); a file of another request is a one-line UserError naming the first
    setting that differs."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"--resume: {path}: unreadable ({first_line(err)}); rerun without --resume to start over") \
            from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise UserError(f"--resume: {path}: not an rnas eval progress file; rerun without --resume to start over")
    body = {key: saved.get(key) for key in ("request", "rows", "current")}
    if saved.get("digest") != digest(body) or not isinstance(body["rows"], list) \
            or not isinstance(body["current"], dict | None):
        raise UserError(f"--resume: {path}: its rows do not match their digest (edited, damaged, or written by an "
                        "older rnas); rerun without --resume to start over")
    difference = first_difference(body["request"] or {}, request)
    if difference:
        raise UserError(f"--resume: {path} is the progress of another evaluation ({difference}); rerun without "
                        "--resume to start over")
    return {"rows": body["rows"], "current": body["current"]}


def first_difference(old: dict, new: dict) -> str | None:
    """'seed 0 there, 1 now' for the first setting (in ``new``'s order) whose values differ; None if none."""
    for key in [*new, *(k for k in old if k not in new)]:
        if old.get(key) != new.get(key):
            return f"{key} {json.dumps(old.get(key))} there, {json.dumps(new.get(key))} now"
    return None


def open_state(path: Path, request: dict, resume: bool, dist: Dist = SINGLE) -> EvalState:
    """The progress of this evaluation: with ``resume`` what an interrupted run of the same request left in
    ``path`` (read by rank 0, handed to every rank), else a new one that replaces any old file at once.
    Only rank 0 writes it; a bad file stops every rank with rank 0's one-line error."""
    saved = on_every_rank(dist, lambda: read_state(path, request) if resume and dist.main else None)
    if dist.enabled:
        box = [saved]
        torch.distributed.broadcast_object_list(box, src=0)
        saved = box[0]
    state = EvalState(request, path if dist.main else None, **(saved or {}))
    note = _state_note(state, resumed=saved is not None, resume=resume)
    if note and dist.main:
        print(f"rnas: {note}", file=sys.stderr)
    if saved is None:
        state.write()
    return state


def _state_note(state: EvalState, resumed: bool, resume: bool) -> str | None:
    """The line rnas eval prints about its progress file before it starts, if any."""
    if resumed:
        return f"resuming from {state.path}: {state.summary()}"
    if resume:
        return f"--resume: no {state.path}, so no interrupted evaluation to continue: evaluating from the start"
    if state.path is not None and state.path.exists():
        return f"note: replacing {state.path}, the progress of an earlier evaluation (--resume continues one)"
    return None
