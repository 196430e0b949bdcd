"""The forward pass: one run over the text, every state of the residual stream kept."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from lab.hidden.config import check_text
from lab.hooks import EMBED, resid_post, run_with_hooks
from lab.models import LabModel


@dataclass(frozen=True, eq=False)
class HiddenStates:
    """What one forward pass captured; `values` is the only large field."""

    model: str                   # registry name of the model that ran
    values: np.ndarray           # [n_states, n_tokens, d_model] float32, in the order of `state_labels`
    labels: tuple[str, ...]      # one per state: "embed", "block 0", ..., "block n-1", "final norm"
    token_ids: tuple[int, ...]   # the tokens that were run (after truncation)
    tokens: tuple[str, ...]      # each token decoded on its own, for tooltips
    used_text: str               # the text those tokens decode to: what the model actually read
    n_text_tokens: int           # tokens in the whole text, before truncation
    max_tokens: int              # the limit that applied: min(model context, caller's limit)
    forward_seconds: float       # wall time of the forward pass

    @property
    def n_states(self) -> int:
        return self.values.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.values.shape[1]

    @property
    def d_model(self) -> int:
        return self.values.shape[2]

    @property
    def truncated(self) -> bool:
        return self.n_text_tokens > self.n_tokens


def state_labels(n_layers: int) -> tuple[str, ...]:
    return ("embed", *(f"block {L}" for L in range(n_layers)), "final norm")


def hook_points(n_layers: int) -> list[str]:
    return [EMBED] + [resid_post(L) for L in range(n_layers)]


def tokenize(lm: LabModel, text: str, max_tokens: int | None = None) -> tuple[list[int], int, int]:
    """(token ids cut to the limit, tokens in the whole text, the limit) for `text`."""
    check_text(text)
    limit = lm.n_ctx if max_tokens is None else min(int(max_tokens), lm.n_ctx)
    if limit < 2:
        raise ValueError(f"The token limit must be at least 2 (got {max_tokens}).")
    ids = list(lm.tokenizer(text, verbose=False)["input_ids"])
    if not ids:
        raise ValueError("The text produced no tokens: paste some ordinary text.")
    return ids[:limit], len(ids), limit


def capture_states(lm: LabModel, text: str, max_tokens: int | None = None) -> HiddenStates:
    """Run the model once over `text` (cut to `max_tokens`, at most its context) and keep
    the embeddings, every block's raw output, and the final-normed last output."""
    ids, n_text, limit = tokenize(lm, text, max_tokens)
    input_ids = torch.tensor([ids], device=lm.device)  # [1, pos]
    names = hook_points(lm.n_layers)
    t0 = time.perf_counter()
    with torch.no_grad():
        acts = run_with_hooks(lm, names, input_ids=input_ids, stop_early=False, detach=True)
        normed = lm.arch.final_norm_of(lm.model)(acts[names[-1]])  # [1, pos, d_model]
    seconds = time.perf_counter() - t0
    stacked = torch.cat([acts[n] for n in names] + [normed])  # [n_states, pos, d_model]
    tok = lm.tokenizer
    return HiddenStates(model=lm.name, values=stacked.float().cpu().numpy(),
                        labels=state_labels(lm.n_layers), token_ids=tuple(ids),
                        tokens=tuple(tok.decode([i]) for i in ids), used_text=tok.decode(ids),
                        n_text_tokens=n_text, max_tokens=limit, forward_seconds=seconds)
