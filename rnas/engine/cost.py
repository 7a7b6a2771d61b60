"""What training costs, measured as it happens: images through the student's forward and backward passes
(training steps and attack steps alike), images through the teacher, and the MACs these add up to.

A forward hook on the student counts every image it forwards and, when the output is part of a graph,
hangs a gradient hook on it that counts the images once a backward pass reaches it (a training backward
or an attack's input gradient); a forward pre-hook on the teacher counts its images. MACs: a forward of
one image costs the model's conv + linear MACs (``count_macs``: for a supernet its
max-width network, which is what its masked forward computes) and a backward twice that. ``ce_epochs``
expresses the total in epochs of plain CE training of the same student on the same training set
(3 x MACs per image per epoch), the unit in which a study matches arms on compute, and ``mac_epochs`` the
training MACs per training image (cost.json); ``total_seconds`` the
run's wall-clock training seconds (the epochs' own, summed across resumes). Every epoch's record carries the
epoch's counts and the run's totals (metrics.jsonl), and RUN/cost.json the totals alone (``summary``).

Not counted, as validation is not: the measurements a run makes of itself, e.g. the attention term's
gradient share (one extra backward of that term every ``--log-every`` steps: it never reaches the
student's output); their wall-clock is in the seconds.
"""
from __future__ import annotations

import contextlib

import torch

COUNTS = ("student_fwd_images", "student_bwd_images", "teacher_fwd_images")
COST_FORMAT = "rnas-cost-1"


def count_macs(model: torch.nn.Module, size: int, device) -> int:
    """Conv + linear MACs of one image (independent count: FlopCounterMode / 2), in eval mode and with the
    random number generators restored after, so counting changes neither BN statistics nor any later draw."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()
        try:
            model(torch.zeros(1, 3, size, size, device=device))
        finally:
            model.train(was_training)
    return counter.get_total_flops() // 2


def training_macs(counts: dict, student_macs: int, teacher_macs: int) -> int:
    """MACs of ``counts`` (images through the student's forward / backward and the teacher's forward): a
    forward costs the model's MACs, a backward twice that."""
    return ((counts["student_fwd_images"] + 2 * counts["student_bwd_images"]) * student_macs
            + counts["teacher_fwd_images"] * teacher_macs)


def mac_epochs(train_macs: int, train_images: int) -> float:
    """Training MACs per training-set image: the run's compute in MAC-epochs (an epoch of plain CE training of a
    net of M MACs costs 3M), comparable between arms of different nets, losses and attacks."""
    return round(train_macs / train_images, 1) if train_images else 0.0


