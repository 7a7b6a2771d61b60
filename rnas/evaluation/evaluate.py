"""`rnas eval` and `rnas.load_model`: robustness of a trained network under a list of attacks."""
from __future__ import annotations

import contextlib
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rnas.config import defaults, flag, validate
from rnas.config.sections import parse_teacher
from rnas.data import TRAINABLE, ImageTensors, dataset_info, keyed_generator, split_train_val
from rnas.data.splits import SPLITS, HeldOut, carve, held_out_split, requested_splits
from rnas.engine.cost import count_macs
from rnas.errors import UserError
from rnas.evaluation.eval_state import EvalState, RowProgress, open_state, state_path
from rnas.evaluation.results import eps_text, row_label
from rnas.robust.adversarial import convert_to_mbn
from rnas.robust.attacks import (
    CW_STEPS,
    attack_eps,
    attack_steps,
    check_attack,
    parse_eps,
    run_attack,
    takes_channel_budget,
)
from rnas.runtime.device import place
from rnas.runtime.distributed import SINGLE, Dist, device_name, join_job
from rnas.runtime.rundir import (
    TRAIN_CHECKPOINT,
    OutputLock,
    atomic_write_json,
    check_output_file,
    first_line,
    load_checkpoint,
    require_finite,
)
from rnas.teachers import TrainableTeacher, load_teacher, teacher_arch
from supernets import Normalize, build_model


def load_model(path: str | Path) -> nn.Module:
    """The trained network of an rnas checkpoint (retrain or teacher training) as an nn.Module on
    [0, 1] images, in eval mode; its architecture is rebuilt from the checkpoint's own description."""
    ckpt = load_checkpoint(Path(path))
    if not isinstance(ckpt, dict) or ckpt.get("format") != TRAIN_CHECKPOINT:
        raise UserError(f"{path}: not an rnas model checkpoint (from rnas retrain or rnas teacher train); "
                        "for a RobustBench file use rnas eval --teacher NAME")
    kinds = {"retrain": "arch", "teacher train": "teacher_arch"}  # the commands that write model checkpoints
    kind = ckpt.get("kind")
    if kind not in kinds:
        raise UserError(f"{path}: kind {kind!r}: an rnas model checkpoint is of kind retrain or teacher train")
    for key, expected in ((kinds[kind], dict if kind == "retrain" else str), ("model", dict),
                          ("config", (dict, type(None)))):
        if not isinstance(ckpt.get(key), expected):
            raise UserError(f"{path}: its {key!r} is a {type(ckpt.get(key)).__name__} (a damaged or edited "
                            "checkpoint)")
    try:
        if kind == "retrain":
            model = build_model(ckpt["arch"])
            if ckpt.get("mbn"):
                convert_to_mbn(model)
        else:
            data = ckpt.get("data")
            model = TrainableTeacher(teacher_arch(ckpt["teacher_arch"], data), dataset_info(data).num_classes)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: its {kinds[kind]} cannot be built ({type(err).__name__}: {first_line(err)})") \
            from None
    try:
        model.load_state_dict(ckpt["model"])
        require_finite(ckpt["model"], path)
    except (RuntimeError, KeyError, TypeError) as err:
        mbn = " (is its mbn flag right?)" if kind == "retrain" else ""
        raise UserError(f"{path}: its weights do not fit its {kinds[kind]}{mbn}: {first_line(err, 200)}") from None
    model.rnas_checkpoint = {k: ckpt.get(k) for k in ("kind", "config", "arch")}
    return model.eval()


def batch_generator(device, seed: int, index: int) -> torch.Generator:
    """Random starts of batch ``index``: a stream of (seed, index) alone, so a batch's numbers do not depend
    on which rank evaluates it or on the batches before it (batch 0 uses ``seed`` itself)."""
    if index == 0:
        return torch.Generator(device).manual_seed(seed)
    return keyed_generator(torch.device(device), seed, index)


def input_std(model: nn.Module, what: str = "the model") -> torch.Tensor:
    """Per-channel std [1, C, 1, 1] of the model's input normalisation (its first supernets.Normalize: rnas
    networks and rnas.teachers wrappers both keep one), on the model's device and dtype."""
    norm = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    if norm is None:
        raise UserError(f"--eps-space normalized: {what} has no input normalisation (no mean/std inside the "
                        "model), so normalised and pixel units are the same; use --eps-space pixel")
    return norm.std.detach().clone(memory_format=torch.contiguous_format)


