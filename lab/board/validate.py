"""Is a share a record the lab made? Every check ends in one sentence (`Refused`).

A record is accepted when its experiment is one the board shows (and in lab.registry), its
head (experiment, model, seed, config, versions) has the types `lab.experiment.record`
writes, its config rebuilds into the experiment's own config class (so its validation and
bounds apply) and writes back to the very same JSON, and the numbers the board reads have the
types and shapes the result's `to_record` gives them. Anything else, whether edited by hand
or crafted, is refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

from lab.experiment import config_record, fields

BOARD_EXPERIMENTS = ("actmax", "repro", "sae", "feature")
MAX_RECORD_BYTES = 8 << 20     # repro at 64 restarts x 64 tokens x 768 would be ~30 MB: refuse
MAX_VECTOR_VALUES = 1 << 20    # values in one share's optimized vectors


class Refused(ValueError):
    """A share the board does not take (one sentence)."""


def check_record(record: Any) -> dict:
    """The record itself when the board takes it, else `Refused` saying why."""
    if not isinstance(record, dict):
        raise Refused(f"a share must be a JSON object (a result's record), not {_kind(record)}.")
    size = len(json.dumps(record, default=_no_json))
    if size > MAX_RECORD_BYTES:
        raise Refused(f"this record is {size:,} bytes; the board takes at most {MAX_RECORD_BYTES:,}.")
    name = _experiment(record)
    _head(record)
    cfg = rebuild_config(name, record["config"])
    if record["seed"] != getattr(cfg, "seed", None):
        raise Refused(f"the record's seed {record['seed']} is not its config's seed "
                      f"{getattr(cfg, 'seed', None)}: it was edited.")
    CHECKS[name](record, cfg)
    return record


def _no_json(x):
    raise Refused(f"a share must be plain JSON; it holds a {type(x).__name__}.")


def _kind(x) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(x), f"a {type(x).__name__}")


def _experiment(record: dict) -> str:
    from lab.registry import EXPERIMENTS
    name = record.get("experiment")
    if name not in {e.name for e in EXPERIMENTS}:
        raise Refused(f"{name!r} is not an experiment of the lab, so this is not a record the lab made.")
    if name not in BOARD_EXPERIMENTS:
        raise Refused(f"the board shows {', '.join(BOARD_EXPERIMENTS)} results, not {name}.")
    return name


HEAD = {"experiment": str, "model": str, "seed": int, "config": dict, "versions": dict}


def _head(record: dict) -> None:
    for key, kind in HEAD.items():
        need(record, key, kind, "the record")
    if record["seed"] < 0:
        raise Refused(f"the record's seed must be at least 0, got {record['seed']}.")
    if not record["model"].strip() or len(record["model"]) > 500:
        raise Refused("the record's model must be a model's name (1 to 500 characters).")
    if not all(isinstance(v, str) for v in record["versions"].values()):
        raise Refused("the record's versions must be library names and version strings.")


def need(obj: dict, key: str, kind, where: str):
    """obj[key] when it is of `kind` (bool is not a number here), else `Refused`."""
    if key not in obj:
        raise Refused(f"{where} has no {key!r}: it is not a record the lab made.")
    value = obj[key]
    if not is_kind(value, kind):
        raise Refused(f"{where}'s {key!r} must be {_name(kind)}, got {_kind(value)}.")
    return value


def is_kind(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _name(kind) -> str:
    return {str: "text", int: "an integer", float: "a finite number", dict: "an object",
            list: "a list", bool: "true or false"}.get(kind, kind.__name__)


# ---------------------------------------------------------------- the config

def rebuild_config(name: str, data: dict):
    """The experiment's config built from the record's (its own checks and bounds apply), and
    `Refused` unless it writes back to exactly the record's JSON."""
    from lab.registry import get
    cls = get(name).config_class
    try:
        cfg = _build(cls, data, "config")
    except Refused:
        raise
    except (ValueError, TypeError) as e:
        raise Refused(f"the record's config is not a valid {cls.__name__}: {_first(e)}") from None
    if _jsonable(config_record(cfg)) != _jsonable(data):
        raise Refused(f"the record's config does not read back as the {cls.__name__} it names: "
                      f"it was edited.")
    return cfg


