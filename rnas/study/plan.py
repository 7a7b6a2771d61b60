"""`rnas study STUDY.yaml`: the paper's comparison as one declarative, resumable pipeline.

A study file names the data, the robust teacher (and a control teacher), the searches, the arms and
their fine-tuning, and the evaluation. ``plan_study`` turns it into a graph of steps (networkx DiGraph:
search -> derive -> retrain arm -> fine-tune -> eval), each writing an ordinary run directory or file
under the study directory; ``rnas.study.runner`` runs the graph. Every problem with the file is a
one-line ``UserError`` naming the field, raised before anything runs.

Arms (``rnas retrain`` of the derived net): rnas-cl (Eq. 3 with the searched tutors), ce (CE only),
kd (CE + logit KD), fixed (uniform fixed tutor mapping), control-teacher (rnas-cl with the control
teacher, e.g. a non-robust twin). Each may be fine-tuned with TRADES (``trades``) or TRADES + Mixture BN
(``trades+mbn``), i.e. ``rnas retrain --trades --init <arm>/checkpoint.pt [--mbn]``. An arm may also train
adversarially from scratch (``at: trades | pgd | nfgsm``, i.e. ``rnas retrain --at AT --from-scratch``) and
for a compute budget instead of epochs (``budget: 15`` or ``[15, 30]``, in CE-epoch equivalents, i.e.
``rnas retrain --budget``; it replaces ``retrain.epochs`` and ``retrain.milestones`` for that arm), so arms
can be matched on cost: ``{arm: rnas-cl, at: nfgsm, budget: [15, 30]}`` runs ``<net>/rnas-cl-nfgsm-15ce``
and ``<net>/rnas-cl-nfgsm-30ce``. ``seeds: [0, 1, 2]`` runs an arm (and its fine-tunes) once per ``rnas retrain
--seed``: the retrain section's seed keeps the plain name, the others ``<arm>-s<seed>``; a fine-tune runs
with its arm's seed (``finetune.seed`` beside ``seeds:`` is refused).
The study's own ``seeds: [0, 1, 2]`` makes the seeds independent: one search per seed (``search-<space>-s<seed>``,
its ``--seed``), each arm retrained on that search's nets under the same seed (``<net>/<arm>-s<seed>``; the base
seed 0 keeps the plain names); ``share_search: true`` keeps one search retrained under every seed.
With ``retrain: {robust_val: N}`` (``rnas retrain --robust-val``) every run also keeps its best epoch's model
(``best.pt``), and each evaluation is done twice: ``eval-<protocol>.json`` of the last epoch and
``eval-best-<protocol>.json`` of ``best.pt``, the latter a model row of its own (``<run>@best``).

A search entry's ``tutor_derive`` (balanced, the default, argmax or monotone) is its derive step's
``rnas derive --tutor-derive``, and names the arch files as that command does (arch-argmax.json).

A search may also grow its derived net to larger MAC budgets (``scale: 15.6M`` or a list, as ``rnas scale
ARCH --macs``): each budget gives two more nets with every arm, ``<space>-scaled-<budget>`` (RobustScaling:
depth and width in the paper's ratios) and ``<space>-widened-<budget>`` (the same budget by width alone).
``archs:`` brings nets derived elsewhere (an arch.json of an earlier search) into a study without searching
again, each ``{arch: PATH, name: N, scale: [...], own: true}``: a ``grow`` step copies it to ``arch-<N>/``
(and grows it as ``scale:`` does), and every arm trains it (``own: false``: only its grown nets).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from rnas.config import coerce_field, parse_macs, read_yaml_file
from rnas.config.defaults import TUTOR_DERIVE
from rnas.data import TRAINABLE, dataset_info
from rnas.engine.early_stopping import BEST
from rnas.engine.optim import fill_recipe
from rnas.engine.retrain import RetrainConfig
from rnas.engine.search import SearchConfig
from rnas.errors import UserError
from rnas.method.tutors import TUTOR_DERIVATIONS
from rnas.nets.derivation import arch_filename
from rnas.study.cluster import ExecutorSettings, fail, mapping, read_settings, step_resources
from rnas.study.sections import (
    ARMS,
    FINETUNES,
    arm_name,
    as_list,
    build_config,
    read_arms,
    read_evals,
    read_study_seeds,
    seeded_name,
)

TOP_KEYS = ("name", "data", "teacher", "control_teacher", "searches", "archs", "search", "retrain", "arms",
            "finetune", "eval", "seeds", "share_search", "jobs", "threads", "executor", "slurm")
# keys a section may not set: the study decides them (where runs go, which net, which teacher / arm)
SPLIT_KEYS = ("val_size", "val_select", "val_report", "split_seed", "split_pool")  # which images do what
OWNED = {"out", "arch", "baseline", "trades", "at", "budget", "init", "mbn", "from_scratch", "space", "teacher",
         "teacher_ckpt", "model_dir", "threat", "data", "data_dir", *SPLIT_KEYS}
DATA_KEYS = ("data", "data_dir", *SPLIT_KEYS, "device", "workers")  # the `data` section: shared by every step


@dataclass
class Step:
    """One node of the study graph: ``kind`` search | derive | grow | retrain | finetune | eval, its output
    ``path`` (a run directory, a folder of arch files for grow, a file for eval) relative to the study
    directory, and what the runner needs (``config``: a config dataclass; ``extra``: kind-specific values;
    ``resources``: what the executor reserves for it, and ``nproc``, the torchrun ranks it runs on)."""

    name: str
    kind: str
    path: str
    config: object = None
    extra: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)


@dataclass
class Study:
    name: str
    source: Path
    out: Path
    graph: nx.DiGraph
    models: list[dict]
    jobs: int
    threads: int | None
    again: str = ""  # the command that continues the study (said when it is stopped)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    jobs_given: bool = True  # the file sets jobs (else a cluster executor submits every ready step)
    seeds: list[int] | None = None  # the study's seeds: (None: none given)
    share_search: bool = False  # with seeds: one search whose nets are retrained under each seed

    def steps(self) -> list[Step]:
        """Steps in a dependency order that keeps the file's order (searches first, then each arm ...)."""
        return [self.graph.nodes[n]["step"] for n in nx.lexicographical_topological_sort(
            self.graph, key=lambda n: self.graph.nodes[n]["index"])]