def evaluate(model: nn.Module, batches, attacks: list[str], eps_values: list[float], progress=None, *,
             cw_steps: int = CW_STEPS, seed: int = 0, dist: Dist = SINGLE,
             eps_scale: torch.Tensor | None = None, state: EvalState | None = None, watch=None) -> list[dict]:
    """Accuracy (%) per (attack, eps) row; ``batches()`` yields (x in [0, 1], y) on the model's device.
    ``eps_scale`` [1, C, 1, 1] (the input std, for --eps-space normalized): l_inf attacks run at the
    per-channel pixel budget eps·eps_scale, recorded as the row's ``pixel_eps``; ``eps`` stays nominal.
    Under torchrun rank r attacks batches r, r + W, ... and after every round of W batches each image's
    outcome (right or wrong) is gathered over the ranks, in image order; each row keeps them as ``hits``.
    ``state`` (rnas eval --json) records each round: the rows it holds as finished are taken from it, and the
    row in progress continues after its recorded batches. ``watch(name, eps, part)`` is called when a row
    starts (``part`` as resumed) and after every round of batches (the CLI's progress)."""
    state = EvalState() if state is None else state
    rows = []
    for index, (name, eps) in enumerate(attack_rows(attacks, eps_values)):
        row = state.finished_row(index)
        if row is None:
            part = state.row_progress(index)

            def save(part: RowProgress, index=index, name=name, eps=eps) -> None:
                state.save_progress(index, name, eps, part)
                if watch:
                    watch(name, eps, part)
            if watch:
                watch(name, eps, part)
            row = _evaluate_row(model, batches, name, eps, part, save, cw_steps=cw_steps, seed=seed,
                                dist=dist, eps_scale=eps_scale)
            state.save_row(row)
        rows.append(row)
        if progress:
            progress(row)
    return rows


def attack_rows(attacks: list[str], eps_values: list[float]) -> list[tuple[str, float]]:
    """The (attack, eps) rows of an evaluation, in order: clean once (eps 0), every other attack at each eps."""
    return [(name, eps) for name in attacks for eps in ([0.0] if name == "clean" else eps_values)]


