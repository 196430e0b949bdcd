"""Where the feature view's SAEs live on disk (under lab.paths.cache_dir()/saes).

    default_sae(lm, seed)     the seed's Palinka SAE for this model (the SAE page's default
                              run), trained on first use and kept
    keep_sae(sae, metadata)   a trained SAE saved under a name made from its weights, so the
                              folder names the SAE (the job runner keys results on the config)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from pathlib import Path

from lab.paths import cache_dir


def saes_dir() -> Path:
    folder = cache_dir() / "saes"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def _publish(folder: Path, write) -> Path:
    """`write(tmp)` then rename into place: two jobs saving the same SAE never mix files."""
    if folder.exists():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    write(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:          # another job published it first: theirs is the same SAE
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def keep_sae(sae, metadata: dict) -> str:
    """Save the lab's SparseAutoencoder (with metadata["hook"], ["model"]) and return its
    folder; the same weights always give the same folder."""
    digest = hashlib.sha256()
    for name, t in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    digest.update(json.dumps({"hook": metadata.get("hook"), "model": metadata.get("model")}).encode())
    name = f"{_slug(str(metadata.get('model', '')))}-{_slug(str(metadata.get('hook', '')))}-{digest.hexdigest()[:12]}"
    return str(_publish(saes_dir() / name, lambda tmp: sae.save(tmp, metadata)))


def default_sae(lm, seed: int, on_progress=None) -> str:
    """The folder of the SAE page's default run for `lm` and `seed`, trained if not kept yet."""
    from lab import sae_text
    from lab.experiment import config_record
    cfg = sae_text.SAETextConfig(seed=seed)
    key = hashlib.sha256(json.dumps({"model": lm.name, "config": config_record(cfg)},
                                    sort_keys=True).encode()).hexdigest()[:12]
    folder = saes_dir() / f"palinka-{_slug(lm.name)}-seed{seed}-{key}"
    if not folder.exists():
        result = sae_text.run(lm, cfg, on_progress)
        _publish(folder, result.export)
    return str(folder)