def _flags(cls, values: dict, where: str, owned=OWNED) -> dict:
    """A section of flag names (``-`` or ``_``) checked against ``cls``'s fields and coerced to their types."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in mapping(values, where).items():
        name = str(key).replace("-", "_")
        if name not in names or name in owned:
            why = "set by the study itself" if name in owned else "not a flag of this command"
            raise fail(f"{where}.{key}", f"unknown key ({why})")
        out[name] = coerce_field(cls, name, value, where)
    return out


def _resolve_paths(values: dict, base: Path) -> dict:
    """Relative data / model directories are relative to where ``rnas study`` runs (as flags are)."""
    return {k: (str((base / v).resolve()) if k in ("data_dir", "model_dir") and v else v) for k, v in values.items()}


def read_study(path: str | Path) -> dict:
    """The study file as a mapping (one-line errors for unreadable files and bad YAML)."""
    path = Path(path)
    data = read_yaml_file(path, str(path))
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping (name, data, teacher, searches, arms, eval, ...)")
    return data


def plan_study(path: str | Path, out: str | Path, overrides: dict | None = None, cwd: Path | None = None) -> Study:
    """Check a study file and turn it into its graph of steps writing under ``out`` (configs hold absolute
    paths; steps and models name theirs relative to ``out``). ``overrides``: ``data_dir`` / ``model_dir`` /
    ``executor`` / ``ray_address`` given on the command line, replacing the file's."""
    path, out = Path(path), Path(out).resolve()
    data = read_study(path)
    where = str(path)
    cwd = cwd or Path.cwd()
    for key in data:
        if key not in TOP_KEYS:
            raise fail(f"{where}: {key}", f"unknown key (one of {', '.join(TOP_KEYS)})")
    name = data.get("name") or path.stem
    if not _plain_name(name):
        raise fail(f"{where}: name", f"{name!r}: letters, digits, - _ . only")
    overrides = overrides or {}
    settings = read_settings(data, where, overrides.get("executor"), overrides.get("ray_address"))

    common = _flags(SearchConfig, data.get("data"), f"{where}: data", owned=set())
    for key in common:
        if key not in DATA_KEYS:
            raise fail(f"{where}: data.{key}", f"not a data setting ({', '.join(DATA_KEYS)}); "
                                                 "put it in search / retrain / finetune")
    common.update({k: v for k, v in overrides.items() if k == "data_dir" and v})
    if common.get("val_size") is not None and (common.get("val_select") is not None
                                                or common.get("val_report") is not None):
        raise fail(f"{where}: data.val_size", "beside val_select / val_report: give one (the two splits replace it)")
    teacher = _teacher(data.get("teacher"), f"{where}: teacher", overrides, True, cwd)
    control = _teacher(data.get("control_teacher"), f"{where}: control_teacher", overrides, False, cwd)
    search_flags = _flags(SearchConfig, data.get("search"), f"{where}: search")
    retrain_flags = _flags(RetrainConfig, data.get("retrain"), f"{where}: retrain")
    base_seed = retrain_flags.get("seed", RetrainConfig.seed)  # an arm's run under this seed keeps its plain name
    common = _resolve_paths(common, cwd)
    dataset = common.get("data") or SearchConfig.data
    needs_dir = dataset in TRAINABLE and dataset_info(dataset).data_dir is not None
    if needs_dir and not common.get("data_dir"):
        raise fail(f"{where}: data.data_dir", f"missing (where the {dataset} data is; or --data-dir)")
    if needs_dir and not Path(common["data_dir"]).is_dir():
        raise fail(f"{where}: data.data_dir", f"{common['data_dir']}: no such directory")
    for section, values in (("teacher", teacher), ("control_teacher", control)):
        _check_teacher(values, dataset, f"{where}: {section}")

    graph = nx.DiGraph()
    models: list[dict] = []

    def add(step: Step, *deps: str, arm: dict | None = None) -> Step:
        if step.name in graph:  # a second entry that names the same output (one more guard behind the fields')
            raise fail(where, f"two steps write {step.path}: give each search space and each arch name once")
        step.resources = step_resources(settings, step.kind, arm)
        graph.add_node(step.name, step=step, index=graph.number_of_nodes())
        for dep in deps:
            graph.add_edge(dep, step.name)
        return step

    def add_model(model: Step, trained_cfg: RetrainConfig, res: dict | None, row: dict) -> None:
        """The evaluations of one trained model and its row in study.json; a run with --robust-val also
        keeps its best epoch's model (best.pt), evaluated as a row of its own (``<run>@best``)."""
        for checkpoint in ("checkpoint.pt", BEST) if trained_cfg.robust_val else ("checkpoint.pt",):
            prefix = "best-" if checkpoint == BEST else ""
            files = {}
            for protocol, ecfg in evals.items():
                files[protocol] = f"{model.path}/eval-{prefix}{protocol}.json"
                ecfg = dataclasses.replace(ecfg, checkpoint=str(out / model.path / checkpoint),
                                           json=str(out / files[protocol]))
                add(Step(f"eval/{model.path}/{prefix.replace('-', '/')}{protocol}", "eval", files[protocol], ecfg),
                    model.name, arm=res)
            models.append({"name": model.path + ("@best" if prefix else ""), **row, "evals": files})

    searches = [] if data.get("searches") is None and data.get("archs") is not None else \
        as_list(data.get("searches"), f"{where}: searches")
    finetune = dict(mapping(data.get("finetune"), f"{where}: finetune"))
    finetune_flags = _flags(RetrainConfig, finetune, f"{where}: finetune")
    seeds, share_search = read_study_seeds(data, where, {"search": search_flags, "retrain": retrain_flags,
                                                         "finetune": finetune_flags})
    if seeds is not None and not share_search and data.get("archs") is not None:
        raise fail(f"{where}: archs", "nets derived elsewhere have no search to repeat under each of the seeds: "
                                      "give share_search: true, or drop seeds:")
    arms = read_arms(data.get("arms"), f"{where}: arms", control is not None, base_seed, seeds)
    if "seed" in finetune_flags and any(a[5] is not None for a in arms):
        raise fail(f"{where}: finetune.seed", "set beside an arm's seeds: (an arm's fine-tunes run with its seed, "
                                             "so that <arm>-s1-trades is seed 1); drop one of them")
    evals = read_evals(data.get("eval"), f"{where}: eval", common)

    def add_nets(space: str, search_path: str | None, source: str, nets: list, search_seed: int | None = None,
                 only_seed: int | None = None) -> None:
        """Every arm (and its fine-tunes and evaluations) on each of ``nets``, made by step ``source`` (a search
        of ``search_seed``); ``only_seed``: only the arms' runs under that seed (the search's own)."""
        for net, arch, budget, rule in nets:
            for arm, at, compute, tunes, res, seed in arms:
                if only_seed is not None and (base_seed if seed is None else seed) != only_seed:
                    continue
                arm_teacher = control if arm == "control-teacher" else teacher
                run = f"{net}/{seeded_name(arm_name(arm, at, compute), seed, base_seed)}"
                seed_flag = {} if seed is None else {"seed": seed}  # retrain and fine-tunes alike
                flags = {**retrain_flags, **ARMS[arm], **seed_flag}
                if at != "none":
                    flags.update(at=at, from_scratch=True)
                if compute is not None:
                    flags = {k: v for k, v in flags.items() if k not in ("epochs", "milestones")}
                    flags["budget"] = compute
                rcfg = build_config(RetrainConfig, {**common, **arm_teacher, **flags, "arch": str(out / arch),
                                                    "out": str(out / run)},
                                    f"{where}: retrain ({arm_name(arm, at, compute)})")
                trained = add(Step(f"retrain/{run}", "retrain", run, rcfg), source, arm=res)
                variants = [(None, trained, rcfg)]
                for tune in tunes:
                    tuned = f"{run}-{tune.replace('+', '-')}"
                    fcfg = build_config(RetrainConfig, {**common, **arm_teacher, **retrain_flags, **finetune_flags,
                                                        **ARMS[arm], **FINETUNES[tune], **seed_flag,
                                                        "arch": str(out / arch),
                                                        "init": str(out / run / "checkpoint.pt"),
                                                        "out": str(out / tuned)},
                                        f"{where}: finetune ({arm} {tune})")
                    variants.append((tune, add(Step(f"finetune/{tuned}", "finetune", tuned, fcfg), trained.name,
                                               arm=res), fcfg))
                for tune, model, trained_cfg in variants:
                    add_model(model, trained_cfg, res, {
                        "arm": arm, "finetune": tune, "at": at, "compute_budget": compute,
                        "seed": trained_cfg.seed, "space": space,
                        "budget": budget, "scale": rule,
                        "teacher": arm_teacher.get("teacher_ckpt") or arm_teacher.get("teacher"),
                        "run": model.path, "search": search_path, "arch": arch,
                        **({} if seeds is None else {"search_seed": search_seed})})

    for i, entry in enumerate(searches):
        here = f"{where}: searches[{i}]"
        entry = {"space": entry} if isinstance(entry, str) else mapping(entry, here)
        unknown = [k for k in entry if k not in ("space", "budgets", "scale", "tutor_derive")]
        if unknown:
            raise fail(f"{here}.{unknown[0]}", "unknown key (space, budgets, scale, tutor_derive)")
        tutor_derive = entry.get("tutor_derive", TUTOR_DERIVE)
        if tutor_derive not in TUTOR_DERIVATIONS:
            raise fail(f"{here}.tutor_derive", f"{tutor_derive!r}: one of {', '.join(TUTOR_DERIVATIONS)} (rnas "
                                               "derive --tutor-derive)")
        space = entry.get("space")
        if not isinstance(space, str) or not space:
            raise fail(f"{here}.space", "missing (a built-in space name or a YAML path)")
        smallest = _smallest_macs(_space(space, cwd), dataset_info(common.get("data") or "cifar10").num_classes,
                                  f"{here}.space")
        tag = Path(space).stem.lower()
        budgets = [None] if entry.get("budgets") is None else \
            [_budget(b, f"{here}.budgets") for b in as_list(entry["budgets"], f"{here}.budgets")]
        for budget in budgets:
            if budget is not None and budget < smallest:
                raise fail(f"{here}.budgets", f"{budget:,.0f} MACs is below the smallest net of {space} "
                                               f"({smallest:,} MACs)")
        scales = [] if entry.get("scale") is None else \
            [_budget(b, f"{here}.scale") for b in as_list(entry["scale"], f"{here}.scale")]
        if scales and None not in budgets:
            raise fail(f"{here}.scale", "grows the search's own net (arch.json), which budgets leaves out; give "
                                        "scale without budgets")
        # one search per seed of the study's (its own name but for the base seed's), else one for every arm
        for search_seed in [None] if seeds is None or share_search else seeds:
            folder = f"search-{seeded_name(tag, search_seed, base_seed)}"
            cfg = build_config(SearchConfig, {**common, **teacher, **search_flags, "space": _space(space, cwd),
                                              **({} if search_seed is None else {"seed": search_seed}),
                                              "out": str(out / folder)}, f"{here}")
            fill_recipe(cfg, search=True)  # the dataset's search epochs, batch, lr: as the run will resolve them
            search = add(Step(f"search/{folder[len('search-'):]}", "search", folder, cfg))
            derive = add(Step(f"derive/{folder[len('search-'):]}", "derive", folder, extra={
                "budgets": budgets, "scale": scales, "epochs": cfg.epochs, "tutor_derive": tutor_derive}),
                search.name)
            nets = [(tag if budget is None else f"{tag}-{_budget_text(budget)}",
                     f"{folder}/{arch_filename(budget, tutor_derive)}", budget, None) for budget in budgets]
            nets += _grown_nets(tag, folder, scales)
            add_nets(tag.upper(), search.path, derive.name, nets, cfg.seed, search_seed)
    for i, entry in enumerate(as_list(data["archs"], f"{where}: archs") if data.get("archs") is not None else []):
        space, grow, nets = _arch_source(entry, f"{where}: archs[{i}]", cwd, dataset, out)
        if grow.name in graph:
            raise fail(f"{where}: archs[{i}].name", f"{grow.path[len('arch-'):]!r} is given twice (one name each)")
        add_nets(space, None, add(grow).name, nets)
    if len(names := [m["name"] for m in models]) != len(set(names)):
        twice = next(n for n in names if names.count(n) > 1)
        raise fail(where, f"two nets train {twice}: give each search space once, and each arch a name of its own")
    jobs = data.get("jobs", 1)
    threads = data.get("threads")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise fail(f"{where}: jobs", f"{jobs!r}: a whole number >= 1")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or not 1 <= threads <= MAX_THREADS):
        raise fail(f"{where}: threads", f"{threads!r}: a whole number from 1 to {MAX_THREADS}")
    return Study(name, path, out, graph, models, jobs, threads, executor=settings, jobs_given="jobs" in data,
                 seeds=seeds, share_search=share_search)


