"""Layer by layer: the logit lens and attention patterns, from one forward pass.

    layer L     hidden_states[L]: 0 the embeddings, L >= 1 the raw output of block L - 1;
                the lens reads each through the final norm and the unembedding, so layer n
                is exactly the model's own logits
    block b     a transformer block; its attention pattern [head, query, key] is kept

Attention probabilities: HF's default sdpa kernel returns none, and the model is shared by
every session (switching it to eager attention would change their forwards, from other
threads, mid-run). So a thread-aware forward hook on each attention module recomputes them
from the inputs the module received (`lab.hooks.pattern(b)`, `lab.arch.Arch.attention_pattern`:
q and k from GPT-2's c_attn or Llama's q_proj/k_proj with the rotary (cos, sin) it was handed,
GQA heads repeated, the causal mask and the module's scale, softmax). Tests compare it with HF's
`output_attentions` on a separate eager copy.

    config.py    LensConfig (text, token limit, top-k)
    capture.py   the forward pass -> LensStates (residual stream + attention patterns)
    decode.py    the lens, batched over chunks of layers -> LensChunk
    tables.py    tidy tables, the settle layer
    result.py    LensResult: to_record(), frames(), brief(), export()
"""
from __future__ import annotations

import time

import numpy as np

from lab.experiment import OnProgress, report
from lab.lens.capture import LensStates, capture_lens, layer_labels
from lab.lens.config import MAX_TOKENS, LensConfig
from lab.lens.decode import LensChunk, chunk_size, lens_chunks
from lab.lens.result import LensResult
from lab.lens.tables import token_label
from lab.models import LabModel

__all__ = ["MAX_TOKENS", "LensChunk", "LensConfig", "LensResult", "LensStates", "capture_lens",
           "chunk_size", "layer_labels", "lens_chunks", "run", "token_label"]


def run(lm: LabModel, cfg: LensConfig, on_progress: OnProgress | None = None) -> LensResult:
    """One forward over `cfg`'s text, then the lens at every layer (chunks of layers; each
    chunk's progress carries the result so far, which is what a Stop keeps)."""
    n = lm.n_layers + 1
    report(on_progress, 0, n, "layer", f"Running {lm.name} once over the text...")
    states = capture_lens(lm, cfg)
    acc = _Accumulator(lm, cfg, states)
    for chunk in lens_chunks(lm, states.resid, states.token_ids, cfg.top_k):
        result = acc.add(chunk)
        report(on_progress, chunk.hi, n, "layer",
               f"Logit lens: {chunk.hi} of {n} layers read", partial=result)
    report(on_progress, n, n, "layer", "Done.", partial=result)
    return result


class _Accumulator:
    """Chunks of the lens -> a LensResult over the layers read so far."""

    def __init__(self, lm: LabModel, cfg: LensConfig, states: LensStates):
        self.lm, self.cfg, self.states, self.chunks = lm, cfg, states, []
        self.vocab: dict[int, str] = {}
        self.t0 = time.perf_counter()
        pats = states.patterns                                          # [block, head, q, k]
        self.token0 = pats[:, :, 1:, 0].mean(-1).float().cpu().numpy()  # queries 1.. (0 has only itself)
        self.patterns = pats.half().cpu().numpy()

    def add(self, chunk: LensChunk) -> LensResult:
        self.chunks.append(chunk)
        tok = self.lm.tokenizer
        for i in np.unique(chunk.top_ids):
            self.vocab.setdefault(int(i), tok.decode([int(i)]))
        cat = lambda name: np.concatenate([getattr(c, name) for c in self.chunks])  # noqa: E731
        s, lm = self.states, self.lm
        return LensResult(
            config=self.cfg, model=lm.name, labels=layer_labels(lm.n_layers),
            token_ids=s.token_ids, tokens=s.tokens, p_true=cat("p_true"), rank=cat("rank"),
            kl=cat("kl"), top_ids=cat("top_ids"), top_p=cat("top_p"), vocab=dict(self.vocab),
            patterns=self.patterns, token0=self.token0, tied=lm.arch.tied(lm.model),
            n_text_tokens=s.n_text_tokens, max_tokens=s.max_tokens,
            forward_seconds=s.forward_seconds, lens_seconds=time.perf_counter() - self.t0)
