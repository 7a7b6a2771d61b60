"""RobustBench leaderboard entries by name (``--teacher robustbench:NAME``, or the bare NAME): each supported
entry's architecture in the teacher zoo, and the normalisation its model applies. The checkpoint is read offline
from ``<model_dir>/<dataset>/<threat>/<NAME>.pt``, RobustBench's own layout (its downloads land there)."""
from __future__ import annotations

from rnas.errors import UserError
from rnas.teachers.registry import CIFAR10_MEAN, CIFAR10_STD

PREFIX = "robustbench:"
RAW = (None, None)  # the model reads [0, 1] images as they are
DM = (CIFAR10_MEAN, CIFAR10_STD)  # the DeepMind models normalise with CIFAR-10's statistics (also in the file)
DM100 = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))  # ... and CIFAR-100's on CIFAR-100
WU100 = ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),  # Wu et al.'s CIFAR-100 statistics
         (0.2673342858792401, 0.2564384629170883, 0.27615047132568404))  # (its mu / sigma buffers, also in the file)

# (dataset, threat) -> entry name -> (teacher zoo architecture, (mean, std)); from RobustBench's model zoo
ENTRIES: dict[tuple[str, str], dict[str, tuple[str, tuple]]] = {("cifar10", "Linf"): {
    "Andriushchenko2020Understanding": ("r18", RAW),
    "Carmon2019Unlabeled": ("wrn-28-10", RAW),
    "Sehwag2020Hydra": ("wrn-28-10", RAW),
    "Wang2020Improving": ("wrn-28-10", RAW),
    "Rice2020Overfitting": ("wrn-34-20", DM),  # its mu / sigma buffers are in the file as well
    "Zhang2019Theoretically": ("wrn-34-10", RAW),
    "Huang2020Self": ("wrn-34-10", RAW),
    "Zhang2019You": ("wrn-34-10", RAW),
    "Zhang2020Attacks": ("wrn-34-10", RAW),
    "Wu2020Adversarial_extra": ("wrn-28-10", RAW),
    "Wu2020Adversarial": ("wrn-34-10", RAW),
    "Wong2020Fast": ("r18", DM),
    "Gowal2020Uncovering_70_16": ("dm-wrn-swish-70-16", DM),
    "Gowal2020Uncovering_70_16_extra": ("dm-wrn-swish-70-16", DM),
    "Gowal2020Uncovering_34_20": ("dm-wrn-swish-34-20", DM),
    "Gowal2020Uncovering_28_10_extra": ("dm-wrn-swish-28-10", DM),
    "Sehwag2021Proxy": ("wrn-34-10", RAW),
    "Sitawarin2020Improving": ("wrn-34-10", RAW),
    "Cui2020Learnable_34_20": ("wrn-34-20", RAW),
    "Cui2020Learnable_34_10": ("wrn-34-10", RAW),
    "Zhang2020Geometry": ("wrn-28-10", RAW),
    "Rebuffi2021Fixing_28_10_cutmix_ddpm": ("dm-wrn-swish-28-10", DM),
    "Rebuffi2021Fixing_106_16_cutmix_ddpm": ("dm-wrn-swish-106-16", DM),
    "Rebuffi2021Fixing_70_16_cutmix_ddpm": ("dm-wrn-swish-70-16", DM),
    "Rebuffi2021Fixing_70_16_cutmix_extra": ("dm-wrn-swish-70-16", DM),
    "Rebuffi2021Fixing_R18_ddpm": ("dm-preact-r18-swish", DM),
    "Sridhar2021Robust": ("wrn-28-10", RAW),
    "Sridhar2021Robust_34_15": ("wrn-34-15", RAW),
    "Rade2021Helper_R18_extra": ("dm-preact-r18-swish", DM),
    "Rade2021Helper_R18_ddpm": ("dm-preact-r18-swish", DM),
    "Rade2021Helper_extra": ("dm-wrn-swish-34-10", DM),
    "Rade2021Helper_ddpm": ("dm-wrn-swish-28-10", DM),
    "Addepalli2021Towards_WRN34": ("wrn-34-10", RAW),
    "Gowal2021Improving_70_16_ddpm_100m": ("dm-wrn-swish-70-16", DM),
    "Gowal2021Improving_28_10_ddpm_100m": ("dm-wrn-swish-28-10", DM),
    "Gowal2021Improving_R18_ddpm_100m": ("dm-preact-r18-swish", DM),
    "Chen2021LTD_WRN34_10": ("wrn-34-10", RAW),
    "Chen2021LTD_WRN34_20": ("wrn-34-20", RAW),
    "Standard": ("wrn-28-10", RAW),
    "Jia2022LAS-AT_34_10": ("wrn-34-10", RAW),
    "Jia2022LAS-AT_70_16": ("wrn-70-16", RAW),
    "Pang2022Robustness_WRN28_10": ("dm-wrn-swish-28-10", DM),
    "Pang2022Robustness_WRN70_16": ("dm-wrn-swish-70-16", DM),
    "Addepalli2022Efficient_WRN_34_10": ("wrn-34-10", RAW),
    "Huang2022Revisiting_WRN-A4": ("wrn-a4", DM),
    "Wang2023Better_WRN-28-10": ("dm-wrn-swish-28-10", DM),
    "Wang2023Better_WRN-70-16": ("dm-wrn-swish-70-16", DM),
    "Xu2023Exploring_WRN-28-10": ("dm-wrn-swish-28-10", DM),
}, ("cifar10", "L2"): {
    "Standard": ("wrn-28-10", RAW),
    "Wu2020Adversarial": ("wrn-34-10", RAW),
    "Gowal2020Uncovering": ("dm-wrn-swish-70-16", DM),
    "Gowal2020Uncovering_extra": ("dm-wrn-swish-70-16", DM),
    "Sehwag2021Proxy": ("wrn-34-10", RAW),
    "Rebuffi2021Fixing_70_16_cutmix_ddpm": ("dm-wrn-swish-70-16", DM),
    "Rebuffi2021Fixing_28_10_cutmix_ddpm": ("dm-wrn-swish-28-10", DM),
    "Rebuffi2021Fixing_70_16_cutmix_extra": ("dm-wrn-swish-70-16", DM),
    "Augustin2020Adversarial_34_10": ("wrn-34-10", DM),  # its mu / sigma buffers are in the file as well
    "Augustin2020Adversarial_34_10_extra": ("wrn-34-10", DM),
    "Rebuffi2021Fixing_R18_cutmix_ddpm": ("dm-preact-r18-swish", DM),
    "Rade2021Helper_R18_ddpm": ("dm-preact-r18-swish", DM),
    "Wang2023Better_WRN-28-10": ("dm-wrn-swish-28-10", DM),
    "Wang2023Better_WRN-70-16": ("dm-wrn-swish-70-16", DM),
}, ("cifar100", "Linf"): {
    "Gowal2020Uncovering": ("dm-wrn-swish-70-16", DM100),
    "Gowal2020Uncovering_extra": ("dm-wrn-swish-70-16", DM100),
    "Cui2020Learnable_34_20_LBGAT6": ("wrn-34-20", RAW),
    "Cui2020Learnable_34_10_LBGAT0": ("wrn-34-10", RAW),
    "Cui2020Learnable_34_10_LBGAT6": ("wrn-34-10", RAW),
    "Chen2020Efficient": ("wrn-34-10", ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))),  # also in the file
    "Wu2020Adversarial": ("wrn-34-10", WU100),
    "Sitawarin2020Improving": ("wrn-34-10", RAW),
    "Hendrycks2019Using": ("wrn-28-10", ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),  # its forward: 2x - 1
    "Rebuffi2021Fixing_70_16_cutmix_ddpm": ("dm-wrn-swish-70-16", DM100),
    "Rebuffi2021Fixing_28_10_cutmix_ddpm": ("dm-wrn-swish-28-10", DM100),
    "Rebuffi2021Fixing_R18_ddpm": ("dm-preact-r18-swish", DM100),
    "Rade2021Helper_R18_ddpm": ("dm-preact-r18-swish", DM100),
    "Addepalli2021Towards_WRN34": ("wrn-34-10", RAW),
    "Chen2021LTD_WRN34_10": ("wrn-34-10", RAW),
}}