def _plain_name(text) -> bool:
    """A study or net name: letters, digits, - _ . only."""
    return isinstance(text, str) and text.replace("-", "").replace("_", "").replace(".", "").isalnum()


def _grown_nets(tag: str, folder: str, scales: list[int]) -> list[tuple]:
    """The nets ``scale:`` grows from ``tag``'s arch.json in ``folder``: (name, arch file, budget, rule) for each
    budget by each rule."""
    return [(f"{tag}-{rule}-{_budget_text(budget)}", f"{folder}/{filename}", budget, rule)
            for budget, rule, filename, _ in grown_files(scales)]


def _arch_source(entry, here: str, cwd: Path, dataset: str, out: Path) -> tuple[str, Step, list]:
    """An ``archs`` entry (a derived net's arch.json, ``{arch: PATH, name: N, scale: [15.6M], own: false}``):
    its space, the step that copies it into the study (and grows it to each ``scale`` budget by each rule, as
    a search's ``scale:`` does), and its nets [(name, arch file, budget, rule)] (``own: false``: only the
    grown ones). A file moved away after the study copied it: the study's copy stands in for it."""
    from rnas.nets.scaling import smallest_growth
    from supernets import ArchError, read_arch

    entry = {"arch": entry} if isinstance(entry, str) else mapping(entry, here)
    unknown = [k for k in entry if k not in ("arch", "name", "scale", "own")]
    if unknown:
        raise fail(f"{here}.{unknown[0]}", "unknown key (arch, name, scale, own)")
    if not isinstance(entry.get("arch"), str) or not entry["arch"]:
        raise fail(f"{here}.arch", "missing (an arch.json written by rnas derive or rnas scale)")
    path = (cwd / entry["arch"]).resolve()
    tag = entry.get("name", path.stem)
    if not _plain_name(tag):
        raise fail(f"{here}.name", f"{tag!r}: letters, digits, - _ . only")
    folder = f"arch-{tag}"
    copy = out / folder / "arch.json"
    try:
        arch, _ = read_arch(path if path.is_file() or not copy.is_file() else copy)
    except ArchError as err:
        raise fail(f"{here}.arch", str(err)) from None
    if arch.get("data", dataset) != dataset:
        raise fail(f"{here}.arch", f"a net for {arch['data']}, not the study's {dataset}")
    scales = [] if entry.get("scale") is None else \
        [_budget(b, f"{here}.scale") for b in as_list(entry["scale"], f"{here}.scale")]
    if scales and not isinstance(arch.get("macs"), int):
        raise fail(f"{here}.arch", "no exact MAC count to grow from (write it with rnas derive)")
    floor = smallest_growth(arch, str(path)) if scales else 0
    for budget in scales:
        if budget < floor:
            raise fail(f"{here}.scale", f"{budget:,} MACs is below {floor:,}, the net's own depth in RobustScaling's "
                                        "2 : 2 : 1 layout (scale grows a net by both rules)")
    own = entry.get("own", True)
    if not isinstance(own, bool) or not (own or scales):
        raise fail(f"{here}.own", f"{own!r}: true or false, and false only with scale")
    grow = Step(f"grow/{tag}", "grow", folder, extra={"source": str(path), "scale": scales})
    nets = [(tag, f"{folder}/arch.json", None, None)] if own else []
    nets += _grown_nets(tag, folder, scales)
    return str(arch.get("space", "")).upper(), grow, nets


