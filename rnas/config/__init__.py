"""Run configs as dataclasses. Every field is one CLI flag (``--batch-size`` <-> ``batch_size``);
``--config FILE`` is a YAML mapping with the same keys; explicit flags override it; the resolved
config (every default written out) goes to ``RUN/config.yaml``."""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from pathlib import Path

import yaml

from rnas.errors import UserError
from search_spaces.errors import not_text
from search_spaces.spec import read_yaml, yaml_problem


def flag(default, help: str, *, range: str | None = None, **extra):
    """A config field with its CLI help, optional valid ``range`` (">= 1", "> 0", "[0, 1)", ...) and argparse extras."""
    factory = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    if range is not None:
        extra["range"] = parse_range(range)
    return dataclasses.field(metadata={"help": help, **extra}, **factory)


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric interval; ``str`` is how help texts and errors state it."""

    low: float | None
    high: float | None
    low_open: bool
    high_open: bool
    text: str

    def __contains__(self, value) -> bool:
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        return self.text


def parse_range(text: str) -> Range:
    """'>= 1', '> 0', '<= 5', '[0, 1)', '(0, 1)' -> Range."""
    t = text.replace(" ", "")
    if m := re.fullmatch(r"(>=|>|<=|<)(-?[\d.e+-]+)", t):
        op, v = m[1], float(m[2])
        low, high = (v, None) if op[0] == ">" else (None, v)
        return Range(low, high, op == ">", op == "<", f"{op} {m[2]}")
    if m := re.fullmatch(r"([\[(])(-?[\d.e+-]+),(-?[\d.e+-]+)([\])])", t):
        return Range(float(m[2]), float(m[3]), m[1] == "(", m[4] == ")", f"in {m[1]}{m[2]}, {m[3]}{m[4]}")
    raise ValueError(f"bad range {text!r}")


def _flag_name(field: str, cls=None) -> str:
    """The CLI flag of a config field: ``--batch-size`` for batch_size, or the name its ``flag(cli=...)`` gives."""
    if cls is not None:
        f = next((f for f in dataclasses.fields(cls) if f.name == field), None)
        if f is not None and "cli" in f.metadata:
            return f.metadata["cli"]
    return "--" + field.replace("_", "-")


def validate(config) -> None:
    """Every field with a range (each element of a list field) must lie in it; then the cross-field checks."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices is not None and getattr(config, f.name) is not None and getattr(config, f.name) not in choices:
            raise UserError(f"{_flag_name(f.name, type(config))} {getattr(config, f.name)}: must be one of "
                            f"{', '.join(choices)}")
        value, valid = getattr(config, f.name), f.metadata.get("range")
        if valid is None or value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            if v not in valid:
                raise UserError(f"{_flag_name(f.name, type(config))} {v:g}: must be {valid}")
    batch, limit = getattr(config, "batch_size", None), getattr(config, "limit", None)
    if batch is not None and limit is not None and batch > limit:
        raise UserError(f"--batch-size {batch} is larger than the training set (--limit {limit} images): "
                        f"use a batch size <= {limit}")
    check = getattr(config, "check", None)
    if check is not None:
        check()


SI_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_macs(text: str | float) -> float:
    """A MAC count with an optional SI suffix: '6.64M' -> 6.64e6, '500k' -> 5e5, '1.2G', '6640000'."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip()
        scale = SI_SUFFIXES.get(raw[-1:], 1.0)
        try:
            value = float(raw[:-1] if scale != 1.0 else raw) * scale
        except ValueError:
            raise UserError(f"bad MAC count {text!r}: use a number with an optional k/M/G suffix, e.g. 6.64M") from None
    if not value > 0 or value == float("inf"):
        raise UserError(f"bad MAC count {text!r}: must be a positive number")
    return value


def _base_type(tp):
    """``int | None`` -> int; other annotations unchanged."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and args:
        return _base_type(args[0])
    return tp


