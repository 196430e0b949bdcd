"""The bar to beat: what real text already reaches at the same target (lab.scan's corpus).

Two views of the corpus (the bundled texts and every fetched article):
- `windows`: every distinct n_tokens-long stretch of it, each fed alone from position 0 and
  reduced over positions exactly like an optimized prompt, so the best of them is a fair
  bar for a prompt of n_tokens tokens;
- `contexts`: the unit's peaks inside 64-token windows of running text (lab.scan's
  max-activating contexts, position 0 skipped): what the unit responds to in context.

Scanning is a few seconds on tiny models and tens of seconds on SmolLM2 deep blocks, so a
bar is computed once per (model, target, length) and corpus, and kept.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pandas as pd
import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.prompts import Prompts, measure
from lab.actmax.target import Target, evaluate
from lab.experiment import OnProgress, report
from lab.models import LabModel
from lab.scan import Corpus, scan, scan_corpus, top_contexts

WINDOW_BATCH = 512           # short windows per forward
_BARS: dict[tuple, "Bar"] = {}
_LOCK = threading.Lock()
MAX_KEPT = 32


@dataclass(frozen=True)
class Bar:
    best: Prompts              # the corpus_top best n_tokens windows, measured (activation, ce)
    source: tuple[str, ...]    # the text each came from
    contexts: pd.DataFrame     # lab.scan.top_contexts: rank, activation, source, ..., token
    n_windows: int             # distinct n_tokens windows scored
    corpus: str                # lab.scan.Corpus.describe()
    seconds: float

    @property
    def top(self) -> float:
        """The corpus's best window: the activation an optimized prompt has to beat."""
        return float(self.best.activation.max())

    def windows(self) -> pd.DataFrame:
        """rank, activation, ce, text, tokens, survives_retokenize, source."""
        f = self.best.frame().drop(columns=["row", "restart", "lam"])
        f = f.assign(source=list(self.source)).sort_values("activation", ascending=False)
        return f.reset_index(drop=True).rename_axis("rank").reset_index() \
            .assign(rank=lambda d: d["rank"] + 1)

    def summary(self) -> dict:
        return {"best": self.top, "best_text": self.best.text[self.best.best],
                "n_windows": self.n_windows, "corpus": self.corpus,
                "context_best": float(self.contexts.activation.max()) if len(self.contexts) else None,
                "seconds": round(self.seconds, 3)}


def short_windows(corpus: Corpus, n_tokens: int) -> tuple[torch.Tensor, list[str]]:
    """Every distinct n_tokens stretch of the corpus's texts: (ids [N, n_tokens], source).

    A text's 64-token windows are consecutive rows of `corpus.ids`, so joining them gives the
    text back (without its dropped last partial window) and stretches may cross window edges."""
    rows, source = [], []
    for name in corpus.names:
        idx = [i for i, s in enumerate(corpus.source) if s == name]
        stream = corpus.ids[idx].reshape(-1)
        if len(stream) >= n_tokens:
            w = stream.unfold(0, n_tokens, 1)                              # [n, n_tokens]
            rows.append(w)
            source += [name] * len(w)
    ids = torch.cat(rows)
    uniq, inverse = torch.unique(ids, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(ids), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    return uniq, [source[i] for i in first.tolist()]


def _target_key(lm: LabModel, cfg: ActMaxConfig) -> tuple:
    return (id(lm.model), lm.name, cfg.hook, cfg.index, cfg.reduce, cfg.n_tokens, cfg.sae,
            cfg.corpus_top)


def cached_bar(lm: LabModel, cfg: ActMaxConfig) -> Bar | None:
    """The newest bar computed for this config's target and length, else None (no scan)."""
    if cfg.corpus_top == 0:
        return None
    want = _target_key(lm, cfg)
    with _LOCK:
        return next((b for k, b in reversed(_BARS.items()) if k[0] == want), None)


def corpus_bar(lm: LabModel, cfg: ActMaxConfig, target: Target,
               on_progress: OnProgress | None = None, partial=None) -> Bar | None:
    """The bar of `cfg` (None when cfg.corpus_top is 0). Progress in windows; `partial` is what
    a Stop keeps meanwhile (the optimization's Recorder)."""
    if cfg.corpus_top == 0:
        return None
    corpus = scan_corpus(lm)
    key = (_target_key(lm, cfg), corpus.names, corpus.n_tokens)
    with _LOCK:
        if key in _BARS:
            return _BARS[key]
    t0 = time.perf_counter()
    ids, source = short_windows(corpus, cfg.n_tokens)

    def progress(done: int, total: int) -> None:
        report(on_progress, done, total, "window",
               f"The bar to beat: {done:,} of {total:,} corpus windows of {cfg.n_tokens} tokens",
               partial)
    acts = evaluate(lm, target, ids, batch=WINDOW_BATCH, on_batch=progress).target
    top = torch.topk(acts, min(cfg.corpus_top, len(acts))).indices
    values = scan(lm, corpus, cfg.hook, lambda h: target.units(h)[..., [cfg.index]])[..., 0]
    bar = Bar(measure(lm, target, ids[top]), tuple(source[i] for i in top.tolist()),
              top_contexts(lm, corpus, values, k=cfg.corpus_top), len(ids), corpus.describe(),
              time.perf_counter() - t0)
    with _LOCK:
        if len(_BARS) >= MAX_KEPT:
            _BARS.pop(next(iter(_BARS)))
        _BARS[key] = bar
    return bar