def _teacher(values, where: str, overrides: dict, required: bool, cwd: Path) -> dict | None:
    if values is None and not required:
        return None
    values = mapping(values, where)
    unknown = [k for k in values if str(k).replace("-", "_") not in ("teacher", "teacher_ckpt", "model_dir", "threat")]
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key (teacher, teacher_ckpt, model_dir, threat)")
    out = _resolve_paths(_flags(SearchConfig, values, where, owned=set()), cwd)
    if not out.get("teacher"):
        raise fail(f"{where}.teacher", "missing (a teacher architecture, e.g. wrn-16-2)")
    if overrides.get("model_dir"):
        out["model_dir"] = str((cwd / overrides["model_dir"]).resolve())
    return out


def _check_teacher(values: dict | None, dataset: str, where: str) -> None:
    """The teacher's checkpoint file must exist (read by the steps; checked here before anything runs)."""
    if not values or not values.get("teacher_ckpt"):
        return
    from rnas.teachers.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint(values["teacher_ckpt"], values.get("model_dir"), dataset, values.get("threat") or "Linf")
    except UserError as err:
        raise fail(f"{where}.teacher_ckpt", str(err)) from None


def _budget(value, where: str) -> int:
    try:
        return int(parse_macs(value))
    except UserError as err:
        raise fail(where, str(err)) from None


