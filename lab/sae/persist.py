"""An SAE on disk: `sae.safetensors` (weights + scale) and `config.json` in one folder, or
the same files as one zip for a download button. When the metadata names the hook point the
SAE reads, the folder also gets SAELens's two files (`cfg.json`, `sae_weights.safetensors`:
lab.sae.saelens), so an SAE trained here opens in SAELens as it is."""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

FILES = ("sae.safetensors", "config.json")
SAELENS_FILES = ("cfg.json", "sae_weights.safetensors")


def save(sae, folder: str | Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    save_file(tensors, str(folder / FILES[0]))
    cfg = {**sae.config_dict(), "metadata": metadata or {}}
    (folder / FILES[1]).write_text(json.dumps(cfg, indent=2, default=str))
    meta = metadata or {}
    if meta.get("hook"):
        from lab.sae.saelens import save_saelens
        extra = {"training_data": meta["training_data"]} if meta.get("training_data") else {}
        save_saelens(sae, folder, meta["hook"], str(meta.get("model", "")),
                     bool(meta.get("prepend_bos", False)), **extra)
    return folder


def load(folder: str | Path, cls):
    """The SAE saved in `folder`, as `cls` (the caller's class: no import back into model.py)."""
    from safetensors.torch import load_file
    folder = Path(folder)
    cfg = json.loads((folder / FILES[1]).read_text())
    cfg.pop("metadata", None)
    sae = cls(**cfg)
    sae.load_state_dict(load_file(str(folder / FILES[0])))
    return sae


def to_zip_bytes(sae, metadata: dict | None = None) -> bytes:
    """The `save` folder as one zip."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        folder = save(sae, tmp, metadata)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in FILES + SAELENS_FILES:
                if (folder / name).exists():
                    zf.write(folder / name, name)
    return buf.getvalue()
