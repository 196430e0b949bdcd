"""What a run drives up, and how a batch of real token sequences is scored against it.

    target = target_of(lm, cfg)           unit cfg.index of cfg.hook (or of an SAE's latents
                                          there), reduced over positions (mean or last)
    scores = evaluate(lm, target, ids)    [N, T] token ids -> target, neighbours, cross-entropy
                                          [N], in batched forwards
    scores = evaluate_swaps(lm, target, ids, cands)   [B, n, T] one-swap candidates of the
                                          prompts ids [B, T]: the same Scores [B*n], each
                                          unchanged prefix computed once (a key/value cache)

Without a fluency weight the forward stops after the target's block (lab.hooks); with one it
runs the whole body and the LM head on positions 0..T-2, for the cross-entropy of tokens
1..T-1 (nats per token; the first token has nothing to be predicted from).
"""
from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch

from lab.actmax.config import ActMaxConfig
from lab.hooks import HookPoint, capture, forward
from lab.models import LabModel
from lab.sae.load import fitting, units

EVAL_BATCH = 128          # sequences per forward: 128 x 5 tokens' logits are ~130 MB on SmolLM2
_ALLOWED_LOCK = threading.Lock()
_ALLOWED: dict[tuple[int, int], tuple[object, torch.Tensor]] = {}


@dataclass(frozen=True, eq=False)
class Target:
    """Unit `index` of the hook's activation (or of `encode` of it: an SAE's latents)."""

    point: HookPoint
    index: int
    reduce: str
    neighbours: torch.Tensor                  # [n] units tracked beside the target
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None   # [..., d_in] -> [..., latents]

    @property
    def hook(self) -> str:
        """The hook point's name: the key `capture` fills."""
        return self.point.name

    def units(self, h: torch.Tensor) -> torch.Tensor:
        """The hook's activation [batch, pos, width] as the units `index` counts in."""
        return h if self.encode is None else self.encode(h)

    def read(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target [batch] with its graph, neighbours' mean [batch] detached; nan if none)."""
        u = self.units(h)
        nb = self.neighbours.to(u.device)
        return (reduce_positions(u[..., self.index], self.reduce),
                reduce_positions(u.detach()[..., nb], self.reduce).mean(-1))


def target_of(lm: LabModel, cfg: ActMaxConfig) -> Target:
    """The config's target on this model (checks the ranges first: one sentence each). An
    SAE target opens the SAE here (lab.sae.load): the checks that need its weights."""
    cfg.check(lm)
    loaded = fitting(lm, cfg.sae, cfg.point) if cfg.sae else None
    width = units(lm, cfg.point, loaded)
    cfg.check_index(lm, width)
    nb = torch.tensor(neighbour_indices(cfg, width), dtype=torch.long)
    return Target(cfg.point, cfg.index, cfg.reduce, nb, loaded.sae.encode if loaded else None)


def reduce_positions(h: torch.Tensor, how: str) -> torch.Tensor:
    """[batch, pos, ...] -> [batch, ...]: mean over positions or the last position."""
    return h.mean(1) if how == "mean" else h[:, -1]


def neighbour_indices(cfg: ActMaxConfig, width: int) -> list[int]:
    """Units within `neighbours` of the target, the target itself excluded."""
    lo, hi = max(0, cfg.index - cfg.neighbours), min(width - 1, cfg.index + cfg.neighbours)
    return [d for d in range(lo, hi + 1) if d != cfg.index]


def stream_seed(*words: int) -> int:
    """A 32-bit seed from a tuple of ints: independent streams for (seed, restart, ...)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


class Scores(NamedTuple):
    target: torch.Tensor       # [N] the reduced target unit
    neighbours: torch.Tensor   # [N] mean of the neighbouring units (nan when there are none)
    ce: torch.Tensor           # [N] cross-entropy of tokens 1..T-1, nats (nan when not computed)


def cross_entropy(lm: LabModel, last: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[N, T, D] the body's final (normed) hidden states, [N, T] ids -> [N] mean cross-entropy
    of token t given tokens < t, t = 1..T-1 (0 for a single token)."""
    if ids.shape[1] < 2:
        return torch.zeros(ids.shape[0], device=last.device)
    N, T, D = last.shape
    # contiguous rows: the LM head on the strided slice last[:, :-1] is ~10x slower (measured)
    logits = lm.arch.unembed_of(lm.model)(last[:, :-1].reshape(N * (T - 1), D))   # [N(T-1), V]
    ce = torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:].reshape(-1),
                                           reduction="none")
    return ce.view(N, T - 1).mean(1)


