"""Where finished results are kept for reuse: in memory (shared by all sessions, bounded in
bytes) and on disk (what `python -m lab warm` precomputed, so the first student after a
restart gets the default runs at once)."""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from lab.paths import cache_dir
from lab.sizes import nbytes


class ResultCache:
    """LRU of finished results, bounded by their size in bytes (lab.sizes.nbytes)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def get(self, key) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key, value) -> None:
        size = nbytes(value)
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            if size > self.max_bytes:
                return                      # larger than the whole cache: not kept
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items


def canonical(key: Any) -> Any:
    """`key` as plain values, a config's fields limited to those its equality compares (a
    run option such as laminar's `ray` is not one): equal keys give equal reprs."""
    if dataclasses.is_dataclass(key) and not isinstance(key, type):
        return (type(key).__qualname__,) + tuple(
            (f.name, canonical(getattr(key, f.name))) for f in dataclasses.fields(key) if f.compare)
    if isinstance(key, tuple):
        return tuple(canonical(k) for k in key)
    return key


class DiskCache:
    """Pickled results under the lab's cache dir, one file per job key (model, device,
    experiment, config); written by `python -m lab warm`, read by the runner. The folder is
    per lab version, so a new release never serves an old result."""

    def __init__(self, folder: Path | None = None):
        import lab
        self.folder = folder or cache_dir() / "results" / lab.__version__

    def _path(self, key: tuple) -> Path:
        return self.folder / (hashlib.sha256(repr(canonical(key)).encode()).hexdigest()[:32] + ".pkl")

    def get(self, key: tuple) -> Any:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with path.open("rb") as f:
                stored_key, value = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None                      # unreadable or from other code: recompute
        return value if stored_key == key else None

    def put(self, key: tuple, value: Any) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump((key, value), f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)                    # atomic: a reader never sees half a file
        return path