def _evaluate_row(model: nn.Module, batches, name: str, eps: float, part: RowProgress, save, *, cw_steps: int,
                  seed: int, dist: Dist, eps_scale: torch.Tensor | None) -> dict:
    """The result row of ``name`` at ``eps``, continuing ``part`` (``save(part)`` after every round)."""
    start, before = time.perf_counter(), part.seconds
    budget = attack_eps(name, eps)
    per_channel = eps_scale is not None and takes_channel_budget(name)
    pixel_budget = budget * eps_scale if per_channel else budget

    def attack(index: int, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        generator = batch_generator(xb.device, seed, index)
        x_adv = run_attack(name, model, xb, yb, pixel_budget, cw_steps=cw_steps, seed=seed, generator=generator)
        with torch.no_grad():
            return model(x_adv).argmax(1) == yb

    def on_round(right: torch.Tensor, done: int) -> None:
        part.add(right, done, before + time.perf_counter() - start)
        save(part)

    _attack_batches(batches, attack, part.batches, dist, on_round)
    seconds = before + dist.max(torch.tensor([time.perf_counter() - start])).item()
    steps = attack_steps(name, cw_steps)
    return {"attack": name, "eps": budget, **({"pixel_eps": pixel_budget.flatten().tolist()} if per_channel else {}),
            **({"steps": steps} if steps else {}), "accuracy": round(100.0 * part.correct / part.n, 2),
            "n": part.n, "seconds": round(seconds, 2), **part.packed_hits()}


def _attack_batches(batches, attack, first: int, dist: Dist, on_round) -> None:
    """``attack(index, x, y)`` -> [images] bool, whether each is classified right, on the batches from index
    ``first`` on, this rank taking every W-th of them; after each round of W batches (and after the last
    batch) the round's flags in image order, gathered over the ranks (each image attacked by one rank, summed),
    go to ``on_round(flags, batches done)``. Batches before ``first`` are skipped unattacked."""
    pending, done = [], first
    for index, (xb, yb) in enumerate(batches()):
        if index < first:
            continue
        mine = (index - first) % dist.world == dist.rank
        pending.append(attack(index, xb, yb).to("cpu", torch.long) if mine else torch.zeros(len(yb), dtype=torch.long))
        done = index + 1
        if (done - first) % dist.world == 0:
            on_round(dist.sum(torch.cat(pending)) > 0, done)
            pending = []
    if pending:
        on_round(dist.sum(torch.cat(pending)) > 0, done)


def eval_request(cfg: EvalConfig, data_settings: dict) -> dict:
    """What an evaluation computes, recorded in its progress file: --resume continues only the same request."""
    checkpoint = Path(cfg.checkpoint)
    stat = checkpoint.stat()
    return {"checkpoint": str(checkpoint.resolve()), "checkpoint_size": stat.st_size,
            "checkpoint_mtime_ns": stat.st_mtime_ns, "teacher_arch": cfg.teacher_arch, **data_settings,
            "batch_size": cfg.batch_size, "attacks": cfg.attack_list(), "eps": cfg.eps_values(),
            "eps_space": cfg.eps_space, "cw_steps": cfg.cw_steps, "seed": cfg.seed}


AA_VERSIONS = ("standard", "rand", "plus")


@dataclass
class EvalConfig:
    checkpoint: str = flag("", "rnas checkpoint (or a RobustBench file with --teacher)")
    attacks: str = flag("clean,fgsm,pgd20,mifgsm,cw,autoattack", "comma-separated attacks")
    eps: float = flag(defaults.EPS, "l_inf budget in pixel units (see --eps-space)", parse=parse_eps, range=">= 0")
    eps_space: str = flag("pixel", "units of --eps / --eps-sweep for the l_inf attacks: pixel (the standard threat "
                          "model, [0, 1] images) or normalized (the official RNAS-CL protocol: eps on the normalised "
                          "input, a per-channel pixel budget eps·std; no AutoAttack)", choices=("pixel", "normalized"))
    aa_version: str = flag("standard", "the AutoAttack version of --attacks autoattack: standard (the RobustBench "
                           "protocol), rand (randomised defences) or plus (more restarts and targets); the results "
                           "name it (autoattack-rand, autoattack-plus)", choices=AA_VERSIONS)
    eps_sweep: list[str] | None = flag(None, "several budgets, e.g. 2/255 4/255 8/255 (replaces --eps)")
    n: int | None = flag(None, "evaluate the first N images of the split (--num-images under torchrun, whose own "
                         "flags make --n ambiguous)", range=">= 1", aliases=("--num-images",))
    split: str = flag("auto", "auto: the report split of a run with --val-report, else the official test split when "
                      "it is on disk, else val; val: the tail of train the run validated on (its select split with "
                      "--val-select); select / report: the held-out splits of --val-select / --val-report; test: the "
                      "official test split", choices=("auto", "val", "select", "report", "test"))
    data: str | None = flag(None, "dataset (default: the checkpoint's)", choices=TRAINABLE)
    data_dir: str | None = flag(None, "dataset root (default: the checkpoint's)")
    val_size: int | None = flag(None, "validation size (default: the checkpoint's)", range=">= 0")
    val_select: int | None = flag(None, "select split size (default: the checkpoint's)", range=">= 0")
    val_report: int | None = flag(None, "report split size (default: the checkpoint's)", range=">= 0")
    split_seed: int | None = flag(None, "seed of the select / report draw (default: the checkpoint's)", range=">= 0")
    split_pool: int | None = flag(None, "the select / report draw's pool (default: the checkpoint's)", range=">= 1")
    batch_size: int = flag(500, "evaluation batch size", range=">= 1")
    json: str | None = flag(None, "also write the results to this JSON file")
    teacher_arch: str | None = flag(None, "treat CHECKPOINT as a teacher of this architecture (a zoo name, "
                                    "robustbench:NAME, timm:NAME, or a YAML file naming one)", cli="--teacher",
                                    aliases=("--teacher-arch",), parse=parse_teacher)
    device: str = flag("auto", "auto (cuda when present, else cpu), cpu, cuda, cuda:N")
    seed: int = flag(0, "random seed of the PGD / CW random starts and of AutoAttack (recorded in --json)",
                     range=">= 0")
    cw_steps: int = flag(CW_STEPS, f"steps of the cw attack; {CW_STEPS} is the seeds' CW-{CW_STEPS} "
                         "(RobustResNets evaluate CW-40)", range=">= 1")


    def attack_list(self) -> list[str]:
        """The attacks of ``--attacks``, each checked (a one-line UserError for a typo or an empty list)."""
        attacks = [a.strip() for a in self.attacks.split(",") if a.strip()]
        if self.aa_version != "standard":
            attacks = [f"autoattack-{self.aa_version}" if a == "autoattack" else a for a in attacks]
        if not attacks:
            raise UserError(f"--attacks {self.attacks!r}: empty list (give at least one, e.g. clean,pgd20)")
        for name in attacks:
            try:
                check_attack(name)
            except UserError as err:
                raise UserError(f"--attacks: {err}") from None
        return attacks

    def eps_values(self) -> list[float]:
        """The budgets of ``--eps-sweep`` (or ``--eps``): > 0 unless the only attack is clean."""
        values = [parse_eps(e) for e in self.eps_sweep] if self.eps_sweep else [self.eps]
        if self.eps_sweep is not None and not self.eps_sweep:
            raise UserError("--eps-sweep: empty list (give budgets such as 2/255 4/255, or drop the flag)")
        flag_ = "--eps-sweep" if self.eps_sweep else "--eps"
        for eps in values:
            if not (0 <= eps <= 1):
                raise UserError(f"{flag_} {eps:g}: must be in [0, 1] (pixel units, e.g. 8/255)")
            if eps == 0 and self.attack_list() != ["clean"]:
                raise UserError(f"{flag_} 0: attacks need a budget > 0 (0 only makes sense for --attacks clean)")
        return values

    def check(self) -> None:
        """Cross-field checks and the --json destination, before any model or data is read."""
        self.attack_list()
        self.eps_values()
        if self.eps_space == "normalized":
            for name in self.attack_list():
                if name != "clean" and not takes_channel_budget(name):
                    raise UserError(f"--attacks {name}: not offered with --eps-space normalized (pyautoattack takes "
                                    "one scalar pixel budget, not a per-channel one); drop it or use --eps-space pixel")
        if self.json:
            check_output_file(self.json, "--json", lambda path: is_earlier_result(path, self.checkpoint),
                              f"an earlier rnas eval result of {self.checkpoint}")


def is_earlier_result(path: Path, checkpoint: str) -> bool:
    """Whether ``path`` is what ``rnas eval CHECKPOINT --json`` wrote: a JSON object with its results, for
    the same checkpoint file (which --json may then replace; anything else it must not)."""
    try:
        with open(path, "rb") as fh:
            saved = json.loads(fh.read(1 << 24))
    except (OSError, ValueError):
        return False
    return (isinstance(saved, dict) and isinstance(saved.get("results"), list)
            and isinstance(saved.get("checkpoint"), str)
            and Path(saved["checkpoint"]).resolve() == Path(checkpoint).resolve())


def run_eval(cfg: EvalConfig, out=print, progress=None, resume: bool = False) -> dict:
    """Evaluate ``cfg.checkpoint``: the table through ``out`` (a line per attack and eps), each result row
    also to ``progress(row)`` when given; the result dict (written to ``cfg.json`` when set). With ``cfg.json``
    the progress is recorded batch by batch in OUT.state.json (deleted once the JSON is written), and
    ``resume`` continues the interrupted evaluation recorded there."""
    if resume and not cfg.json:
        raise UserError("--resume continues the evaluation whose progress is kept beside --json OUT: give the "
                        "interrupted run's --json")
    validate(cfg)  # fail fast on a typo or a bad number, before anything is read
    attacks, eps_values = cfg.attack_list(), cfg.eps_values()
    device, dist = join_job(cfg.device)
    if not dist.main:
        out = _silent
    torch.manual_seed(cfg.seed)
    saved = {}
    if cfg.teacher_arch:
        model = load_teacher(cfg.teacher_arch, cfg.checkpoint, dataset=cfg.data or "cifar10")
    else:
        model = load_model(cfg.checkpoint)
        saved = model.rnas_checkpoint["config"] or {}
    data = cfg.data or saved.get("data") or "cifar10"
    outputs = ((getattr(model, "rnas_checkpoint", None) or {}).get("arch") or {}).get("num_classes")
    if isinstance(outputs, int) and data in TRAINABLE and outputs != dataset_info(data).num_classes:
        raise UserError(f"{cfg.checkpoint}: a net with {outputs} outputs; {data} has "
                        f"{dataset_info(data).num_classes} classes")
    data_dir = cfg.data_dir or saved.get("data_dir")
    val_size = cfg.val_size if cfg.val_size is not None else saved.get("val_size")
    splits = requested_splits(*[getattr(cfg, k) if getattr(cfg, k) is not None else saved.get(k)
                                for k in ("val_select", "val_report", "split_seed", "split_pool")], val_size)
    split, source, val_images = resolve_split(data, data_dir, cfg.split, val_size) if splits is None else \
        (*held_out_split(cfg.split, splits, dataset_info(data), data_dir), None)
    held = {} if splits is None else splits.record()
    batches, n, size = eval_batches(data, data_dir, split, val_size, cfg.n, cfg.batch_size, device, splits)
    if n == 0:
        raise UserError(f"{data} {split}: no images to evaluate (check --n and --val-size)")
    model = place(model, device).eval()
    eps_scale = input_std(model, cfg.checkpoint) if cfg.eps_space == "normalized" else None
    if eps_scale is not None and dist.main:
        print(f"rnas: warning: {normalized_warning(eps_values, eps_scale)}", file=sys.stderr)
    arch = (getattr(model, "rnas_checkpoint", None) or {}).get("arch") or {}
    params = sum(p.numel() for p in model.parameters())
    macs = arch.get("macs") or count_macs(model, size, device)
    settings = {"data": data, "data_dir": data_dir and str(Path(data_dir).resolve()), "split": split,
                "val_size": val_size, "n": n, **held}
    lock = OutputLock(Path(cfg.json), f"--json {cfg.json}") if cfg.json and dist.main else contextlib.nullcontext()
    with lock:  # a second rnas eval writing the same --json is refused
        state = open_state(state_path(cfg.json), eval_request(cfg, settings), resume, dist) if cfg.json else None
        out(f"{cfg.checkpoint}: {params / 1e6:.3f}M params, {macs / 1e6:.2f}M MACs; {data} {split}: {source}; "
            f"n={n}, seed {cfg.seed}")
        out(f"{'attack':14s} {'eps':>9s} {'accuracy %':>10s} {'n':>6s} {'seconds':>8s}")
        def report(r: dict) -> None:
            out(f"{row_label(r):14s} {eps_text(r['eps'], 'pixel_eps' in r):>9s} {r['accuracy']:10.2f} {r['n']:6d} "
                f"{r['seconds']:8.1f}")
            if progress is not None:
                progress(r)

        with _interrupt_note(state):
            with RowWatch(n, enabled=dist.main and progress is None) as watch:
                rows = evaluate(model, batches, attacks, eps_values, cw_steps=cfg.cw_steps, seed=cfg.seed,
                                dist=dist, eps_scale=eps_scale, progress=report, state=state, watch=watch)
        result = {"checkpoint": str(cfg.checkpoint), "params": params, "macs": macs, "data": data, "split": split,
                  "split_source": source, "val_size": val_images, **held, "n": n,
                  "seed": cfg.seed, "eps_space": cfg.eps_space, "device": device_name(device, dist),
                  # cuDNN's TF32 convolutions (PyTorch's default on CUDA) round differently from full fp32
                  "tf32": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None, "results": rows}
        if cfg.json and dist.main:
            atomic_write_json(Path(cfg.json), result)
            state.remove()
        return result


class RowWatch:
    """Progress of the row being attacked, on stderr: on a terminal a bar of images named by the row from its
    start (AutoAttack on a few hundred images runs for minutes); in a log, a line after a round of batches
    once ``every`` seconds have passed since the row started or the last line."""

    def __init__(self, n: int, enabled: bool = True, every: float = 10.0):
        self.n, self.enabled, self.every, self.terminal = n, enabled, every, sys.stderr.isatty()
        self.bar, self.row, self.last = None, None, 0.0

    def __enter__(self):
        return self if self.enabled else None

    def __exit__(self, *exc):
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, name: str, eps: float, part: RowProgress) -> None:
        label = f"{name} {eps_text(eps)}" if name != "clean" else name
        if (name, eps) != self.row:  # a row starts (or resumes)
            self._close()
            self.row, self.last = (name, eps), time.monotonic()
            if self.terminal:
                from tqdm import tqdm

                self.bar = tqdm(total=self.n, initial=part.n, desc=label, unit="img", leave=False)
            return
        if self.bar is not None:
            self.bar.update(part.n - self.bar.n)
        elif part.n < self.n and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            print(f"rnas eval: {label}: {part.n}/{self.n} images, {100.0 * part.correct / part.n:.1f} % so far, "
                  f"{part.seconds:.0f} s", file=sys.stderr, flush=True)


