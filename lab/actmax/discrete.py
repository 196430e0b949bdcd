"""GCG-style discrete search: the prompt is always a real token sequence.

Each step, for every row (a restart; in epo, a member of a restart's population):
  1. the gradient of the row's loss -(a - lam * ce) w.r.t. a one-hot input. The input is
     x = W_E[ids], so d loss / d one-hot = (d loss / d x) W_E^T  [T, V]: one backward.
  2. the top_k tokens per position by that (most negative = most promising) gradient, and
     `n` candidate prompts with one position swapped to one of them (position and token
     uniformly random, from the row's own generator: a row's path does not depend on how
     many rows run beside it).
  3. all candidates of all rows scored in batched forwards (lab.actmax.target.evaluate_swaps)
     that stop after the target's block unless a fluency weight needs the cross-entropy; a
     candidate's positions before its swap are the prompt's, computed once (a key/value cache).
     With cfg.bf16_rank N: one bfloat16 forward ranks them, and each row's best N are scored
     again in float32 (`score`).
  4. discrete: a row moves to its best candidate (even a worse one: GCG's walk) and the
     answer is the best prompt visited; epo chooses across a restart's whole population
     (lab.actmax.epo).

The gradient only proposes; every number kept is a forward on real token ids.
"""
from __future__ import annotations

from typing import Protocol

import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.optimize import HISTORY_COLUMNS, Recorder
from lab.actmax.target import (Scores, Target, allowed_tokens, evaluate, evaluate_swaps,
                               forward_scores, random_ids, stream_seed)
from lab.experiment import OnProgress, report
from lab.models import LabModel

TOKEN_COLUMNS = HISTORY_COLUMNS + ["ce"]
START_STREAM, SWAP_STREAM = 3, 4      # stream_seed words: 0, 1, 2 are the continuous method's


def objective(s: Scores, lam: torch.Tensor) -> torch.Tensor:
    """[N] what a row maximizes: the target minus lam x cross-entropy (lam 0: the target)."""
    return torch.where(lam > 0, s.target - lam * torch.nan_to_num(s.ce), s.target)


def one_hot_gradient(lm: LabModel, target: Target, ids: torch.Tensor, lam: torch.Tensor,
                     fluent: bool) -> tuple[torch.Tensor, Scores]:
    """(d loss / d one-hot [B, T, V], the current prompts' Scores) from one forward+backward."""
    W = lm.W_E.detach()                                               # [V, D]
    x = W[ids].requires_grad_(True)                                   # [B, T, D]
    s = forward_scores(lm, target, ids, fluent, inputs_embeds=x)
    (-objective(s, lam.to(x.device))).sum().backward()                # rows independent
    grad = x.grad @ W.T                                               # [B, T, V]
    return grad, Scores(*(v.detach() for v in s))


def swap_candidates(ids: torch.Tensor, grad: torch.Tensor, allowed: torch.Tensor, top_k: int,
                    n: int, gens: list[torch.Generator]) -> torch.Tensor:
    """[B, T] prompts -> [B, n, T] candidates, each with one position swapped to one of that
    position's top_k allowed tokens by the gradient: n different (position, token) pairs of
    the T x top_k (drawn without replacement; n is capped at T x top_k)."""
    B, T = ids.shape
    g = grad.masked_fill(~allowed.to(grad.device), float("inf"))
    top = (-g).topk(min(top_k, int(allowed.sum())), dim=-1).indices.cpu()   # [B, T, k]
    k = top.shape[-1]
    n = min(n, T * k)
    out = ids.cpu().unsqueeze(1).repeat(1, n, 1)
    rows = torch.arange(n)
    for b, gen in enumerate(gens):
        pair = torch.randperm(T * k, generator=gen)[:n]
        pos, pick = pair // k, pair % k
        out[b, rows, pos] = top[b, pos, pick]
    return out


def score(lm: LabModel, target: Target, ids: torch.Tensor, cands: torch.Tensor, fluent: bool,
          lam: torch.Tensor, keep: int = 0) -> Scores:
    """Scores [B*n] of candidates [B, n, T]: all in float32 (`keep` 0), or all in one bfloat16
    forward and each row's best `keep` by its objective again in float32, the others at -inf
    (no step moves to them, no frontier keeps them). Every kept number is float32."""
    if not keep:
        return evaluate_swaps(lm, target, ids, cands, fluent)
    B, n, T = cands.shape
    flat = cands.reshape(B * n, T)
    with torch.autocast(lm.device.type, dtype=torch.bfloat16):
        rough = evaluate(lm, target, flat, fluent)
    J = objective(rough, lam.repeat_interleave(n)).view(B, n)
    best = (J.topk(min(keep, n), dim=1).indices + n * torch.arange(B)[:, None]).reshape(-1)
    exact = evaluate(lm, target, flat[best], fluent)
    # -inf activation, a finite huge cross-entropy: -inf for every lam (0 x inf would be nan)
    out = Scores(torch.full((B * n,), -float("inf")), torch.full((B * n,), float("nan")),
                 torch.full((B * n,), 1e30 if fluent else float("nan")))
    for col, part in zip(out, exact):
        col[best] = part
    return out


