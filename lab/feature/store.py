"""Where the feature view's SAEs live on disk (under lab.paths.cache_dir()/saes).

    corpus_sae(lm, seed)      the default: an SAE on the train parts of every bundled text
                              (lab.corpus.sources), latents sized to the data, trained on
                              first use and kept; the held-out parts stay unseen
    default_sae(lm, seed)     the original notes' Palinka SAE for this model (the SAE page's
                              default run on the ~230-token pálinka text), trained and kept
    sae_folder(lm, name, seed)  the config's `sae` field -> a folder: "" the corpus SAE,
                              ":palinka" the Palinka SAE, anything else as given
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


CORPUS_SAE, PALINKA_SAE = "", ":palinka"
TOKENS_PER_LATENT = 20      # the corpus SAE's size: at least this many training tokens per latent
CORPUS_K = 16               # its active latents per token
FORMAT = 2                  # bumped when what a kept SAE's metadata says changes


def sae_folder(lm, name: str, seed: int, on_progress=None) -> str:
    """The folder for the config's `sae` field, training a built-in SAE on first use."""
    if name == CORPUS_SAE:
        return corpus_sae(lm, seed, on_progress)
    if name == PALINKA_SAE:
        return default_sae(lm, seed, on_progress)
    return name


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([FORMAT, *parts], sort_keys=True, default=str)
                          .encode()).hexdigest()[:12]


def corpus_config(n_tokens: int, seed: int):
    """The corpus SAE's settings: the SAE page's, with the dictionary sized to the data."""
    from lab.sae import SAEConfig
    n = max(4 * CORPUS_K, n_tokens // TOKENS_PER_LATENT // 32 * 32)
    return SAEConfig(n_latents=n, k=CORPUS_K, seed=seed)


def corpus_sae(lm, seed: int, on_progress=None) -> str:
    """The folder of the corpus SAE for `lm` and `seed`, trained if not kept yet."""
    import torch

    from lab import sae_text
    from lab.corpus.sources import resolve, training_record
    from lab.experiment import config_record, report, versions
    from lab.sae import SAETrainer
    from lab.sae_text.capture import text_activations
    layer = sae_text.default_layer(lm.n_layers)
    parts = [resolve(f"{name}:train") for name in _bundled()]
    folder = saes_dir() / f"corpus-{_slug(lm.name)}-seed{seed}-{_key(lm.name, seed, layer, [p.sha256 for p in parts])}"
    if folder.exists():
        return str(folder)
    report(on_progress, 0, 1, "step", "The corpus SAE: reading the bundled texts' train parts...")
    acts = [text_activations(lm, p.text, layer, "mlp_out", drop_first=True) for p in parts]
    rows = torch.cat([a.acts for a in acts])
    cfg = corpus_config(rows.shape[0], seed)
    trainer, row = SAETrainer(rows, cfg), {}
    for _ in range(cfg.epochs):
        row = trainer.epoch()
        report(on_progress, row["epoch"], cfg.epochs, "epoch",
               f"The corpus SAE (first use; then kept): epoch {row['epoch']}/{cfg.epochs}, "
               f"nMSE {row['nmse']:.3g}")
    trained = training_record(parts)
    for rec, a in zip(trained, acts):
        rec["tokens"] = a.n_tokens
    meta = {"model": lm.name, "layer": layer, "hook": acts[0].hook, "seed": seed,
            "kind": "corpus SAE", "config": config_record(cfg), "n_tokens": int(rows.shape[0]),
            "dropped_first_token": True, "prepend_bos": False, "training_data": trained,
            "final": {k: float(v) for k, v in row.items()}, "versions": versions()}
    _publish(folder, lambda tmp: trainer.sae.save(tmp, meta))
    return str(folder)


def _bundled() -> list[str]:
    from lab.corpus import bundled_texts
    return bundled_texts()


def default_sae(lm, seed: int, on_progress=None) -> str:
    """The folder of the SAE page's default run for `lm` and `seed` (the original notes'
    Palinka SAE), trained if not kept yet."""
    from lab import sae_text
    from lab.experiment import config_record
    cfg = sae_text.SAETextConfig(seed=seed)
    key = _key({"model": lm.name, "config": config_record(cfg)})
    folder = saes_dir() / f"palinka-{_slug(lm.name)}-seed{seed}-{key}"
    if not folder.exists():
        result = sae_text.run(lm, cfg, on_progress)
        _publish(folder, result.export)
    return str(folder)