def normalized_warning(eps_values: list[float], std: torch.Tensor) -> str:
    """Why --eps-space normalized is not the standard threat model, with the pixel budgets it implies."""
    budgets = [", ".join(f"{eps * s * 255:.1f}/255" for s in std.flatten().tolist()) for eps in eps_values]
    nominal = ", ".join(eps_text(eps) for eps in eps_values)
    implies = f"is a pixel budget of {budgets[0]}" if len(budgets) == 1 else \
        "are pixel budgets of " + " and ".join(f"({b})" for b in budgets)
    return (f"--eps-space normalized is the official RNAS-CL protocol, not the standard threat model: eps {nominal} "
            f"on normalised inputs {implies} per channel (table rows marked 'n')")


@contextmanager
def _interrupt_note(state: EvalState | None):
    """On Ctrl-C (KeyboardInterrupt, re-raised), one line on where the finished batches are kept."""
    try:
        yield
    except KeyboardInterrupt:
        if state is not None and state.path is not None:
            print(f"rnas: interrupted; {state.path} keeps the finished batches ({state.summary()}): the same "
                  "command with --resume continues", file=sys.stderr)
        raise


def _silent(*args) -> None:
    """Output of ranks other than 0."""


def resolve_split(data: str, data_dir, split: str, val_size: int | None) -> tuple[str, str, int | None]:
    """(val or test, why, N): ``auto`` is the official test split when it is on disk, the validation split
    otherwise. N is the val split's "last N training images" (recorded so that two results can be told to
    be of the same images); None for the test split or a dataset with a held-out val split of its own."""
    if split in SPLITS:
        raise UserError(f"--split {split}: the run has no held-out {split} split (trained without --val-select / "
                        "--val-report)")
    info = dataset_info(data)
    if info.held_out_val:  # one held-out split (e.g. an ImageFolder's val/), which retrain validates on as well
        where = f"{info.description} {info.test_name}"
        return ("val", f"{where} (--split val)", None) if split == "val" else \
            ("test", f"official test split ({where}{', --split test' if split == 'test' else ''})", None)
    if split == "auto":
        split, why = ("test", f"{info.test_name} found") if info.has_test(data_dir) else \
            ("val", "no official test split on disk" if info.test_name else f"{data} has no official test split")
    else:
        why = f"--split {split}"
    if split == "test":
        return "test", f"official test split ({why})", None
    size = info.validation_size(val_size)
    return "val", f"validation split: last {size} training images ({why})", size


