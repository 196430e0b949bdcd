"""The process's one SAE loader: every page, the CLI and the experiments open SAEs here.

    loaded = load_sae(source)           a folder (SAELens's format or the lab's) or a hub id,
                                        read once per process and kept (MAX_SAES, least
                                        recently used dropped first)
    loaded = fitting(lm, source, hook)  the same, checked against the model (and the hook the
                                        caller names): one sentence when it does not fit
    n = units(lm, point, source)        how many units an index counts: the SAE's latents, or
                                        the hook point's width (the one place it is worked out)

A folder is kept under its path and the times its files were written: one saved again (the
SAE page trains into the same folder) is read again. `read_sae` reads without the cache.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from lab.hooks import HookPoint
from lab.sae.saelens import (CFG, LAB_CFG, LAB_WEIGHTS, WEIGHTS, LoadedSAE, _load_saelens,
                             _read_json, _training_data, check_finite, check_fits,
                             first_sentence, from_lab)

MAX_SAES = 4      # a wide SAE on SmolLM2 is ~40 MB of float32: a few in memory, not one per page
_CACHE: OrderedDict[tuple, LoadedSAE] = OrderedDict()
_LOCK = threading.Lock()


def read_sae(source: str) -> LoadedSAE:
    """The SAE in `source`, read now: a local folder (the lab's format first when it has both:
    its metadata says more, e.g. what the SAE was trained on) or a hub id."""
    source = str(source).strip()
    if not source:
        raise ValueError("no SAE given: name a folder or a Hugging Face hub id")
    folder = _folder(source)
    if not folder.is_dir():
        raise ValueError(f"{source} is a file, not a folder with an SAE")
    if (folder / LAB_CFG).exists() and (folder / LAB_WEIGHTS).exists():
        return _load_lab(folder, source)
    if (folder / CFG).exists():
        return _load_saelens(folder, source)
    raise ValueError(f"{source} has neither {CFG} + {WEIGHTS} (SAELens) nor {LAB_CFG} + "
                     f"{LAB_WEIGHTS} (this lab)")


def load_sae(source: str) -> LoadedSAE:
    """`read_sae(source)`, kept for the process (the lock: two sessions read it once)."""
    key = (str(source).strip(), _stamp(str(source).strip()))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        loaded = read_sae(source)
        _CACHE[key] = loaded
        while len(_CACHE) > MAX_SAES:
            _CACHE.popitem(last=False)
        return loaded


def fitting(lm, source: str, hook: HookPoint | str | None = None) -> LoadedSAE:
    """The SAE of `source`, checked against `lm` (hook range, width) and, when given, against
    the hook point the caller names."""
    loaded = load_sae(source)
    check_fits(loaded, lm)
    name = hook.name if isinstance(hook, HookPoint) else hook
    if name and loaded.hook != name:
        raise ValueError(f"SAE {source} reads {loaded.hook}: set hook to {loaded.hook}, got {name}")
    return loaded


def units(lm, point: HookPoint, sae: LoadedSAE | str | None = None) -> int:
    """How many units an index at `point` counts: the SAE's latents (an SAE or its source), or
    the hook point's own width (d_mlp for MLP neurons, else d_model)."""
    if not sae:
        return point.width(lm)
    return int((load_sae(sae) if isinstance(sae, str) else sae).n_latents)


def describe(lm, source: str) -> str:
    """What the SAE is, in words, after checking it fits `lm` (one sentence when not)."""
    return fitting(lm, source).describe()


def _folder(source: str) -> Path:
    folder = Path(source).expanduser()
    return folder if folder.exists() else _download(source)


def _stamp(source: str) -> tuple:
    """When a local folder's files were last written (empty for a hub id)."""
    folder = Path(source).expanduser()
    if not source or not folder.is_dir():
        return ()
    return tuple((name, (folder / name).stat().st_mtime_ns)
                 for name in (CFG, WEIGHTS, LAB_CFG, LAB_WEIGHTS) if (folder / name).exists())


def _load_lab(folder: Path, source: str) -> LoadedSAE:
    from lab.sae.model import SparseAutoencoder
    from lab.sae.persist import load
    meta = _read_json(folder / LAB_CFG).get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: metadata in {LAB_CFG} is not a JSON object")
    if not meta.get("hook"):
        raise ValueError(f"{source} does not say which hook point its SAE reads (no "
                         "metadata.hook in config.json)")
    try:
        lab_sae = load(folder, SparseAutoencoder)
    except ValueError:       # the SAE's own checks (activation, k, ...): already one sentence
        raise
    except Exception as e:   # a damaged sae.safetensors raises safetensors' own error type
        raise ValueError(f"{source} is not a readable lab SAE ({first_sentence(e)})") from None
    sae = from_lab(lab_sae)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        check_finite(getattr(sae, name), name, source)
    n_tokens = meta.get("n_tokens")
    return LoadedSAE(sae, meta["hook"], sae.d_in, sae.n_latents, source, meta.get("model", ""),
                     "lab", _training_data(meta.get("training_data")),
                     n_tokens if isinstance(n_tokens, int) else 0,
                     bool(meta.get("prepend_bos", False)), meta["hook"])


def _download(source: str) -> Path:
    parts = source.strip("/").split("/")
    if len(parts) < 2 or source.startswith((".", "/", "~")):
        raise ValueError(f"no folder {source}, and it is not a hub id (owner/repo/folder)")
    from lab.models import hub_reachable
    if not hub_reachable():
        raise ValueError(f"{source} is not a folder here and the Hugging Face hub is not "
                         "reachable (offline): download it where there is internet and give the folder")
    from huggingface_hub import snapshot_download
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    patterns = [f"{sub}/{CFG}", f"{sub}/{WEIGHTS}"] if sub else [CFG, WEIGHTS]
    try:
        root = Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:   # hub errors come in many types; the user needs one sentence
        raise ValueError(f"could not download {source} from the hub: {first_sentence(e)}") from None
    return root / sub if sub else root


