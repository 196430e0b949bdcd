"""Every layer's MLP output over token windows, in one forward pass per batch of windows."""
from __future__ import annotations

from typing import Callable

import torch

from lab.hooks import mlp_out, run_with_hooks
from lab.models import LabModel


def check_context(lm: LabModel, window_len: int) -> None:
    if window_len > lm.n_ctx:
        raise ValueError(f"windows of {window_len} tokens exceed {lm.name}'s context of {lm.n_ctx}")


@torch.no_grad()
def capture_mlp_out(lm: LabModel, windows: torch.Tensor, layers: list[int] | None = None,
                    forward_batch: int = 2, on_batch: Callable[[int, int], None] | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """MLP outputs of `layers` (default all) over token windows [n, T], position 0 dropped.

    Each forward captures every requested layer at once and stops after the deepest one.
    Returns float32 on `device` (default the CPU): [len(layers), n * (T - 1), d_model].
    """
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [n_windows, window_len >= 2], got {tuple(windows.shape)}")
    check_context(lm, windows.shape[1])
    n, T = windows.shape
    names = [mlp_out(L) for L in layers]
    out = torch.empty(len(layers), n, T - 1, lm.d_model, device=device)
    starts = range(0, n, forward_batch)
    for b, i in enumerate(starts):
        ids = windows[i:i + forward_batch].to(lm.device)
        cache = run_with_hooks(lm, names, input_ids=ids, stop_early=True, detach=True)
        for j, name in enumerate(names):
            out[j, i:i + forward_batch] = cache[name][:, 1:].float().to(out.device)   # drop pos. 0
        if on_batch is not None:
            on_batch(b + 1, len(starts))
    return out.reshape(len(layers), n * (T - 1), lm.d_model)
