"""The forward pass: one run over the text, every layer's residual stream and every block's
attention pattern kept (both through lab.hooks, so other sessions' forwards stay out)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lab.hidden import tokenize
from lab.hooks import EMBED, pattern, resid_post, run_with_hooks
from lab.lens.config import LensConfig
from lab.models import LabModel


@dataclass(frozen=True, eq=False)
class LensStates:
    """What one forward pass captured."""

    token_ids: tuple[int, ...]   # the tokens that were run (after truncation)
    tokens: tuple[str, ...]      # each token decoded on its own
    resid: torch.Tensor          # [n_layers + 1, pos, d_model]: hidden_states[0..n], all raw
    patterns: torch.Tensor       # [n_layers, head, query, key]: each block's attention
    n_text_tokens: int           # tokens in the whole text, before truncation
    max_tokens: int              # the limit that applied: min(model context, config's limit)
    forward_seconds: float


def layer_labels(n_layers: int) -> tuple[str, ...]:
    """Layer L is hidden_states[L]: 0 the embeddings, L >= 1 the raw output of block L - 1."""
    return ("embed", *(f"block {b}" for b in range(n_layers)))


def capture_lens(lm: LabModel, cfg: LensConfig) -> LensStates:
    ids, n_text, limit = tokenize(lm, cfg.input_text(), cfg.max_tokens)
    states = [EMBED] + [resid_post(b) for b in range(lm.n_layers)]
    patterns = [pattern(b) for b in range(lm.n_layers)]
    t0 = time.perf_counter()
    with torch.no_grad():
        acts = run_with_hooks(lm, states + patterns, input_ids=torch.tensor([ids], device=lm.device),
                              stop_early=False, detach=True)
    seconds = time.perf_counter() - t0
    tok = lm.tokenizer
    return LensStates(token_ids=tuple(ids), tokens=tuple(tok.decode([i]) for i in ids),
                      resid=torch.cat([acts[n] for n in states]),       # [layer, pos, d_model]
                      patterns=torch.cat([acts[n] for n in patterns]),  # [block, head, q, k]
                      n_text_tokens=n_text, max_tokens=limit, forward_seconds=seconds)
