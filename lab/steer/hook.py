"""Add a vector at a hook point, at every position of every forward of this thread.

    x' = x + delta[row]          delta [batch, width]: one row per continuation

The module map is lab.hooks's (hook_embed: block 0's input; resid_post: block L's output;
mlp_out: block L's MLP output; mlp.hook_post: the input of the MLP's output projection).
Like lab.hooks, the hook is registered under the model's lock, remembers the thread that
registered it (the shared model serves every session) and is removed in `finally`, also when
the generation inside raises. A row whose delta is 0 is left exactly as it was (x + 0 = x).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch

from lab import hooks
from lab.models import LabModel


def _add(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    if x.shape[0] != delta.shape[0]:
        raise RuntimeError(f"the steering hook holds {delta.shape[0]} rows, the forward has "
                           f"{x.shape[0]}")
    return x + delta[:, None, :].to(x.dtype)


@contextmanager
def steering(lm: LabModel, hook: str, delta: torch.Tensor) -> Iterator[None]:
    """Inside the block, this thread's forwards have `delta[row]` [batch, width] added at
    `hook` at every position; the hook is gone on exit, whatever happened inside."""
    point = hooks.parse_hook(lm, hook)
    width = hooks.width(lm, hook)
    if delta.dim() != 2 or delta.shape[1] != width:
        raise ValueError(f"the steering vector is {tuple(delta.shape[1:])} wide, but {hook} "
                         f"is {width} wide")
    delta = delta.to(lm.device)
    handle = None
    try:
        with lm.lock:
            handle = hooks.register_patch(lm, point, lambda x: _add(x, delta),
                                         threading.get_ident())
        yield
    finally:
        if handle is not None:
            with lm.lock:
                handle.remove()


def n_hooks(lm: LabModel) -> int:
    """How many forward hooks and pre-hooks the model's modules hold (tests: none left over)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())