def forward_scores(lm: LabModel, target: Target, ids: torch.Tensor, fluent: bool,
                   inputs_embeds: torch.Tensor | None = None) -> Scores:
    """One forward of `ids` (or of `inputs_embeds` standing for them), keeping the graph.

    Stops after the target's block unless `fluent`; then the cross-entropy of `ids`."""
    with capture(lm, [target.hook], stop_early=not fluent) as cache:
        out = forward(lm, input_ids=None if inputs_embeds is not None else ids,
                      inputs_embeds=inputs_embeds)
    t, nb = target.read(cache[target.hook])
    ce = (cross_entropy(lm, out.last_hidden_state, ids) if fluent
          else torch.full_like(t, float("nan")))
    return Scores(t, nb, ce)


@torch.no_grad()
def evaluate(lm: LabModel, target: Target, ids: torch.Tensor, fluent: bool = False,
             batch: int = EVAL_BATCH,
             on_batch: Callable[[int, int], None] | None = None) -> Scores:
    """Score token sequences [N, T] in forwards of `batch` sequences: Scores of [N] on the CPU.

    `on_batch(done, total)` after each forward (a progress report, or a Stop)."""
    parts, n = [], ids.shape[0]
    for i in range(0, n, batch):
        s = forward_scores(lm, target, ids[i:i + batch].to(lm.device), fluent)
        parts.append([v.detach().float().cpu() for v in s])
        if on_batch is not None:
            on_batch(min(i + batch, n), n)
    if not parts:
        return Scores(*(torch.empty(0) for _ in range(3)))
    return Scores(*(torch.cat(col) for col in zip(*parts)))


@torch.no_grad()
def evaluate_swaps(lm: LabModel, target: Target, ids: torch.Tensor, cands: torch.Tensor,
                   fluent: bool = False, batch: int = EVAL_BATCH) -> Scores:
    """Scores [B*n] of candidates [B, n, T], each equal to its prompt ids[b] before the first
    position where it differs: what `evaluate(cands.flatten(0, 1))` gives (to float rounding),
    with tokens before that position not run again. Causal attention makes a prefix's
    activations independent of what follows, so one forward of the prompts keeps them (and
    their keys and values); candidates whose swap is at position p run positions p.. only.

    With the cross-entropy (`fluent`), a candidate swapped at p also shares the prompt's
    predictions: tokens 1..p-1 keep the prompt's terms, token p is read from the prompt's
    distribution at p-1, and the LM head runs on positions p..T-2 only. The last position
    predicts nothing: it runs up to the target's block, not through the whole body."""
    B, n, T = cands.shape
    if not fluent and target.point.layer < 0:   # stops before block 0: no cache to reuse
        return evaluate(lm, target, cands.reshape(B * n, T), fluent, batch)
    base, cache = _prefix_forward(lm, target.hook, ids.to(lm.device), fluent)
    flat = cands.reshape(B * n, T).to(lm.device)
    rows = torch.arange(B, device=lm.device).repeat_interleave(n)
    differ = flat != ids.to(lm.device)[rows]
    start = torch.where(differ.any(1), differ.float().argmax(1), T - 1)   # no swap: rerun the last
    act = torch.empty(B * n, T, base["act"].shape[-1], device=lm.device)
    nll = torch.empty(B * n, max(T - 1, 1), device=lm.device) if fluent else None
    for p in start.unique().tolist():
        for chunk in (start == p).nonzero().squeeze(1).split(batch):
            r = rows[chunk]
            past = _past(cache, r, p) if p else None
            if fluent and p < T - 1:
                got = _fluent_tail(lm, target.hook, flat[chunk], p, past)
                act[chunk] = torch.cat([base["act"][r, :p], got["act"]], 1)
                nll[chunk] = torch.cat([base["nll"][r, :max(p - 1, 0)],
                                        _token_nll(base["logp"][r, p - 1], flat[chunk, p])[:, None]
                                        if p else flat.new_empty(len(chunk), 0).float(),
                                        got["nll"]], 1)
                continue
            with capture(lm, [target.hook], stop_early=True) as got:
                forward(lm, input_ids=flat[chunk, p:], past_key_values=past)
            act[chunk] = torch.cat([base["act"][r, :p], got[target.hook]], 1)
            if fluent:                                  # p = T-1: only the last token changed
                nll[chunk] = (torch.cat([base["nll"][r, :T - 2],
                                         _token_nll(base["logp"][r, T - 2], flat[chunk, T - 1])[:, None]], 1)
                              if T > 1 else 0.0)
    t, nb = target.read(act)
    ce = (nll.mean(1) if T > 1 else torch.zeros_like(t)) if fluent else torch.full_like(t, float("nan"))
    return Scores(t.float().cpu(), nb.float().cpu(), ce.float().cpu())


