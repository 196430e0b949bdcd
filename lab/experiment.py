"""The contract every experiment follows, and the one progress type they all report through.

    cfg = SomeConfig(...)                    frozen, hashable; fields declared with `param`
    result = module.run(lm, cfg, on_progress) on_progress(Progress(...)) as it goes
    result.to_record()                        JSON-able: experiment, model, seed, config,
                                              library versions, numbers
    result.frames()                           {name: tidy DataFrame} for charts and CSV

A config validates itself once, in `__post_init__`, by calling `validate(self)` (types,
`Literal` choices and the ranges declared in `param`) plus any cross-field rule of its own;
every error is one sentence (`ValueError`). The CLI (lab.cli) and the widgets (ui.widgets)
read names, types, defaults and help from the same fields, so nothing is copied by hand.

A run is stopped by its `on_progress` callback raising (the job runner raises `Cancelled`;
Streamlit raises its own exception when the user clicks Stop). What a stopped run keeps is
the last `Progress.partial`; an experiment whose partial is not already a result turns it
into one with `partial_result(lm, cfg, partial)` (see lab.registry).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol

import pandas as pd


@dataclass(frozen=True)
class Progress:
    """Where a run is: the only thing any experiment sends to `on_progress`."""

    done: float            # units finished so far (0..total)
    total: float           # units in the whole run
    unit: str              # what one unit is: "step", "epoch", "layer", ...
    message: str = ""      # one line for a progress bar or a terminal
    partial: Any = None    # what a Stop keeps (a result, or state `partial_result` turns into one)

    @property
    def fraction(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0) if self.total else 0.0


OnProgress = Callable[[Progress], None]


def format_duration(seconds: float) -> str:
    """Seconds as a progress message says them: "42 s", "3 min 05 s"."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Cancelled(Exception):
    """Raised by an `on_progress` callback to stop a run at that point."""


def report(on_progress: OnProgress | None, done: float, total: float, unit: str,
           message: str = "", partial: Any = None) -> None:
    """Send one `Progress` when there is a callback (experiments call this, not the callback)."""
    if on_progress is not None:
        on_progress(Progress(done, total, unit, message, partial))


class Result(Protocol):
    """What `run` returns."""

    def to_record(self) -> dict: ...

    def frames(self) -> dict[str, pd.DataFrame]: ...


# ---------------------------------------------------------------- config fields

def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          gt: float | None = None, file: bool = False, cli: bool = True) -> Any:
    """A documented config field. `min`/`max` are inclusive bounds, `gt` an exclusive lower
    bound; `file=True` makes the CLI read the value from `--NAME-file PATH`; `cli=False` keeps
    it off the command line (e.g. a seed a nested config takes from its parent)."""
    meta = {"help": help, "min": min, "max": max, "gt": gt, "file": file, "cli": cli}
    if isinstance(default, (list, dict, set)):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Field:
    """One config field as the CLI and the widgets see it."""

    name: str
    type: Any              # the resolved annotation
    default: Any
    help: str
    meta: dict

    @property
    def choices(self) -> tuple | None:
        lit = _literal(self.type)
        return typing.get_args(lit) if lit is not None else None

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def base(self) -> Any:
        """The annotation without `| None`."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if isinstance(self.type, types.UnionType) or typing.get_origin(self.type) is typing.Union:
            return args[0] if len(args) == 1 else self.type
        return self.type


def fields(cls) -> list[Field]:
    """The documented fields of a config class, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(Field(f.name, hints[f.name], default, f.metadata.get("help", ""),
                         dict(f.metadata)))
    return out


def field_of(cls, path: str) -> Field:
    """A field by name; "sae.k" reaches into a nested config."""
    head, _, rest = path.partition(".")
    f = next((f for f in fields(cls) if f.name == head), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no field {head!r}")
    if not rest:
        return f
    inner = field_of(f.base, rest)    # its default is the nested class's; the parent's wins:
    value = f.default
    for part in rest.split("."):
        value = getattr(value, part)
    return dataclasses.replace(inner, default=value)


def _literal(tp):
    if typing.get_origin(tp) is Literal:
        return tp
    for a in typing.get_args(tp):
        if typing.get_origin(a) is Literal:
            return a
    return None


def validate(cfg) -> None:
    """Check every field of `cfg` against its annotation and `param` bounds (one sentence)."""
    for f in fields(type(cfg)):
        value = getattr(cfg, f.name)
        if value is None and f.optional:
            continue
        _check(f, value)


def _check(f: Field, value) -> None:
    choices, base = f.choices, f.base
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{f.name} must be true or false, got {value!r}")
        return
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int) and not _is_np_int(value):
            raise ValueError(f"{f.name} must be an integer, got {value!r}")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value!r}")
    else:
        return
    lo, hi, gt = f.meta.get("min"), f.meta.get("max"), f.meta.get("gt")
    if (lo is not None and value < lo) or (hi is not None and value > hi) or \
            (gt is not None and value <= gt):
        raise ValueError(f"{f.name} must be {_range(lo, hi, gt)}, got {value!r}")


