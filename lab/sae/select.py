"""Top-K selection from a bfloat16 encoder pass, with float32 values and a float32 ranking.

The dense encoder matmul [batch, d_in] x [d_in, latents] is most of a Top-K step's time, and
it only serves to find each row's k largest pre-activations. On a CPU with AMX tiles or
AVX512-BF16 the same matmul in bfloat16 is ~5x faster (measured, 256 x 768 x 6144, one thread:
Xeon with AMX 2.5 ms vs 16 ms; AMD EPYC with AVX512-BF16, no AMX, 5.5 ms vs 25 ms).
So the step ranks in bfloat16, keeps 1.5 k candidates per row (`candidates`), computes their
pre-activations in float32 (a sampled matmul: 1.5 k dot products per row) and keeps the k
largest of those.

The result equals the float32 selection unless one of a row's true top k falls below its
bfloat16 rank 1.5 k: its bfloat16 error (inputs rounded to 8 significant bits, ~0.4% of each
product) would have to exceed the gap between the k-th and the 1.5 k-th pre-activation. The
values, hence the loss and every gradient, are float32 either way. Tests check the selection
against float32 on trained and untrained codes.

Off where bfloat16 is not fast (neither AMX nor AVX512-BF16: there oneDNN emulates it, slower
than float32), on other devices, and when the candidates would be all the latents.
`LAB_SAE_BF16_SELECT=0` / `=1` forces it off or on (tests and the bench use it to run both
paths on one machine).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch


def candidates(k: int) -> int:
    """Candidates per row ranked in float32: 1.5 k. Measured: the true top 32 of 6144 latents
    sat at bfloat16 rank 39 at worst (atoms and low-rank data, 4096 rows, epochs 0-2)."""
    return k + (k + 1) // 2


@functools.cache
def _fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively: AMX tiles or AVX512-BF16 dot products."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def fast_select(device: torch.device | str, k: int, n_latents: int) -> bool:
    """Whether a Top-K code on `device` selects through the bfloat16 pass."""
    forced = os.environ.get("LAB_SAE_BF16_SELECT")
    if torch.device(device).type != "cpu" or candidates(k) >= n_latents:
        return False
    return forced == "1" if forced in ("0", "1") else _fast_bf16()


class LowPrecision:
    """Reusable bfloat16 buffers of one trainer: the encoder's copy and the batch's
    pre-activations (fresh buffers fault their pages in on every step)."""

    def __init__(self, n_latents: int, d_in: int, batch: int):
        self.w = torch.empty(n_latents, d_in, dtype=torch.bfloat16)
        self.b = torch.empty(n_latents, dtype=torch.bfloat16)
        self.pre = torch.empty(batch, n_latents, dtype=torch.bfloat16)

    def refresh(self, W_enc: torch.Tensor, b_enc: torch.Tensor) -> None:
        """Copy the current encoder (every selection: never a stale one)."""
        self.w.copy_(W_enc)
        self.b.copy_(b_enc)


GROUP = 8   # latents per group of `top_m`'s first pass (4-16 timed at 6144 and 4608 latents:
            # 8 and 12 fastest, within 3% of each other)


def top_m(pre: torch.Tensor, m: int) -> torch.Tensor:
    """Indices [B, m] (any order) of each row's m largest entries of `pre` [B, L]: the same
    values as `pre.topk(m)`, in two cheaper passes. Latents form L / GROUP strided groups
    (c, c + L/GROUP, ...); a row's m largest entries all lie in its m groups with the largest
    maxima (an entry outside them is at most the m-th group maximum, and m entries, those
    maxima, are at least that), so the second pass ranks m x GROUP entries instead of L.
    256 x 6144 bfloat16, m = 48, 1 thread: torch.topk 5.2 ms on the whole rows, 3.2 ms in two
    passes (Xeon); two passes of numpy's argpartition (`_largest`) 1.6 ms vs torch's 3.1 (EPYC;
    at 2 threads 1.4 vs 1.6: numpy's is one thread). Ties may pick other, equal entries."""
    B, L = pre.shape
    G = L // GROUP
    if L % GROUP or G < 2 * m:   # too few groups to pay off: one pass
        return _largest(pre, m)
    grouped = pre.reshape(B, GROUP, G)   # a view of a contiguous `pre`      # [B, GROUP, G]
    groups = _largest(grouped.amax(1), m)                                   # [B, m]
    members = grouped.gather(2, groups.unsqueeze(1).expand(B, GROUP, m))   # [B, GROUP, m]
    best = _largest(members.view(B, GROUP * m), m)
    return (best // m) * G + groups.gather(1, best % m)


def _largest(a: torch.Tensor, m: int) -> torch.Tensor:
    """Indices [B, m] (any order) of each row's m largest entries of `a` [B, n]. On the CPU
    numpy's introselect (argpartition) beats torch's topk ~2x at top_m's sizes (n 384-768,
    m 48, one thread, measured); NaN counts as largest in both."""
    if a.device.type != "cpu" or m >= a.shape[1]:
        return a.topk(m, dim=1, sorted=False).indices
    x = a.detach().float().numpy()            # bfloat16 has no numpy type; float32 is exact
    return torch.from_numpy(np.argpartition(x, x.shape[1] - m, axis=1)[:, -m:])


def topk_bf16(xc: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int,
              low: LowPrecision) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [B, k] ascending per row, their float32 pre-activations [B, k]) of the
    centred rows `xc` [B, d_in], ranked in bfloat16 first (`low` holds the encoder's copy)."""
    from lab.sae.kernels import _sampled_rows_dot
    B, m = xc.shape[0], candidates(k)
    low.refresh(W_enc, b_enc)
    out = low.pre[:B] if B <= low.pre.shape[0] else None
    pre16 = torch.addmm(low.b, xc.to(torch.bfloat16), low.w.T, out=out)
    cand = top_m(pre16, m)                                    # [B, m], in no order
    crow = torch.arange(0, B * m + 1, m, device=xc.device)
    exact = _sampled_rows_dot(crow, cand.reshape(-1), xc, W_enc).view(B, m) + b_enc[cand]
    best = exact.topk(k, dim=1, sorted=False)
    # sort only the k winners (not the m candidates: 0.35 ms a step at 256 x 48, 2 threads)
    idx, order = cand.gather(1, best.indices).sort(dim=1)                    # ascending
    return idx, best.values.gather(1, order)