def entry_name(name: str, dataset: str, threat: str) -> str | None:
    """The RobustBench entry ``name`` refers to (``robustbench:NAME``, or a bare NAME of the table), else None;
    a one-line UserError for a ``robustbench:`` name the table does not have."""
    bare = name.removeprefix(PREFIX)
    if bare in ENTRIES.get((dataset, threat), {}):
        return bare
    if name.startswith(PREFIX):
        known = ENTRIES.get((dataset, threat))
        if not known:
            have = ", ".join(f"{d} {t}" for d, t in ENTRIES)
            raise UserError(f"--teacher {name}: no RobustBench entries for {dataset} {threat} here (supported: {have})")
        raise UserError(f"--teacher {name}: not a supported RobustBench {dataset} {threat} entry "
                        f"(rnas teachers --robustbench lists the {len(known)} that are)")
    return None


def entry_table() -> list[dict]:
    """Every supported entry as name, dataset, threat and architecture (`rnas teachers --robustbench --json`)."""
    return [{"name": n, "dataset": d, "threat": t, "architecture": arch}
            for (d, t), table in ENTRIES.items() for n, (arch, _) in table.items()]


def format_entries() -> str:
    """`rnas teachers --robustbench`: every supported entry with its dataset, threat model and architecture."""
    keys = ("name", "dataset", "threat", "architecture")
    rows = [keys] + [tuple(row[k] for k in keys) for row in entry_table()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows)