def _is_np_int(value) -> bool:
    import numpy as np
    return isinstance(value, np.integer)


def _range(lo, hi, gt) -> str:
    if gt is not None:
        return f"greater than {gt:g}" + (f" and at most {hi:g}" if hi is not None else "")
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}"
    return f"at least {lo:g}" if lo is not None else f"at most {hi:g}"


def build(cls, values: dict[str, Any]):
    """`cls(**values)` where keys may be nested paths ("sae.k"): a nested config starts from
    its field's default and takes the values given for it."""
    top, nested = _group(values)
    for head, sub in nested.items():
        top[head] = replace_paths(field_of(cls, head).default, sub)
    return cls(**top)


def replace_paths(cfg, values: dict[str, Any]):
    """`dataclasses.replace` with nested paths ("sae.k") allowed."""
    top, nested = _group(values)
    for head, sub in nested.items():
        top[head] = replace_paths(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **{**_self_filled(cfg, top), **top})


def _self_filled(cfg, changes: dict[str, Any]) -> dict[str, None]:
    """The fields declared None that `cfg` filled by itself (e.g. a method's steps), as None:
    replaced with `changes`, they take the new values' defaults, not the old ones' (a preset
    with steps=500 for continuous gives discrete its own 60). A field whose value differs from
    the one `cfg` fills was set by hand and is kept."""
    blank = [f.name for f in dataclasses.fields(cfg) if f.default is None and f.name not in changes]
    if not changes or not blank:
        return {}
    own = dataclasses.replace(cfg, **{name: None for name in blank})
    return {name: None for name in blank if getattr(own, name) == getattr(cfg, name)}


def _group(values: dict[str, Any]) -> tuple[dict, dict[str, dict]]:
    top, nested = {}, {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    return top, nested


def share_seed(cfg, *names: str) -> None:
    """In a `__post_init__`: give nested configs `names` the parent's seed, so an experiment
    has one seed (the nested configs' own `seed` fields are set, never chosen)."""
    for name in names:
        nested = getattr(cfg, name)
        if nested.seed != cfg.seed:
            object.__setattr__(cfg, name, dataclasses.replace(nested, seed=cfg.seed))


# ---------------------------------------------------------------- finite results

def check_finite(values: dict[str, Any], settings: dict[str, Any]) -> None:
    """Before a run returns: a one-sentence ValueError when any of `values` (name -> number,
    sequence, array, tensor or DataFrame) is NaN or infinite, naming the `settings` (name ->
    value, e.g. {"lr": cfg.lr}) that can make a run blow up, so a page or the CLI says which
    one to lower instead of showing NaN."""
    for name, value in values.items():
        bad = _first_bad(value)
        if bad is not None:
            knobs = " or ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                for k, v in settings.items())
            raise ValueError(f"the run's {name} came out {bad}: {knobs or 'the settings'} "
                             f"made the numbers blow up; try a smaller value.")


def _first_bad(value) -> str | None:
    """"NaN" or "infinite" for the first non-finite number in `value`, else None."""
    import numpy as np
    if isinstance(value, pd.DataFrame):
        value = value.select_dtypes("number").to_numpy(dtype=float)
    elif hasattr(value, "detach"):   # a torch tensor
        value = value.detach().float().cpu().numpy()
    arr = np.asarray(value, dtype=float)
    if np.isnan(arr).any():
        return "NaN"
    return "infinite" if np.isinf(arr).any() else None


# ---------------------------------------------------------------- records

def config_record(cfg) -> dict:
    """A config as plain JSON-able data (tuples become lists; nested configs dicts)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def versions() -> dict:
    import numpy
    import torch
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "pandas": pd.__version__}


def record(experiment: str, cfg, model: str, **numbers) -> dict:
    """The common head of every `to_record()`: what ran, on what, with which libraries."""
    return {"experiment": experiment, "model": model, "seed": getattr(cfg, "seed", None),
            "config": config_record(cfg), "versions": versions(), **numbers}
