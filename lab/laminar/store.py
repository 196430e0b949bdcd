"""A sweep's run folder: every finished layer goes to disk as it completes, so a killed sweep
loses at most the layers in flight and `resume` carries on from the others.

    run.json          what the rows depend on: the model, the corpus' sha256, the config as run
                      less where it ran (PLACE); a resume must match it
    layer_007.json    one finished layer's row (Python's JSON keeps every float exactly)
    layers.csv        all finished rows by layer, rewritten after each one (for people)
    sae_layer_007/    that layer's SAE with keep_saes (lab.sae.save: lab format + SAELens files)

Each file is written under a temporary name and renamed, so a kill mid-write leaves the old
file or none, never half of one. Every file read back is checked (a JSON object; a row with
every column, of its type, its layer the one in its name and in range) and a bad one is named
in a one-sentence ValueError: a folder edited or damaged by hand must not crash a resume.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lab.experiment import config_record
from lab.hooks import mlp_out
from lab.laminar.config import LaminarConfig
from lab.laminar.train import COLUMNS, frame

# Fields that say where and how a sweep runs, not what it computes: a resume may change them.
PLACE = ("sae_device", "memory_fraction", "ray", "ray_cpus", "run_dir", "resume", "keep_saes")

# A row's columns by type (lab.laminar.train.fit_layer writes them); the rest are floats.
_INTS = ("layer", "n_layers", "n_latents", "n_tokens", "epochs")
_STRS = ("model", "activation")


def identity(cfg: LaminarConfig, model: str, corpus: dict) -> dict:
    """What a run folder's rows depend on (JSON-able)."""
    config = {k: v for k, v in config_record(cfg).items() if k not in PLACE}
    return {"model": model, "corpus_sha256": corpus.get("sha256"), "config": config}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunFolder:
    """The folder of one sweep (see the module's docstring)."""

    def __init__(self, path: Path, ident: dict, n_layers: int | None = None):
        self.path, self.identity, self.n_layers = path, ident, n_layers

    @classmethod
    def open(cls, cfg: LaminarConfig, model: str, corpus: dict,
             n_layers: int | None = None) -> "RunFolder | None":
        """The run folder `cfg` names (None without one): a new one for `run_dir` (refusing a
        folder that already holds layers), the old one for `resume` (its run must match, its
        rows must read back: layers in 0..n_layers-1 when `n_layers` is given)."""
        if not cfg.folder:
            return None
        folder = cls(Path(cfg.folder).expanduser(), identity(cfg, model, corpus), n_layers)
        folder._check(resuming=bool(cfg.resume))
        folder._make()
        _write(folder.path / "run.json", json.dumps(folder.identity, indent=2))
        return folder

    def _make(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:   # a file where the folder (or one above it) should be
            raise ValueError(f"run folder {self.path} cannot be made ({(e.strerror or str(e)).lower()}): "
                             f"give a new folder or a laminar run folder.") from None

    def _check(self, resuming: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"run folder {self.path} is a file: give a new folder or a laminar "
                             f"run folder.")
        run = self.path / "run.json"
        if not run.exists():
            if resuming:
                raise ValueError(f"{self.path} has no run.json: it is not a laminar run folder.")
            return
        if not resuming and self.layer_files():
            raise ValueError(f"{self.path} already holds {len(self.layer_files())} finished "
                             f"layers: resume it (--resume {self.path}) or pick a new folder.")
        old = _read_object(run, "the run's model, corpus and config")
        if old != self.identity:
            raise ValueError(f"{self.path} holds another sweep ({_first_difference(old, self.identity)}): "
                             f"resume with the same model, corpus and settings, or pick a new folder.")
        self.rows()   # every finished layer must read back before any work starts

    def layer_files(self) -> list[Path]:
        return sorted(self.path.glob("layer_*.json"))

    def rows(self) -> list[dict]:
        """The finished layers' rows, by layer."""
        rows = [self._row(p) for p in self.layer_files()]
        return sorted(rows, key=lambda r: r["layer"])

    def _row(self, path: Path) -> dict:
        """One layer file's row, checked: every column of its type, its layer the file's."""
        row = _read_object(path, "one finished layer's row")
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"{path} is not a finished layer's row (no {', '.join(missing)}): "
                             f"delete it to train that layer again.")
        for column in COLUMNS:
            _check_type(path, column, row[column])
        top = self.n_layers if self.n_layers is not None else row["n_layers"]
        if path.name != f"layer_{row['layer']:03d}.json" or not 0 <= row["layer"] < top:
            raise ValueError(f"{path} holds layer {row['layer']}, which is not its name's or is "
                             f"outside 0..{top - 1}: delete it to train that layer again.")
        return row

    def add(self, row: dict, sae=None) -> None:
        """One finished layer: its row (and SAE, when given), then the refreshed CSV."""
        layer = int(row["layer"])
        if sae is not None:   # before the row: a row on disk means the layer is complete
            sae.save(self.path / f"sae_layer_{layer:03d}",
                     metadata={"model": row["model"], "hook": mlp_out(layer), "layer": layer})
        _write(self.path / f"layer_{layer:03d}.json", json.dumps(row))
        _write(self.path / "layers.csv", frame(self.rows()).to_csv(index=False))


def _read_object(path: Path, what: str) -> dict:
    """A JSON object from `path` (`what` it should hold), else one sentence naming the file."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ValueError(f"{path} cannot be read ({(e.strerror or str(e)).lower()}).") from None
    except ValueError as e:   # not UTF-8, or not JSON (truncated by hand, garbled)
        raise ValueError(f"{path} is not valid JSON ({str(e).splitlines()[0]}): it should hold "
                         f"{what}; delete it, or the folder, to start over.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object with "
                         f"{what}; delete it, or the folder, to start over.")
    return data


def _check_type(path: Path, column: str, value) -> None:
    """One column of a row read back: an integer, a string or a number (NaN allowed: a sweep
    without a validation split writes val_nmse NaN)."""
    if column in _STRS:
        ok, kind = isinstance(value, str), "a string"
    elif column in _INTS:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if not ok:
        raise ValueError(f"{path}: {column} is {value!r}, not {kind}: delete the file to train "
                         f"that layer again.")


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    """The first differing key, as "config.n_windows 8 there, 10 now": plain values before
    nested ones (a seed before the SAE's copy of it)."""
    keys = sorted(set(old) | set(new), key=lambda k: (isinstance(old.get(k), dict), k))
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                return _first_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            return f"{prefix}{key} {a!r} there, {b!r} now"
    return "no difference"