def _argparse_type(parse):
    """``parse`` for argparse: its one-line UserError becomes argparse's own error message."""
    def convert(text: str):
        try:
            return parse(text)
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    convert.__name__ = parse.__name__
    return convert


def read_yaml_file(path: str | Path, where: str):
    """A YAML file's content; an unreadable, binary or malformed file is a one-line UserError naming ``where``."""
    try:
        return read_yaml(Path(path).read_text())
    except OSError as err:
        raise UserError(f"{where}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a text file") from None
    except yaml.YAMLError as err:
        raise UserError(f"{where}: bad YAML{yaml_problem(err)}") from None


def shown_default(value, fraction: bool = False) -> str:
    """A default as --help shows it; with ``fraction`` (a flag whose parser reads fractions: eps, step) a
    budget such as 8/255 as the fraction it was written as, not 0.0313..."""
    if fraction and isinstance(value, float) and 0 < value < 1 and abs(value * 255 - round(value * 255)) < 1e-9:
        return f"{round(value * 255)}/255"
    return str(value)


def add_config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per dataclass field; defaults are suppressed so only explicit flags reach the namespace."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        name = _flag_name(f.name, cls)
        tp = _base_type(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        helptext = f.metadata.get("help", "")
        shown = shown_default(default, fraction="parse" in f.metadata)
        notes = [] if default is None and "default" in helptext else [f"default: {shown}"]
        notes += [f"range: {f.metadata['range']}"] if "range" in f.metadata else []
        notes += [f"choices: {', '.join(f.metadata['choices'])}"] if "choices" in f.metadata else []
        text = (helptext + (f" ({'; '.join(notes)})" if notes else "")).replace("%", "%%")  # argparse formats help
        kwargs = {"default": argparse.SUPPRESS, "help": text}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if "const" in f.metadata:  # --flag alone means const
            kwargs.update(nargs="?", const=f.metadata["const"])
        names = [name, *f.metadata.get("aliases", ())]
        if f.metadata.get("aliases"):
            kwargs["help"] += f" (also {', '.join(f.metadata['aliases'])})".replace("%", "%%")
        kwargs["dest"] = f.name
        metavar = name.lstrip("-").replace("-", "_").upper()
        if "parse" in f.metadata:
            parser.add_argument(*names, type=_argparse_type(f.metadata["parse"]), metavar=metavar, **kwargs)
        elif tp is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(tp) is list:
            parser.add_argument(*names, type=typing.get_args(tp)[0], nargs="*", **kwargs)
        else:
            parser.add_argument(*names, type=tp, metavar=metavar, **kwargs)


def _scalar(tp, value):
    """``value`` as ``tp`` without loss: 1.9 is not an int, True is not a number, 5 is not a bool."""
    if tp is bool or isinstance(value, bool):
        if tp is not bool or not isinstance(value, bool):
            raise TypeError
        return value
    if tp is int and isinstance(value, float):
        raise TypeError
    if tp is int and isinstance(value, str):
        return int(value.strip())  # "1.9" raises
    if tp in (int, float) and not isinstance(value, (int, float, str)):
        raise TypeError
    if tp is str and not isinstance(value, (str, int, float)):
        raise TypeError
    return tp(value)


def coerce_field(cls, key: str, value, source: str):
    """``value`` (from a YAML file) as field ``key`` of ``cls`` wants it; one-line UserError naming ``source``."""
    parse = next(f.metadata.get("parse") for f in dataclasses.fields(cls) if f.name == key)
    hints = typing.get_type_hints(cls)
    if parse is not None and value is not None:
        if isinstance(value, bool) and _base_type(hints[key]) is not str:
            raise UserError(f"{source}: {key}: expected a number, got {value!r}")
        return parse(value)
    tp = _base_type(hints[key])
    if value is None:
        return None
    try:
        if typing.get_origin(tp) is list:
            inner = typing.get_args(tp)[0]
            return [_scalar(inner, v) for v in (value if isinstance(value, list) else [value])]
        return _scalar(tp, value)
    except (TypeError, ValueError):
        name = getattr(typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp, "__name__", tp)
        what = f"a list of {name}" if typing.get_origin(tp) is list else name
        raise UserError(f"{source}: {key}: expected {what}, got {value!r}") from None


def load_config_file(cls, path: str | Path) -> dict:
    """Keys of a YAML config file (flag names with - or _), validated against the dataclass."""
    path = Path(path)
    try:
        data = read_yaml(path.read_text()) or {}
    except OSError as err:
        raise UserError(f"--config {path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"--config {path}: {not_text(err)}") from None
    except yaml.YAMLError as err:
        raise UserError(f"--config {path}: bad YAML{yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of flag names to values")
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        field = str(key).replace("-", "_")
        if field not in names:
            raise UserError(f"--config {path}: {key}: unknown key (not a flag of this command)")
        out[field] = coerce_field(cls, field, value, f"--config {path}")
    return out


def resolve_config(cls, args: argparse.Namespace, base: dict | None = None):
    """Dataclass defaults < ``base`` (e.g. a resumed run's config) < ``--config`` file < explicit flags."""
    values = dict(base or {})
    if getattr(args, "config", None):
        values.update(load_config_file(cls, args.config))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    config = cls(**values)
    validate(config)
    return config


def save_config(config, path: Path) -> None:
    """config.yaml, replaced atomically: a full disk or Ctrl-C while a resume rewrites it leaves the old one."""
    from rnas.runtime.rundir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


# settings added after runs were written: such a run ran with this value, whatever the default is now
BEFORE_THE_SETTING = {"tutor_objective": "paper", "lr_per_step": False}  # what runs written before them did


def read_run_config(cls, path: Path, command: str = "") -> dict:
    """The settings of an existing run (its config.yaml), checked against ``cls``."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError:
        raise UserError(f"{path}: missing (is this a run directory?)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not readable YAML ({str(err).strip().splitlines()[0] if str(err).strip() else err})"
                        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    if isinstance(data.get("amp"), bool):  # written before --amp took a mode
        data["amp"] = "bf16" if data["amp"] else "none"
    for key, value in BEFORE_THE_SETTING.items():
        if key in names and key not in data:
            data[key] = value
    unknown = [k for k in data if k not in names]
    if unknown:
        raise UserError(f"{path}: {unknown[0]}: not a setting of rnas {command or 'this command'} (a run of another "
                        "command, or of an older rnas)")
    return {key: coerce_field(cls, key, value, str(path)) for key, value in data.items()}


RESUMABLE = ("epochs", "device", "workers", "data_dir", "model_dir", "checkpoint_every", "log_every", "log",
             "compile", "out")


def changed_setting(base: dict, config, unset_ok: bool = False) -> tuple[str, object, object] | None:
    """The first setting (key, was, now) a resumed run may not change but ``config`` does: anything but
    where things are and how long it runs. ``unset_ok``: a None in ``config`` leaves the run's value. A
    default the run resolves itself compares as what it resolves to (no --val-size = the dataset's own)."""
    now = dataclasses.asdict(config)
    resolved_base, resolved_now = _resolved(base), _resolved(now)
    for key, value in now.items():
        if unset_ok and value is None:
            continue
        if key in base and resolved_base[key] != resolved_now[key] and key not in RESUMABLE:
            return key, base[key], value
    return None


def _resolved(settings: dict) -> dict:
    """``settings`` with the defaults a run resolves from its dataset filled in."""
    if settings.get("val_size") is None and "data" in settings:
        from rnas.data import DATASETS

        if (info := DATASETS.get(settings["data"])) is not None:
            return {**settings, "val_size": info.validation_size(None)}
    return settings


def check_resume_overrides(base: dict, config) -> None:
    """A resumed run may only change where things are and how long it runs, not what it computes."""
    if changed := changed_setting(base, config):
        key = changed[0]
        raise UserError(f"--{key.replace('_', '-')} cannot change when resuming (the run used {base[key]!r}); "
                        f"only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE[:-1])} can")
