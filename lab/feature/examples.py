"""Max-activating examples over a corpus the SAE was not trained on (lab.scan): the bundled
texts, every article fetched on the laminar page and the config's extra text, deduplicated,
in windows; batched forwards that stop after the SAE's block.

Values of the latent (column 0) and its controls are kept per window as the scan goes, so
a Stop keeps the windows scanned so far.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import pandas as pd
import torch

from lab import scan as corpus_scan
from lab.sae.saelens import LoadedSAE


@dataclass
class Scan:
    """A corpus scan in progress: [windows, window_len, 1 + n_control] chunks of values."""

    corpus: corpus_scan.Corpus
    latents: list[int]                      # the latent, then its controls
    chunks: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def values(self) -> torch.Tensor:
        with self.lock:
            chunks = list(self.chunks)
        if not chunks:
            return torch.zeros(0, self.corpus.ids.shape[1], len(self.latents))
        return torch.cat(chunks)

    @property
    def windows_done(self) -> int:
        with self.lock:
            return sum(c.shape[0] for c in self.chunks)


def run_scan(lm, loaded: LoadedSAE, state: Scan, on_progress=None) -> None:
    """Fill `state.chunks` batch by batch (the read function keeps each batch's values)."""
    def read(h: torch.Tensor) -> torch.Tensor:
        v = loaded.sae.encode_latents(h.float(), state.latents).float().cpu()
        with state.lock:
            state.chunks.append(v)
        return v[..., :1]
    corpus_scan.scan(lm, state.corpus, loaded.hook, read, on_progress=on_progress)


def _word_around(before: str, token: str, after: str) -> str:
    """The whole word the peak token is part of (a sub-token of "Hungary" gives "Hungary")."""
    head = "" if token[:1].isspace() else re.search(r"\w*$", before).group(0)
    tail = re.match(r"\w*", after).group(0) if token[-1:].isalnum() or token[-1:] == "_" else ""
    return (head + token + tail).strip()


def mark_targets(top: pd.DataFrame, words) -> pd.DataFrame:
    """Add `word` (the word around the peak) and `target` (is it one of `words`, or a word of
    a multi-word one like "Czech Republic")."""
    vocab = {w.lower() for phrase in words for w in phrase.split()}
    top = top.copy()
    top["word"] = [_word_around(b, t, a) for b, t, a in zip(top["before"], top["token"], top["after"])]
    top["target"] = [w.lower().strip(".,;:!?'\"()") in vocab for w in top["word"]]
    return top


def examples(lm, state: Scan, k: int, radius: int, skip_first: bool, words) -> dict:
    """Top contexts, histogram and density of the latent over the windows scanned so far,
    and the corpus density of each control."""
    values = state.values()
    n = values.shape[0]
    corpus = state.corpus
    done = corpus_scan.Corpus(corpus.ids[:n], corpus.source[:n], corpus.names, int(corpus.ids[:n].numel()))
    v = values[..., 0]
    if n:
        top = mark_targets(corpus_scan.top_contexts(lm, done, v, k, radius, skip_first), words)
        peak = float(v[:, 1:].max() if skip_first else v.max())
    else:
        top, peak = pd.DataFrame(columns=["rank", "activation", "token", "word", "target"]), 0.0
    densities = [corpus_scan.density(values[..., j], skip_first) if n else 0.0
                 for j in range(values.shape[-1])]
    return {"top": top, "histogram": corpus_scan.histogram(v, skip_first=skip_first),
            "density": densities[0], "max": peak, "windows_done": n, "tokens_done": done.n_tokens,
            "control_density": dict(zip(state.latents[1:], densities[1:]))}
