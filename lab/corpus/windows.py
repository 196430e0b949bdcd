"""Token ids of a text and the seeded token windows an experiment reads."""
from __future__ import annotations

import hashlib

import torch

from lab.cache import ResultCache
from lab.corpus.article import CorpusTooShort


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Token ids of the whole text, no special tokens: LongTensor [n_tokens]."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False,
                    verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


TOKEN_BYTES = 32 << 20    # corpora kept tokenized, process-wide (a long article: ~100 kB)
_TOKENS = ResultCache(TOKEN_BYTES)


def token_ids(lm, text: str) -> torch.Tensor:
    """`tokenize` with `lm`'s tokenizer, kept per (model, text): a page rerun does not
    tokenize its corpus again."""
    key = (lm.name, hashlib.sha256(text.encode()).hexdigest())
    ids = _TOKENS.get(key)
    if ids is None:
        ids = tokenize(lm.tokenizer, text)
        _TOKENS.put(key, ids)
    return ids


def windows_that_fit(n_tokens: int, n_windows: int, window_len: int) -> list[tuple[int, int]]:
    """(n_windows, window_len) shapes that fit in n_tokens: fewer windows, or shorter ones."""
    offers = []
    if n_tokens // window_len >= 1:
        offers.append((min(n_windows, n_tokens // window_len), window_len))
    if n_tokens // n_windows >= 2:
        offers.append((n_windows, min(window_len, n_tokens // n_windows)))
    return [o for i, o in enumerate(offers) if o not in offers[:i]]


def sample_windows(token_ids: torch.Tensor, n_windows: int, window_len: int, seed: int) -> torch.Tensor:
    """`n_windows` non-overlapping windows of `window_len` tokens, placed by `seed`.

    The corpus is cut into consecutive slots after a random offset; the windows are a random
    choice of slots, so no token is used twice. Returns LongTensor [n_windows, window_len].
    """
    if n_windows < 1 or window_len < 2:
        raise CorpusError("Need at least 1 window of at least 2 tokens.")
    n = int(token_ids.numel())
    need = n_windows * window_len
    if n < need:
        offers = windows_that_fit(n, n_windows, window_len)
        fit = " or ".join(f"{w} x {t}" for w, t in offers) or "nothing useful"
        raise CorpusTooShort(f"The corpus has {n:,} tokens but {n_windows} x {window_len} windows "
                             f"need {need:,}; what fits: {fit}.", offers)
    gen = torch.Generator().manual_seed(seed)
    n_slots = n // window_len
    offset = int(torch.randint(0, n - n_slots * window_len + 1, (1,), generator=gen))
    slots = torch.randperm(n_slots, generator=gen)[:n_windows].sort().values
    starts = offset + slots * window_len
    return torch.stack([token_ids[s:s + window_len] for s in starts.tolist()])


def fit_windows(token_ids: torch.Tensor, n_windows: int, window_len: int, seed: int,
                fit: bool = False) -> tuple[int, int, torch.Tensor]:
    """(n_windows, window_len, windows): the windows asked for, or with `fit` and a corpus too
    short for them, the first shape that fits ("use what fits"); else CorpusTooShort."""
    try:
        return n_windows, window_len, sample_windows(token_ids, n_windows, window_len, seed)
    except CorpusTooShort as e:
        if not fit or not e.offers:
            raise
        n_windows, window_len = e.offers[0]
        return n_windows, window_len, sample_windows(token_ids, n_windows, window_len, seed)
