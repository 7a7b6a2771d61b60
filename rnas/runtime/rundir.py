"""Run directories: atomic checkpoints, RNG state, metrics.jsonl, TensorBoard events, signals, and JSON and text
files read with a one-line error naming them (read_json, read_text)."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import re
import signal
import weakref
from pathlib import Path

import numpy as np
import torch

from rnas.errors import UserError
from search_spaces.errors import not_text

# the format tags of the files rnas writes; a reader refuses a file whose tag it does not know
SEARCH_CHECKPOINT = "rnas-search-1"  # RUN/checkpoint.pt of rnas search
TRAIN_CHECKPOINT = "rnas-train-1"  # RUN/checkpoint.pt of rnas retrain and rnas teacher train
STUDY_STATE = "rnas-study-1"  # STUDY/study.json


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename over ``path``: a reader
    (or a crash at any moment) sees either the old complete file or the new complete file. Serialised in
    memory first: torch.save's own writer turns a full disk into an unreadable RuntimeError, a plain write
    into ENOSPC."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, lambda fh: fh.write(buffer.getbuffer()), fault_point=True)


def atomic_write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON in ``path``, written as atomically as ``atomic_save``."""
    _atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=1) + "\n").encode()))


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` in ``path``, written as atomically as ``atomic_save``."""
    _atomic_write(path, lambda fh: fh.write(text.encode()))


def _atomic_write(path: Path, write, fault_point: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with no_space_in(path), open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as err:  # a full disk, Ctrl-C: no partial temp file is left (SIGKILL leaves one)
        with contextlib.suppress(OSError):  # a read-only file system refuses even the unlink
            tmp.unlink()
        if isinstance(err, OSError) and err.errno in NOT_WRITABLE:
            raise UserError(f"{path}: cannot write it ({err.strerror}); nothing there was changed") from None
        raise
    if fault_point:
        _fault_point()
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


RUN_KEPT = "the run's checkpoint.pt of its last saved step is intact"
RESUME_ADVICE = "free space, then run again; a run continues exactly with --resume"


class DiskFull(UserError):
    """A write that found no space: which file, and that the file as it was before is intact."""

    def __init__(self, path: Path, err: OSError, kept: str | None = None, then: str = RESUME_ADVICE):
        if kept is None:
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        super().__init__(f"{path}: {err.strerror or 'no space left on device'} while writing it; {kept} ({then})")


@contextlib.contextmanager
def no_space_in(path: Path, kept: str | None = None, then: str = RESUME_ADVICE):
    """A full disk while writing ``path`` becomes DiskFull naming it (``kept``: what is intact, ``then``: what to
    do); other OS errors pass."""
    try:
        yield
    except OSError as err:
        if err.errno in NO_SPACE:
            raise DiskFull(path, err, kept, then) from None
        raise


_saves = 0


def _fault_point() -> None:
    """Fault injection for the kill/resume tests: with RNAS_KILL_AT_SAVE=N the process SIGKILLs itself in
    its N-th checkpoint write, after the temp file is written and before it replaces the checkpoint."""
    global _saves
    _saves += 1
    if os.environ.get("RNAS_KILL_AT_SAVE") == str(_saves):
        os.kill(os.getpid(), signal.SIGKILL)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by rnas (weights-only load); anything else is a one-line UserError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a checkpoint file") from None
    except Exception as err:  # truncated / foreign file
        raise UserError(f"{path}: {unreadable_reason(path, err)}") from None


ZIP_MAGIC, PICKLE_PROTOCOL_2_PLUS = b"PK\x03\x04", b"\x80"


def first_line(err: BaseException, limit: int = 120) -> str:
    """The first non-empty line of an exception's message (its type name when the message is empty)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return (lines[0].strip() if lines else type(err).__name__)[:limit]


def unreadable_reason(path: Path, err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words that fit the file: empty, not a torch
    file at all, refused because unpickling it would run code, or damaged."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as os_err:
        return f"cannot read it ({os_err.strerror})"
    if size == 0:
        return "empty file (0 bytes), not a checkpoint"
    if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_PROTOCOL_2_PLUS)):
        return "not a torch checkpoint (no torch.save zip or pickle header)"
    if "weights_only" in str(err) or "Unsupported global" in str(err):
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        return ("refused: the file needs arbitrary code to unpickle"
                + (f" (it pickles {found[1]})" if found else "") + " and is loaded with weights_only=True")
    return f"damaged or truncated checkpoint ({first_line(err)})"


def resume_checkpoint(run: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from: None for a new run and for a run stopped before its first checkpoint
    (which then starts again from step 0 with its own config.yaml)."""
    path = run / "checkpoint.pt"
    return load_checkpoint(path) if resume and path.exists() else None


class RunLock:
    """An exclusive lock on RUN/.lock for the life of a run: a second process writing the same run directory
    (a second --resume, or a new run into it) is refused with one line instead of interleaving. A forked child
    (a DataLoader worker) closes its copy at once, so a run killed with -9 frees its directory immediately,
    not when its orphaned workers notice and exit."""

    held: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, run: Path):
        self.path = run / ".lock"
        self.fh = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise UserError(f"{self.path.parent}: in use by another rnas process (wait for it or stop it)") from None
        RunLock.held.add(self)
        return self

    def __exit__(self, *exc):
        RunLock.held.discard(self)
        self.fh.close()  # closing releases the lock

    @staticmethod
    def _close_in_child() -> None:
        """After a fork, in the child: close the inherited lock descriptors (the parent keeps its lock)."""
        for lock in list(RunLock.held):
            lock.fh.close()
        RunLock.held = weakref.WeakSet()


os.register_at_fork(after_in_child=RunLock._close_in_child)


class OutputLock:
    """An exclusive lock on an output file that a command writes over minutes (``rnas eval --json OUT`` and
    its progress file): a second process writing the same output is refused with one line. The lock file
    ``.OUT.lock`` beside it is removed on exit; a lock taken on a file another process has just removed is
    detected (its inode is no longer the path's) and taken again."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path.with_name(f".{path.name}.lock"), what
        self.fh = None

    def __enter__(self) -> OutputLock:
        import fcntl

        while True:
            fh = open(self.path, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise UserError(f"{self.what}: in use by another rnas process (wait for it or choose another "
                                "file)") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fh = fh
                return self
            fh.close()

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        self.fh.close()


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states, in a weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": [list(random.getstate()[1]), random.getstate()[0]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    internal, version = state["python"]
    random.setstate((version, tuple(internal), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_of(line: str) -> int | None:
    """The epoch of a metrics.jsonl line; None for a line that is not a record (a partial last line left by
    a kill or a full disk, or a damaged one): such lines are dropped when a run resumes."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


class Metrics:
    """metrics.jsonl (one JSON object per line) plus TensorBoard events under RUN/tb."""

    def __init__(self, run: Path, resume_epoch: int | None = None, sinks: list | None = None):
        self.path = run / "metrics.jsonl"
        if resume_epoch is not None and self.path.exists():  # drop lines of epochs that will be redone
            kept = [line for line in self.path.read_text(errors="replace").splitlines()
                    if _epoch_of(line) is not None and _epoch_of(line) < resume_epoch]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        with no_space_in(run / "tb", RUN_KEPT):
            self.tb = SummaryWriter(str(run / "tb"))
        self.sinks = list(sinks or [])  # W&B, MLflow (rnas.runtime.loggers): the same scalars

    def write(self, record: dict) -> None:
        with no_space_in(self.path, RUN_KEPT), open(self.path, "a") as fh:  # a partial last line is skipped
            fh.write(json.dumps(record) + "\n")  # by --resume and rnas report

    def scalars(self, values: dict[str, float], step: int) -> None:
        with self._writing_events():
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        for sink in self.sinks:
            sink.scalars(values, step)

    def settings(self, config: dict, metrics: tuple[str, ...] = ("epoch/val_acc",)) -> None:
        """The run's resolved config in TensorBoard: as text (every key) and in the HParams dashboard (the
        scalar settings, against ``metrics``, the epoch scalars of the same names)."""
        from torch.utils.tensorboard.summary import hparams

        text = "\n".join(f"    {k}: {v!r}" for k, v in config.items())  # indented: markdown shows it verbatim
        scalars = {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str))}
        with self._writing_events():
            self.tb.add_text("config", text, 0)
            writer = self.tb._get_file_writer()
            for summary in hparams(scalars, dict.fromkeys(metrics, 0.0)):
                writer.add_summary(summary)

    def close(self, failed: bool = False) -> None:
        """Flush and close; ``failed``: the run is already ending in an error, which a failed flush (of a
        full disk, say) must not replace."""
        try:
            with self._writing_events():
                self.tb.close()
        except (OSError, DiskFull):
            if not failed:
                raise
        for sink in self.sinks:
            sink.close()

    def _writing_events(self):
        """TensorBoard's writer thread reports a failed write at the next call: name the folder."""
        return no_space_in(Path(self.tb.log_dir), RUN_KEPT)


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps (then checkpoints and exits)."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def holds_run(run: Path) -> bool:
    """Whether ``run`` already holds a run (its config.yaml or checkpoint.pt)."""
    return (run / "checkpoint.pt").exists() or (run / "config.yaml").exists()


def prepare_run_dir(out: str | Path, resume: bool) -> Path:
    """The run directory: must not already hold a run unless resuming (a run stopped before its first
    checkpoint resumes from step 0 with its config.yaml). Nothing is written here."""
    run = Path(out)
    if resume:
        if not (run / "checkpoint.pt").is_file() and not (run / "config.yaml").is_file():
            raise UserError(f"--resume {run}: not a run directory (no checkpoint.pt, no config.yaml)")
    elif holds_run(run):
        raise UserError(f"--out {run}: already holds a run; resume it with --resume {run} or choose another --out")
    elif run.exists() and not run.is_dir():
        raise UserError(f"--out {run}: exists and is not a directory")
    elif run.is_symlink() and not run.exists():
        raise UserError(f"--out {run}: a symbolic link to {os.readlink(run)}, which does not exist")
    check_can_create(run, "--out")
    return run


def check_can_create(path: Path, flag: str, given=None) -> None:
    """One-line UserError unless ``path`` can be created: its nearest existing ancestor (or itself) is a
    writable directory, and its name is UTF-8 (config.yaml and TensorBoard record it). Checked before anything
    runs, so a long job never fails at its first write. The message names ``flag`` and the value the user gave
    (``given``, default ``path``)."""
    given = path if given is None else given
    resolved = Path(path).resolve()
    try:
        str(resolved).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UserError(f"{flag} {shown}: the path is not valid UTF-8 (config.yaml and TensorBoard "
                        "record it); choose a UTF-8 name") from None
    existing = next(p for p in [path, *resolved.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"{flag} {given}: {existing} is not a writable directory (checked before anything runs)")


def check_output_file(given, flag: str, replaceable, what: str) -> None:
    """The file a command will write (``flag given``), checked before anything runs: a file name, not a
    directory, in a directory that exists and is writable; where the file exists, one ``replaceable(path)``
    says this command wrote (``what`` names it, e.g. "an earlier rnas compare result"), or, with
    ``replaceable`` None, none may be replaced (``what`` names the command, e.g. "rnas export"). Anything
    else is a one-line UserError, and a file the command did not write is never overwritten."""
    path = Path(given)
    folder = path.resolve().parent
    if path.is_dir():
        raise UserError(f"{flag} {given}: is a directory (give a file name)")
    if not folder.is_dir():
        raise UserError(f"{flag} {given}: directory {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{flag} {given}: directory {folder} is not writable")
    if path.exists() and replaceable is None:
        raise UserError(f"{flag} {given}: already exists; {what} does not overwrite (remove it or choose another "
                        "name)")
    if path.exists() and not replaceable(path):
        raise UserError(f"{flag} {given}: exists and is not {what}; choose another file (nothing was changed)")


def require_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights with NaN or inf (a model saved after its training diverged): they cannot teach, and
    an evaluation of them reports meaningless accuracies."""
    floating = [(k, v) for k, v in state.items() if v.is_floating_point()]
    if not floating:
        return
    finite = torch.stack([torch.isfinite(v).all() for _, v in floating])
    if not bool(finite.all()):
        bad = [k for (k, _), ok in zip(floating, finite.tolist(), strict=True) if not ok]
        shown = ", ".join(bad[:4]) + (f", ... (+{len(bad) - 4} more)" if len(bad) > 4 else "")
        raise UserError(f"{path}: {shown} hold NaN or inf values (saved after its training diverged?); "
                        "refused")


def read_text(path: Path) -> str:
    """A text file's contents, or a one-line UserError naming it (unreadable, or not UTF-8: a binary file)."""
    try:
        return path.read_text()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: {not_text(err)}") from None


def read_json(path: Path) -> dict | list:
    """A JSON file, or a one-line UserError naming it."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: unreadable JSON ({err.msg} at line {err.lineno})") from None