def _first_n(n: int | None, split: str, available: int) -> int:
    """How many images ``--n`` takes from a split of ``available``: all of them without --n; more is an error."""
    if n is not None and n > available:
        raise UserError(f"--n {n}: the {split} split has only {available} images; give --n {available} or less "
                        "(or drop --n for all of them)")
    return available if n is None else n


def eval_batches(data: str, data_dir, split: str, val_size: int | None, n: int | None, batch_size: int, device,
                 splits: HeldOut | None = None):
    """(batches(), n, image side) for the first ``n`` images of ``val`` (tail of train, or the held-out split
    of a dataset validated on it), ``select`` / ``report`` (``splits``) or ``test`` (the official held-out split)."""
    info = dataset_info(data, trainable=True)
    images = info.read(data_dir, "test" if split == "test" or info.held_out_val else "train", False)
    if not isinstance(images, ImageTensors):  # a folder dataset, read by DataLoader workers
        subset = torch.utils.data.Subset(images, range(_first_n(n, split, len(images))))

        def folder_batches():
            for xb, yb in torch.utils.data.DataLoader(subset, batch_size, num_workers=2):
                yield xb.to(device), yb.to(device)
        return folder_batches, len(subset), info.input_size
    if split in SPLITS:
        images = carve(images, splits, None)[split]
    elif split == "val":
        _, images = split_train_val(images, info.validation_size(val_size), None)
    n = _first_n(n, split, len(images))
    x, y = images.images[:n].to(device), images.labels[:n].to(device)

    def tensor_batches():
        for i in range(0, n, batch_size):
            yield x[i:i + batch_size].to(torch.get_default_dtype()).div(255), y[i:i + batch_size]
    return tensor_batches, n, x.shape[-1]