def _first(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if text.endswith(".") else text + "."


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise Refused(f"the record's {where} must be an object, got {_kind(data)}.")
    own = {f.name: f for f in fields(cls)}
    extra = sorted(set(data) - set(own))
    if extra:
        raise Refused(f"the record's {where} has {extra[0]!r}, which {cls.__name__} does not have.")
    values = {k: _value(own[k].base, v, f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def _value(kind, value, where: str):
    """JSON back to the config's Python: nested configs, tuples for lists."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _build(kind, value, where)
    if isinstance(value, list):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        inner = args[0] if args else Any
        return tuple(_value(inner, v, where) for v in value)
    return value


def _jsonable(x):
    return json.loads(json.dumps(x))


# ---------------------------------------------------------------- per experiment

def _actmax(record: dict, cfg) -> None:
    _optima(record, cfg, "the actmax record")


def _repro(record: dict, cfg) -> None:
    _optima(record, cfg.actmax, "the repro record")
    rep = need(record, "reproducibility", dict, "the repro record")
    need(rep, "cosine", list, "the record's reproducibility")


def _optima(record: dict, cfg, where: str) -> None:
    rows = need(record, "restarts", list, where)
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise Refused(f"{where}'s 'restarts' must be one object per restart.")
    for r in rows:
        need(r, "final", float, "a restart")
        need(r, "nearest_tokens", str, "a restart")
    need(record, "token_norm", float, where)
    need(record, "best_cosine", float, where)
    _vectors(need(record, "vectors", list, where), len(rows), cfg.n_tokens)


def _vectors(v: list, rows: int, n_tokens: int) -> None:
    """[rows][n_tokens][d] finite numbers, d the same everywhere."""
    if len(v) != rows or not all(isinstance(p, list) and len(p) == n_tokens for p in v):
        raise Refused(f"the record's 'vectors' must be {rows} restart(s) of {n_tokens} vectors each.")
    width = {len(x) if isinstance(x, list) else -1 for p in v for x in p}
    if len(width) != 1 or min(width) < 1 or rows * n_tokens * min(width) > MAX_VECTOR_VALUES:
        raise Refused("the record's 'vectors' must all have one width (the model's d_model).")
    if not all(is_kind(a, float) for p in v for x in p for a in x):
        raise Refused("the record's 'vectors' must hold finite numbers only.")


def _sae(record: dict, cfg) -> None:
    where = "the sae record"
    for key, kind in (("best_latent", int), ("best_score", float), ("best_p", float),
                      ("best_p_fwer", float), ("n_latents", int), ("verdict", str)):
        need(record, key, kind, where)
    top = need(record, "top_latents", list, where)
    if not top or not all(isinstance(r, dict) and is_kind(r.get("latent"), int) and
                          is_kind(r.get("score"), float) for r in top):
        raise Refused("the sae record's 'top_latents' must be rows with a latent and its score.")
    dec = need(record, "decoder", dict, where)
    if not dec or not all(isinstance(k, str) and k.isdigit() and isinstance(v, list) and v and
                          all(is_kind(a, float) for a in v) for k, v in dec.items()):
        raise Refused("the sae record's 'decoder' must map latents to their decoder directions.")
    if len({len(v) for v in dec.values()}) != 1:
        raise Refused("the sae record's decoder directions must all have one width.")


def _feature(record: dict, cfg) -> None:
    where = "the feature record"
    for key, kind in (("latent", int), ("verdict", str), ("ranks", dict), ("sae_info", str),
                      ("n_latents", int)):
        need(record, key, kind, where)


CHECKS = {"actmax": _actmax, "repro": _repro, "sae": _sae, "feature": _feature}
