"""The logit lens: every layer's residual stream read through the final norm and the
unembedding (`Arch.read_out`, what the model does after its last block), batched over layers.

Logits are [layers, pos, vocab]; for SmolLM2 one layer of a 260-token text is 12.8 M numbers,
so the layers go through in chunks of at most `BUDGET` numbers (a few such tensors live at
once), each chunk one batched matmul.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from lab.models import LabModel

BUDGET = 1 << 25   # logits per chunk (128 MB in float32)


@dataclass(frozen=True)
class LensChunk:
    """The lens at layers lo..hi-1 (arrays over those layers)."""

    lo: int
    hi: int
    p_true: np.ndarray    # [c, pos - 1] probability of the token that comes next
    rank: np.ndarray      # [c, pos - 1] its rank among all tokens (1 = top)
    kl: np.ndarray        # [c, pos] KL(final layer || this layer), nats
    top_ids: np.ndarray   # [c, pos, k] most likely tokens
    top_p: np.ndarray     # [c, pos, k] their probabilities


def chunk_size(n_pos: int, vocab: int, budget: int = BUDGET) -> int:
    return max(1, budget // max(1, n_pos * vocab))


def lens_chunks(lm: LabModel, resid: torch.Tensor, token_ids, top_k: int,
                budget: int = BUDGET) -> Iterator[LensChunk]:
    """`resid` [layers, pos, d_model] through the lens, `chunk_size` layers at a time."""
    model, arch = lm.model, lm.arch
    nxt = torch.tensor(token_ids[1:], device=resid.device)               # [pos - 1]
    with torch.no_grad():
        final = arch.read_out(model, resid[-1:]).log_softmax(-1)          # [1, pos, vocab]
        step = chunk_size(resid.shape[1], final.shape[-1], budget)
        for lo in range(0, resid.shape[0], step):
            hi = min(lo + step, resid.shape[0])
            logits = arch.read_out(model, resid[lo:hi])                   # [c, pos, vocab]
            yield _read(logits, final, nxt, top_k, lo, hi)


def _read(logits: torch.Tensor, final: torch.Tensor, nxt: torch.Tensor, top_k: int,
          lo: int, hi: int) -> LensChunk:
    logp = logits.log_softmax(-1)
    index = nxt.view(1, -1, 1).expand(hi - lo, -1, 1)                      # [c, pos - 1, 1]
    true_logit = logits[:, :-1].gather(-1, index)
    rank = (logits[:, :-1] > true_logit).sum(-1) + 1
    kl = (final.exp() * (final - logp)).sum(-1)
    top_p, top_ids = logp.topk(top_k, dim=-1)
    return LensChunk(lo, hi, p_true=_np(logp[:, :-1].gather(-1, index).squeeze(-1).exp()),
                     rank=_np(rank), kl=_np(kl.clamp_min(0)), top_ids=_np(top_ids),
                     top_p=_np(top_p.exp()))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.cpu().numpy() if not t.is_floating_point() else t.float().cpu().numpy()
