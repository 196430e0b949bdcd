"""A sweep's run folder: every finished layer goes to disk as it completes, so a killed sweep
loses at most the layers in flight and `resume` carries on from the others.

    run.json          what the rows depend on: the model, the corpus' sha256, the config as run
                      less where it ran (PLACE); a resume must match it
    layer_007.json    one finished layer's row (Python's JSON keeps every float exactly)
    layers.csv        all finished rows by layer, rewritten after each one (for people)
    sae_layer_007/    that layer's SAE with keep_saes (lab.sae.save: lab format + SAELens files)

Each file is written under a temporary name and renamed, so a kill mid-write leaves the old
file or none, never half of one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lab.experiment import config_record
from lab.hooks import mlp_out
from lab.laminar.config import LaminarConfig
from lab.laminar.train import frame

# Fields that say where and how a sweep runs, not what it computes: a resume may change them.
PLACE = ("sae_device", "memory_fraction", "ray", "ray_cpus", "run_dir", "resume", "keep_saes")


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

    def __init__(self, path: Path, ident: dict):
        self.path, self.identity = path, ident

    @classmethod
    def open(cls, cfg: LaminarConfig, model: str, corpus: dict) -> "RunFolder | None":
        """The run folder `cfg` names (None without one): a new one for `run_dir` (refusing a
        folder that already holds layers), the old one for `resume` (its run must match)."""
        if not cfg.folder:
            return None
        folder = cls(Path(cfg.folder).expanduser(), identity(cfg, model, corpus))
        folder._check(resuming=bool(cfg.resume))
        folder.path.mkdir(parents=True, exist_ok=True)
        _write(folder.path / "run.json", json.dumps(folder.identity, indent=2))
        return folder

    def _check(self, resuming: bool) -> None:
        run = self.path / "run.json"
        if not run.exists():
            if resuming:
                raise ValueError(f"{self.path} has no run.json: it is not a laminar run folder.")
            return
        if not resuming and self.layer_files():
            raise ValueError(f"{self.path} already holds {len(self.layer_files())} finished "
                             f"layers: resume it (--resume {self.path}) or pick a new folder.")
        old = json.loads(run.read_text(encoding="utf-8"))
        if old != self.identity:
            raise ValueError(f"{self.path} holds another sweep ({_first_difference(old, self.identity)}): "
                             f"resume with the same model, corpus and settings, or pick a new folder.")

    def layer_files(self) -> list[Path]:
        return sorted(self.path.glob("layer_*.json"))

    def rows(self) -> list[dict]:
        """The finished layers' rows, by layer."""
        rows = [json.loads(p.read_text(encoding="utf-8")) for p in self.layer_files()]
        return sorted(rows, key=lambda r: r["layer"])

    def add(self, row: dict, sae=None) -> None:
        """One finished layer: its row (and SAE, when given), then the refreshed CSV."""
        layer = int(row["layer"])
        if sae is not None:   # before the row: a row on disk means the layer is complete
            sae.save(self.path / f"sae_layer_{layer:03d}",
                     metadata={"model": row["model"], "hook": mlp_out(layer), "layer": layer})
        _write(self.path / f"layer_{layer:03d}.json", json.dumps(row))
        _write(self.path / "layers.csv", frame(self.rows()).to_csv(index=False))


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