def _token_nll(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[N, V] log-probabilities, [N] tokens -> [N] -log p(token)."""
    return -logp.gather(1, tokens[:, None]).squeeze(1)


def _head_nll(lm: LabModel, last: torch.Tensor, next_ids: torch.Tensor,
              keep_logp: bool = False):
    """Final hidden states [N, P, D] and the tokens they predict [N, P] -> -log p [N, P] (and
    the log-probabilities [N, P, V] when `keep_logp`), computed as `cross_entropy` does."""
    N, P, D = last.shape
    logits = lm.arch.unembed_of(lm.model)(last.reshape(N * P, D)).float()
    logp = torch.log_softmax(logits, -1)
    nll = _token_nll(logp, next_ids.reshape(-1)).view(N, P)
    return (nll, logp.view(N, P, -1)) if keep_logp else nll


def _fluent_tail(lm: LabModel, hook: str, ids: torch.Tensor, p: int, past) -> dict:
    """Candidates [N, T] swapped at p < T-1 from the cache `past` of positions 0..p-1:
    positions p..T-2 through the whole body (their next-token terms), then position T-1 up
    to the target's block only. {"act": [N, T-p, width], "nll": [N, T-1-p]}."""
    from transformers import DynamicCache
    T = ids.shape[1]
    past = DynamicCache(config=lm.model.config) if past is None else past
    with capture(lm, [hook], stop_early=False) as got:
        out = forward(lm, input_ids=ids[:, p:T - 1], past_key_values=past)
    body = got[hook]
    with capture(lm, [hook], stop_early=True) as tail:
        forward(lm, input_ids=ids[:, T - 1:], past_key_values=past)
    return {"act": torch.cat([body, tail[hook]], 1),
            "nll": _head_nll(lm, out.last_hidden_state, ids[:, p + 1:])}


def _prefix_forward(lm: LabModel, hook: str, ids: torch.Tensor, fluent: bool):
    """The prompts' activations at `hook` (and final hidden states when `fluent`), with the
    key/value cache of every block that ran."""
    from transformers import DynamicCache
    cache = DynamicCache(config=lm.model.config)
    with capture(lm, [hook], stop_early=not fluent) as got:
        out = forward(lm, input_ids=ids, past_key_values=cache)
    base = {"act": got[hook]}
    if fluent and ids.shape[1] > 1:   # the prompts' own next-token terms and distributions
        base["nll"], base["logp"] = _head_nll(lm, out.last_hidden_state[:, :-1], ids[:, 1:],
                                              keep_logp=True)
    return base, cache


def _past(cache, rows: torch.Tensor, p: int):
    """A cache holding positions 0..p-1 of the prompts `rows` (one row per candidate)."""
    from transformers import DynamicCache
    kv = [(layer.keys[rows, :, :p], layer.values[rows, :, :p]) for layer in cache.layers
          if getattr(layer, "keys", None) is not None]
    return DynamicCache(ddp_cache_data=kv)


def allowed_tokens(lm: LabModel) -> torch.Tensor:
    """[V] bool: tokens a prompt may use. Not special tokens (they are markup, and decode to
    text that re-tokenizes differently), not embedding rows beyond the tokenizer, not pieces
    of a multi-byte character (they decode to U+FFFD), not control characters. Computed once
    per tokenizer."""
    tok, V = lm.tokenizer, lm.vocab_size
    key = (id(tok), V)
    with _ALLOWED_LOCK:
        if key in _ALLOWED:
            return _ALLOWED[key][1]
    ok = torch.zeros(V, dtype=torch.bool)
    n = min(V, len(tok)) if tok is not None else V
    ok[:n] = True
    if tok is not None:
        ok[[i for i in set(tok.all_special_ids) if i < V]] = False
        texts = tok.batch_decode([[i] for i in range(n)])
        ok[[i for i, t in enumerate(texts) if not t or "\ufffd" in t or _control(t)]] = False
    with _ALLOWED_LOCK:
        _ALLOWED[key] = (tok, ok)      # the tokenizer kept alive, so its id stays its own
    return ok


def _control(text: str) -> bool:
    """Control or format characters other than newline and tab: not text a person types."""
    return any(unicodedata.category(c)[0] == "C" and c not in "\n\t" for c in text)


def random_ids(lm: LabModel, seed: int, rows: int, n_tokens: int, stream: int) -> torch.Tensor:
    """[rows, n_tokens] allowed token ids, row r from a generator seeded with (seed, r, stream):
    row r is the same whatever `rows` is."""
    pool = allowed_tokens(lm).nonzero().squeeze(1)
    out = []
    for r in range(rows):
        g = torch.Generator().manual_seed(stream_seed(seed, r, stream))
        out.append(pool[torch.randint(len(pool), (n_tokens,), generator=g)])
    return torch.stack(out)