class Select(Protocol):
    """How rows move on: the new prompts [B, T] from the current ones and the candidates."""

    frontier: torch.Tensor | None

    def __call__(self, ids: torch.Tensor, cur: Scores, cands: torch.Tensor,
                 scores: Scores) -> torch.Tensor: ...


class Walk:
    """discrete, as GCG: each row moves to its best candidate even when that is below the
    current prompt (how a search leaves a local optimum of one-token swaps; a row that only
    kept improvements stalled within ~30 steps on SmolLM2); `search` keeps the best visited."""

    frontier = None

    def __init__(self, lam: torch.Tensor):
        self.lam = lam

    def __call__(self, ids, cur, cands, scores):
        B, n, _ = cands.shape
        J = objective(scores, self.lam.repeat_interleave(n)).view(B, n)
        J = J.masked_fill((cands == ids.unsqueeze(1)).all(-1), -float("inf"))   # no-op swaps
        top, best = J.max(1)
        out = cands[torch.arange(B), best]
        stay = torch.isinf(top)                    # nothing but no-op swaps: stay
        out[stay] = ids[stay]
        return out


def search(lm: LabModel, cfg: ActMaxConfig, target: Target, lam: torch.Tensor, select: Select,
           per_row: int, on_progress: OnProgress | None = None) -> Recorder:
    """The loop above for rows with fluency weights `lam` [B] (B = restarts x members, rows of
    a restart adjacent); `per_row` candidates each per step. Returns the Recorder: history
    (one row per step and row: where the search is), the best prompts so far, their start."""
    B, members = len(lam), len(lam) // cfg.restarts
    ids = random_ids(lm, cfg.seed, cfg.restarts, cfg.n_tokens, START_STREAM)
    ids = ids.repeat_interleave(members, dim=0)                       # a population starts together
    gens = [torch.Generator().manual_seed(stream_seed(cfg.seed, b // members, b % members, SWAP_STREAM))
            for b in range(B)]
    allowed, rec = allowed_tokens(lm), Recorder(TOKEN_COLUMNS)
    best_ids, best = ids.clone(), torch.full((B,), -float("inf"))
    unchanged, stop = 0, cfg.steps
    for step in range(cfg.steps + 1):
        last = step == stop
        if last:                                  # the final forward only measures
            cur = evaluate(lm, target, ids, cfg.fluent)
        else:
            grad, cur = one_hot_gradient(lm, target, ids.to(lm.device), lam, cfg.fluent)
        cur = Scores(*(v.float().cpu() for v in cur))
        obj = objective(cur, lam)
        better = obj > best                       # the answer: the best prompt visited
        best_ids[better], best = ids[better], torch.maximum(best, obj)
        unchanged = 0 if bool(better.any()) else unchanged + 1
        if cfg.patience and unchanged >= cfg.patience and not last:
            stop, last = step, True               # early stop: this forward is the last
            rec.stopped = (f"stopped early at step {step}: the best prompt did not change for "
                           f"{cfg.patience} steps")
        rec.add(cur.target, cur.neighbours, -obj, None, ce=cur.ce, ids=best_ids.clone(),
                frontier=select.frontier)
        report(on_progress, cfg.steps if last else step, cfg.steps, "step", rec.message(cfg), rec)
        if last:
            break
        cands = swap_candidates(ids, grad, allowed, cfg.top_k, per_row, gens)   # [B, n, T]
        scores = score(lm, target, ids, cands, cfg.fluent, lam, cfg.bf16_rank)
        ids = select(ids, cur, cands, scores)
    return rec


def discrete(lm: LabModel, cfg: ActMaxConfig, target: Target,
             on_progress: OnProgress | None = None) -> Recorder:
    """GCG-style search from `cfg.restarts` random prompts, one row each."""
    lam = torch.full((cfg.restarts,), float(cfg.lam))
    return search(lm, cfg, target, lam, Walk(lam), cfg.candidates, on_progress)
