"""How many bytes a result holds: the shared result cache and the session budget count these."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import torch


def nbytes(obj, _seen: set[int] | None = None) -> int:
    """Approximate memory of `obj`: tensors, arrays and frames by their buffers; containers,
    dataclasses and plain objects by what they hold (each object counted once)."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return int(obj.memory_usage(deep=True).sum()) if isinstance(obj, pd.DataFrame) else \
            int(obj.memory_usage(deep=True))
    if isinstance(obj, torch.nn.Module):
        return sum(nbytes(t, seen) for t in [*obj.parameters(), *obj.buffers()])
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return sys.getsizeof(obj)
    if isinstance(obj, dict):
        return sum(nbytes(k, seen) + nbytes(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(nbytes(v, seen) for v in obj)
    if dataclasses.is_dataclass(obj):
        return sum(nbytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__"):
        return nbytes(vars(obj), seen)
    return sys.getsizeof(obj)