class CostMeter:
    """Hooks on ``student`` (and ``teacher``) counting training images; ``record()`` gives the epoch's counts
    and the run's totals, ``state()`` / ``load_state()`` carry them across a resume."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module | None, student_macs: int,
                 teacher_macs: int, train_images: int):
        self.student_macs, self.teacher_macs, self.train_images = int(student_macs), int(teacher_macs), train_images
        self.epoch = dict.fromkeys(COUNTS, 0)
        self.total = dict.fromkeys(COUNTS, 0)
        self.seconds: float | None = 0.0  # the finished epochs' wall-clock seconds
        self.active = True
        self.hooked = True  # False: the hooks count nothing and the step calls ``count`` (a captured step)
        self._hooks = [student.register_forward_hook(self._student)]
        if teacher is not None:
            self._hooks.append(teacher.register_forward_pre_hook(self._teacher))

    def _add(self, key: str, n: int) -> None:
        if self.active:
            self.epoch[key] += n
            self.total[key] += n

    def count(self, **images: int) -> None:
        """Add images to counts by name (``student_fwd_images=128``): what the hooks would have counted."""
        for key, n in images.items():
            self._add(key, n)

    def _student(self, _module, _inputs, output) -> None:
        if not self.active or not self.hooked or not torch.is_tensor(output):
            return
        n = int(output.shape[0])
        self._add("student_fwd_images", n)
        if output.requires_grad:
            output.register_hook(lambda grad: self._add("student_bwd_images", n))

    def _teacher(self, _module, inputs) -> None:
        if self.active and self.hooked and inputs and torch.is_tensor(inputs[0]):
            self._add("teacher_fwd_images", int(inputs[0].shape[0]))

    @contextlib.contextmanager
    def paused(self):
        """Nothing inside this block is training cost (validation, evaluation)."""
        active, self.active = self.active, False
        try:
            yield
        finally:
            self.active = active

    def macs(self, counts: dict) -> int:
        return training_macs(counts, self.student_macs, self.teacher_macs)

    def record(self, dist=None) -> dict:
        """The epoch's image counts and training MACs, the run's totals and its CE-epoch equivalents (summed
        over the ranks under torchrun); starts the next epoch's counts."""
        epoch, total = dict(self.epoch), dict(self.total)
        if dist is not None and dist.enabled:
            summed = dist.sum(torch.tensor([*epoch.values(), *total.values()], dtype=torch.float64)).tolist()
            epoch = {k: int(v) for k, v in zip(COUNTS, summed[:3], strict=True)}
            total = {k: int(v) for k, v in zip(COUNTS, summed[3:], strict=True)}
        self.epoch = dict.fromkeys(COUNTS, 0)
        total_macs = self.macs(total)
        return {**{f"cost/{k}": v for k, v in epoch.items()}, "cost/train_macs": self.macs(epoch),
                **{f"cost/total_{k}": v for k, v in total.items()}, "cost/total_train_macs": total_macs,
                "cost/ce_epochs": round(total_macs / (3 * self.student_macs * self.train_images), 6)}

    def add_seconds(self, seconds: float) -> float | None:
        """Add a finished epoch's wall-clock seconds; returns the run's total so far (None for a run resumed
        from a checkpoint written before the total was kept: its earlier seconds are not known)."""
        if self.seconds is None:
            return None
        self.seconds += seconds
        return round(self.seconds, 3)

    def summary(self, record: dict, epochs_done: int, epochs: int) -> dict:
        """The run's training cost so far (RUN/cost.json), from an epoch ``record``: image counts, MACs,
        CE-epoch equivalents and wall-clock seconds in total, and what they are counted in."""
        return {"format": COST_FORMAT, "epochs_done": epochs_done, "epochs": epochs, "finished": epochs_done >= epochs,
                **{k: record[f"cost/total_{k}"] for k in COUNTS}, "train_macs": record["cost/total_train_macs"],
                "ce_epochs": record["cost/ce_epochs"], "mac_epochs": mac_epochs(record["cost/total_train_macs"],
                                                                                self.train_images),
                "seconds": record.get("cost/total_seconds"),
                "student_macs": self.student_macs, "teacher_macs": self.teacher_macs,
                "train_images": self.train_images}

    def state(self) -> dict:
        return {"epoch": dict(self.epoch), "total": dict(self.total), "seconds": self.seconds}

    def load_state(self, state: dict | None) -> None:
        if state:  # runs written before the meter start from zero; before the total seconds, they have none
            self.epoch, self.total = dict(state["epoch"]), dict(state["total"])
            self.seconds = None if state.get("seconds") is None else float(state["seconds"])

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def passes_per_image(at: str = "none", steps: int = 10, mixture: bool = False, teacher: bool = True) -> dict:
    """Per training image and step of ``rnas retrain --at``: (student forwards, student backwards, teacher
    forwards), the plan a study uses to match arms on compute (the meter measures them; a test ties the two).
    none: 1 / 1; trades: clean forward for the target + ``steps`` attack steps + clean and adversarial
    forwards / ``steps`` + a backward through each of the two; pgd: ``steps`` + 1 / ``steps`` + 1; nfgsm: 2 / 2; Mixture
    BN adds a clean forward and backward to pgd and nfgsm."""
    fwd, bwd = {"none": (1, 1), "trades": (steps + 3, steps + 2), "pgd": (steps + 1, steps + 1),
                "nfgsm": (2, 2)}[at]
    if mixture and at in ("pgd", "nfgsm"):
        fwd, bwd = fwd + 1, bwd + 1
    return {"student_fwd_images": fwd, "student_bwd_images": bwd, "teacher_fwd_images": int(teacher)}