SCALE_RULES = {"scaled": False, "widened": True}  # a search's `scale:` nets: RobustScaling, and width alone


def scaled_filename(budget: int, rule: str) -> str:
    """arch-scaled-15.6M.json (RobustScaling) or arch-widened-15.6M.json (width alone): the search's arch.json
    grown to ``budget`` MACs by the derive step of a search with ``scale:``."""
    return f"arch-{rule}-{_budget_text(budget)}.json"


def grown_files(scales: list[int]) -> list[tuple[int, str, str, bool]]:
    """(budget, rule, file name, width only) of every net ``scale:`` grows: each budget by each rule."""
    return [(budget, rule, scaled_filename(budget, rule), width_only)
            for budget in scales for rule, width_only in SCALE_RULES.items()]


def _budget_text(budget: int) -> str:
    """6640000 -> 6.64M, as `rnas derive --mac-target` names its files."""
    return arch_filename(budget)[len("arch-"):-len(".json")]


MAX_THREADS = 1024  # per job; OpenMP dies far above what any machine has


def _smallest_macs(space: str, num_classes: int, where: str) -> int:
    """MACs of the narrowest net of ``space`` (read and built now, so that an unknown space, a missing or
    malformed spec file and a budget below its smallest net fail before the study runs)."""
    from search_spaces import SpecError, load_space
    from supernets import Network

    try:
        spec = load_space(space)
    except (SpecError, UserError) as err:
        raise fail(where, str(err)) from None
    net = Network(spec, num_classes)
    return net.cost([len(b.width_choices) - 1 for b in net.searched_blocks])[1]


def _space(space: str, cwd: Path) -> str:
    """A built-in space name as is; a YAML path made absolute."""
    return str((cwd / space).resolve()) if space.endswith((".yaml", ".yml")) else space
