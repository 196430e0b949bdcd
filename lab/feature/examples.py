"""Max-activating examples over held-out text (lab.scan): the config's corpus sources minus
what the SAE was trained on (lab.corpus.sources), deduplicated, in windows; batched forwards
that stop after the SAE's block.

The latent's values are kept per window as the scan goes (a Stop keeps the windows scanned
so far); every latent's density and mean firing activation are summed on the way, so the
controls can be matched to the target on the same held-out text.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import pandas as pd
import torch

from lab import scan as corpus_scan
from lab.sae.saelens import LoadedSAE

WINDOW_LEN = 32      # tokens per corpus window: a short held-out part still gives a window


@dataclass
class Scan:
    """A corpus scan in progress: the latent's values per window ([windows, window_len]
    chunks), and for every latent its firing count and activation sum (the controls are
    matched on these), and the SAE's squared error (its held-out nMSE)."""

    corpus: corpus_scan.Corpus
    latent: int
    n_latents: int
    skip_first: bool = True
    chunks: list[torch.Tensor] = field(default_factory=list)
    tokens: int = 0
    fires: torch.Tensor = None
    active_sum: torch.Tensor = None
    sq_err: float = 0.0
    sum_x: torch.Tensor | None = None
    sum_x2: torch.Tensor | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.fires = torch.zeros(self.n_latents, dtype=torch.float64)
        self.active_sum = torch.zeros(self.n_latents, dtype=torch.float64)

    def values(self) -> torch.Tensor:
        with self.lock:
            chunks = list(self.chunks)
        if not chunks:
            return torch.zeros(0, self.corpus.ids.shape[1])
        return torch.cat(chunks)

    @property
    def windows_done(self) -> int:
        with self.lock:
            return sum(c.shape[0] for c in self.chunks)

    def add(self, x: torch.Tensor, z: torch.Tensor, x_hat: torch.Tensor) -> None:
        """One batch: x [b, pos, d_in], its code z [b, pos, n] and reconstruction x_hat."""
        value = z[..., self.latent].float().cpu()
        if self.skip_first:
            x, z, x_hat = x[:, 1:], z[:, 1:], x_hat[:, 1:]
        x, z, x_hat = (t.reshape(-1, t.shape[-1]).double().cpu() for t in (x, z, x_hat))
        with self.lock:
            self.chunks.append(value)
            self.tokens += x.shape[0]
            self.fires += (z > 0).sum(0)
            self.active_sum += z.clamp_min(0).sum(0)
            self.sq_err += float(((x - x_hat) ** 2).mean(-1).sum())
            sx, sx2 = x.sum(0), (x ** 2).sum(0)
            self.sum_x = sx if self.sum_x is None else self.sum_x + sx
            self.sum_x2 = sx2 if self.sum_x2 is None else self.sum_x2 + sx2

    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(density, mean activation when firing) of every latent over the tokens scanned."""
        with self.lock:
            n, fires, total = max(self.tokens, 1), self.fires.clone(), self.active_sum.clone()
        return (fires / n).float(), (total / fires.clamp_min(1)).float()

    def nmse(self) -> float | None:
        """Mean squared reconstruction error over the mean per-dimension variance: the share
        of the activation's variance the SAE misses on this text."""
        with self.lock:
            if not self.tokens or self.sum_x is None:
                return None
            n = self.tokens
            var = (self.sum_x2 / n - (self.sum_x / n) ** 2).mean()
            return float(self.sq_err / n / max(float(var), 1e-30))


def run_scan(lm, loaded: LoadedSAE, state: Scan, on_progress=None, bos: int | None = None) -> None:
    """Fill `state` batch by batch: every latent's code, its reconstruction, the stats."""
    def read(h: torch.Tensor) -> torch.Tensor:
        x = h.float()
        z = loaded.sae.encode(x)
        state.add(x, z, loaded.sae.decode(z, x))
        return z[..., state.latent:state.latent + 1]
    corpus_scan.scan(lm, state.corpus, loaded.hook, read, on_progress=on_progress, bos=bos)


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
    """Top contexts, histogram, density and peak of the latent over the windows scanned so far."""
    v = state.values()
    n = v.shape[0]
    corpus = state.corpus
    done = corpus_scan.Corpus(corpus.ids[:n], corpus.source[:n], corpus.names, int(corpus.ids[:n].numel()))
    if n:
        top = mark_targets(corpus_scan.top_contexts(lm, done, v, k, radius, skip_first), words)
        peak = float(v[:, 1:].max() if skip_first else v.max())
    else:
        top, peak = pd.DataFrame(columns=["rank", "activation", "token", "word", "target"]), 0.0
    return {"top": top, "histogram": corpus_scan.histogram(v, skip_first=skip_first),
            "density": corpus_scan.density(v, skip_first) if n else 0.0, "max": peak,
            "windows_done": n, "tokens_done": done.n_tokens, "nmse": state.nmse()}
