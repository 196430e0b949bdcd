"""Generation: continue one prompt in several rows at once (unsteered, steered, control, each
with its own vector times its coefficient added at the hook), one token per forward.

    prefill   the prompt once per row, steered at every prompt position; the keys and
              values go to a transformers DynamicCache
    step      each row's newest token alone, its keys and values appended to the cache
              (`use_cache=False`: the whole sequence again, the check that the cache is exact)
    choose    greedy: the most likely token; sampled: softmax(logits / temperature), cut to
              the top-p nucleus, drawn from the row's own torch.Generator, every row's
              seeded the same: a row whose vector adds 0 repeats the unsteered row draw for
              draw (the batch's rows are independent sequences; no padding is ever needed,
              they all start from the same prompt)

A row that writes the end-of-text token stops growing (it keeps being fed that token, and
nothing more is recorded). `on_token(step)` is called after each token; it may raise (a
Stop), and the steering hook is removed in `finally` as always.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from lab.models import LabModel
from lab.steer.hook import steering


@dataclass
class Row:
    """One continuation as it grows."""

    tokens: list[int] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)      # log p of each token, the row's own model, T = 1
    p_target: list[float] = field(default_factory=list)  # probability that the token starts a target word
    finished: bool = False

    def snapshot(self) -> "Row":
        return Row(list(self.tokens), list(self.logp), list(self.p_target), self.finished)


def choose(logits: torch.Tensor, sample: bool, temperature: float, top_p: float,
           generators: list[torch.Generator] | None) -> torch.Tensor:
    """logits [rows, vocab] (float32) -> the next token of each row [rows]."""
    if not sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p        # the first token is always kept
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    out = [torch.multinomial(probs[r], 1, generator=generators[r]) for r in range(len(probs))]
    return torch.cat(out)


def _logits(lm: LabModel, ids: torch.Tensor, cache) -> torch.Tensor:
    out = lm.model(input_ids=ids, past_key_values=cache, use_cache=cache is not None,
                   logits_to_keep=1)
    return out.logits[:, -1].float()


@torch.no_grad()
def generate(lm: LabModel, prompt_ids: list[int], n_new: int, hook: str | None = None,
             deltas: torch.Tensor | None = None, *, rows: int | None = None, sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             target_ids: list[int] | None = None, use_cache: bool = True,
             on_token: Callable[[int, list[Row]], None] | None = None) -> list[Row]:
    """Continue `prompt_ids` for `n_new` tokens in each row; row r has `deltas[r]` added at
    `hook` at every position (no hook at all when `deltas` is None: `rows` plain rows)."""
    from transformers import DynamicCache
    n_rows = deltas.shape[0] if deltas is not None else (rows or 1)
    if n_rows < 1 or n_new < 1:
        raise ValueError("a generation needs at least one row and one new token")
    device = lm.device
    seq = torch.tensor([prompt_ids] * n_rows, device=device)             # [rows, pos]
    gens = ([torch.Generator().manual_seed(int(seed)) for _ in range(n_rows)] if sample else None)
    targets = torch.tensor(sorted(set(target_ids or [])), dtype=torch.long, device=device)
    eos = lm.tokenizer.eos_token_id
    out = [Row() for _ in range(n_rows)]
    cache = DynamicCache() if use_cache else None
    steer = steering(lm, hook, deltas) if deltas is not None else nullcontext()
    with steer:
        logits = _logits(lm, seq, cache)
        for step in range(1, n_new + 1):
            nxt = choose(logits, sample, temperature, top_p, gens).to(device)   # [rows]
            logp = torch.log_softmax(logits, dim=-1)
            chosen = logp.gather(-1, nxt[:, None])[:, 0].tolist()
            mass = (logp[:, targets].exp().sum(-1).tolist() if len(targets)
                    else [0.0] * n_rows)
            for r, row in enumerate(out):
                if row.finished:
                    nxt[r] = eos
                    continue
                row.tokens.append(int(nxt[r]))
                row.logp.append(chosen[r])
                row.p_target.append(mass[r])
                row.finished = eos is not None and int(nxt[r]) == eos
            if on_token is not None:
                on_token(step, out)
            if step == n_new:
                break
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            logits = _logits(lm, nxt[:, None] if use_cache else seq, cache)
    return out


@torch.no_grad()
def unsteered_logp(lm: LabModel, prompt_ids: list[int], rows: list[Row]) -> list[list[float]]:
    """Each row's tokens scored by the unsteered model (no hook): log p of token t given the
    prompt and the row's tokens before it. One forward over all rows (right-padded: a causal
    model's earlier positions never see the padding)."""
    live = [r for r in rows if r.tokens]
    if not live:
        return [[] for _ in rows]
    width = len(prompt_ids) + max(len(r.tokens) for r in live)
    pad = lm.tokenizer.eos_token_id or 0
    batch = torch.full((len(live), width), pad, dtype=torch.long)
    for i, r in enumerate(live):
        seq = prompt_ids + r.tokens
        batch[i, :len(seq)] = torch.tensor(seq)
    logits = lm.model(input_ids=batch.to(lm.device), use_cache=False).logits.float()
    logp = torch.log_softmax(logits[:, len(prompt_ids) - 1:-1], dim=-1)   # predicts new token t
    scored = iter(range(len(live)))
    out = []
    for r in rows:
        if not r.tokens:
            out.append([])
            continue
        i = next(scored)
        ids = torch.tensor(r.tokens, device=logp.device)
        out.append(logp[i, :len(r.tokens)].gather(-1, ids[:, None])[:, 0].tolist())
    return out


def target_token_ids(tokenizer, words) -> list[int]:
    """The first token of each target word as it starts a word in running text: with a
    leading space, lower case and capitalised (' love', ' Love')."""
    ids = set()
    for w in words:
        for form in {w, w.lower(), w.capitalize()}:
            toks = tokenizer(" " + form, verbose=False)["input_ids"]
            if toks:
                ids.add(int(toks[0]))
    return sorted(ids)
