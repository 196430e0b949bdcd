"""Where the lab keeps what it downloads or converts (models, fetched articles)."""
from __future__ import annotations

import os
from pathlib import Path

TEXTS_DIR = Path(__file__).parent / "texts"


def cache_dir() -> Path:
    """`$LAB_CACHE_DIR`, else `$XDG_CACHE_HOME/gpt2-lab`, else `~/.cache/gpt2-lab`."""
    if os.environ.get("LAB_CACHE_DIR"):
        root = Path(os.environ["LAB_CACHE_DIR"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpt2-lab"
    root.mkdir(parents=True, exist_ok=True)
    return root


def read_text(name: str) -> str:
    """A sample text shipped in `lab/texts/`."""
    return (TEXTS_DIR / name).read_text(encoding="utf-8")
