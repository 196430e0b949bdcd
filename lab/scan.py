"""Scan a corpus for what makes one unit fire: max-activating contexts, the "bar to beat".

    corpus = scan_corpus(lm)                      the bundled texts + every cached article,
                                                  deduplicated, cut into token windows
    values = scan(lm, corpus, hook, read)         [n_windows, window_len, units] from batched
                                                  forwards that stop after the hook's block
    top = top_contexts(lm, corpus, values[..., 0], k=20, radius=8)

`read(h)` turns the hook's activation [batch, pos, width] into the units wanted, e.g.
`lambda h: h[..., [91]]` for residual dimension 91, or an SAE's encoder restricted to a few
latents. Used by the feature view (max-activating examples) and by fluent activation
maximization (the best real windows at the same target).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from lab.experiment import OnProgress, report
from lab.hooks import run_with_hooks

WINDOW_LEN = 64        # tokens per window: long enough for context, short for fast forwards
BATCH = 16             # windows per forward


@dataclass(frozen=True, eq=False)
class Corpus:
    """Token windows of several texts; window i is `ids[i]`, from text `source[i]`."""

    ids: torch.Tensor              # [n_windows, window_len] int64
    source: tuple[str, ...]        # per window: the text it came from
    names: tuple[str, ...]         # the texts, deduplicated, in order
    n_tokens: int                  # tokens in all windows

    def describe(self) -> str:
        return (f"{len(self.names)} texts, {self.n_tokens:,} tokens in {len(self.source)} windows "
                f"of {self.ids.shape[1]}")


def corpus_texts(extra: dict[str, str] | None = None) -> dict[str, str]:
    """name -> text: the bundled sample texts, every article fetched before (the laminar page's
    disk cache), and `extra`; identical texts kept once."""
    from lab.corpus import bundled_article, bundled_texts
    from lab.paths import cache_dir
    texts = {name: bundled_article(name).text for name in bundled_texts()}
    for path in sorted((cache_dir() / "articles").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            texts[data.get("title") or path.stem] = data["text"]
        except (OSError, ValueError, KeyError, TypeError):
            continue          # a damaged cache file costs one text, not the scan
    texts.update(extra or {})
    return _dedupe(texts)


def _dedupe(texts: dict[str, str]) -> dict[str, str]:
    """Identical texts (after stripping) kept once, under their first name; empty ones dropped."""
    seen, out = set(), {}
    for name, text in texts.items():
        digest = hashlib.sha256(text.strip().encode()).hexdigest()
        if text.strip() and digest not in seen:
            seen.add(digest)
            out[name] = text
    return out


def scan_corpus(lm, extra: dict[str, str] | None = None, window_len: int = WINDOW_LEN,
                texts: dict[str, str] | None = None) -> Corpus:
    """The corpus as consecutive, non-overlapping windows of every text (a text's last partial
    window is dropped; a text shorter than one window is skipped). `texts` names exactly the
    texts to use (deduplicated); without it, `corpus_texts(extra)`."""
    rows, source = [], []
    texts = corpus_texts(extra) if texts is None else _dedupe(texts)
    for name, text in texts.items():
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - window_len + 1, window_len):
            rows.append(ids[start:start + window_len])
            source.append(name)
    if not rows:
        raise ValueError(f"the corpus has no text of {window_len} tokens or more")
    ids = torch.tensor(rows, dtype=torch.long)
    return Corpus(ids, tuple(source), tuple(dict.fromkeys(source)), int(ids.numel()))


@torch.no_grad()
def scan(lm, corpus: Corpus, hook: str, read: Callable[[torch.Tensor], torch.Tensor],
         batch: int = BATCH, on_progress: OnProgress | None = None,
         bos: int | None = None) -> torch.Tensor:
    """`read` of `hook` on every window: [n_windows, window_len, units] float32 on the CPU.
    With `bos`, each window runs behind that token (an SAE trained with a BOS first), and
    `read` sees the window's own positions only."""
    out = []
    n = corpus.ids.shape[0]
    for i in range(0, n, batch):
        ids = corpus.ids[i:i + batch]
        if bos is not None:
            ids = torch.cat([torch.full((ids.shape[0], 1), bos, dtype=ids.dtype), ids], dim=1)
        h = run_with_hooks(lm, [hook], input_ids=ids.to(lm.device), stop_early=True, detach=True)[hook]
        if bos is not None:
            h = h[:, 1:]
        out.append(read(h).float().cpu())
        done = min(i + batch, n)
        report(on_progress, done, n, "window", f"Scanning the corpus: {done}/{n} windows")
    return torch.cat(out)


def top_contexts(lm, corpus: Corpus, values: torch.Tensor, k: int = 20, radius: int = 8,
                 skip_first: bool = True) -> pd.DataFrame:
    """The k highest (window, position) peaks of `values` [n_windows, window_len], at most one
    per window, with `radius` tokens of context each side. Position 0 is skipped by default:
    its activations are the attention sink's, not the text's."""
    v = values.clone()
    if skip_first:
        v[:, 0] = -torch.inf
    best, pos = v.max(dim=1)                            # the peak of every window
    order = torch.argsort(best, descending=True)[:k]
    rows = []
    for rank, w in enumerate(order.tolist(), start=1):
        p = int(pos[w])
        ids = corpus.ids[w].tolist()
        lo, hi = max(p - radius, 0), min(p + radius + 1, len(ids))
        rows.append({"rank": rank, "activation": float(best[w]), "source": corpus.source[w],
                     "window": w, "position": p, "token": lm.tokenizer.decode([ids[p]]),
                     "before": lm.tokenizer.decode(ids[lo:p]),
                     "after": lm.tokenizer.decode(ids[p + 1:hi])})
    return pd.DataFrame(rows, columns=["rank", "activation", "source", "window", "position",
                                       "token", "before", "after"])


def density(values: torch.Tensor, skip_first: bool = True) -> float:
    """Fraction of the corpus's tokens where the unit is > 0."""
    v = values[:, 1:] if skip_first else values
    return float((v > 0).float().mean())


def histogram(values: torch.Tensor, bins: int = 40, skip_first: bool = True) -> pd.DataFrame:
    """Counts of the unit's nonzero activations: lo, hi, count (zeros are the density's)."""
    v = (values[:, 1:] if skip_first else values).flatten().numpy()
    v = v[v != 0]
    if not v.size:
        return pd.DataFrame(columns=["lo", "hi", "count"])
    counts, edges = np.histogram(v, bins=bins)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": counts})
