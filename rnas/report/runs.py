"""What a report reads, as plain data: a trained net with its evaluations (Model), a search or retrain run
(Run), and everything gathered for one report (Inputs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def protocol(data: dict) -> str:
    """pixel (eps in [0, 1] pixel units, the default) or normalized (eps in the model's normalized space)."""
    return data.get("eps_space", "pixel")


@dataclass
class Model:
    """One trained net (an arm of a study, or a retrain run given directly): what it is and its eval files."""
    name: str
    arm: str | None = None
    finetune: str | None = None
    space: str | None = None
    budget: int | None = None
    teacher: str | None = None
    run: Path | None = None
    evals: dict[str, dict] = field(default_factory=dict)  # file label -> eval JSON
    missing: list[str] = field(default_factory=list)  # eval files listed by a study but not written yet
    arch: dict | None = None
    cost: dict | None = None  # its training cost (``training_cost``)
    seed: int | None = None  # its retrain --seed
    # what must match for two models to be one setting under several seeds: its study (or folder), and for a
    # run given directly its config without the seed and the run's own paths (compared on the fields both have)
    setting: tuple[str, dict] | None = None

    def params_macs(self) -> tuple[int | None, int | None]:
        """Params and MACs from its evals (pixel first), else from its arch.json."""
        for data in sorted(self.evals.values(), key=lambda d: protocol(d) != "pixel"):
            if data.get("params") is not None:
                return data["params"], data.get("macs")
        return (self.arch or {}).get("params"), (self.arch or {}).get("macs")


@dataclass
class Run:
    """A search or retrain run directory: its config and metrics.jsonl records."""
    name: str
    dir: Path
    config: dict
    records: list[dict]
    archs: dict[str, dict] = field(default_factory=dict)  # arch file name -> derived arch (search runs)

    @property
    def teacher(self) -> str | None:
        """The teacher checkpoint of its config, else the teacher's zoo name."""
        return self.config.get("teacher_ckpt") or self.config.get("teacher")


@dataclass
class Inputs:
    """What ``gather`` read: the models of the table, the search and retrain runs, the studies (dir, study.json)."""
    models: list[Model] = field(default_factory=list)
    searches: list[Run] = field(default_factory=list)
    retrains: list[Run] = field(default_factory=list)
    studies: list[tuple[Path, dict]] = field(default_factory=list)
