"""PEZ (Wen et al., "Hard prompts made easy"): optimize a continuous copy x, but run every
forward on its projection, the nearest real token of each vector (cosine, allowed tokens
only), and apply that forward's gradient to x (straight through).

    ids = nearest(x)            [R, T] real tokens: the prompt of this step
    p   = W_E[ids]              the forward sees real token embeddings only
    x  <- Adam(x, d loss/d p + 2 l2 x),  loss = -(a - lam x ce)(ids) + l2 ||x||^2

Every number recorded is the forward of real tokens; each restart keeps the best prompt it
projected to (a later projection can be worse: the answer is the best seen).
"""
from __future__ import annotations

import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.discrete import TOKEN_COLUMNS, objective
from lab.actmax.optimize import Recorder, starts
from lab.actmax.target import Target, allowed_tokens, forward_scores
from lab.experiment import OnProgress, report
from lab.models import LabModel


def project(W_normed: torch.Tensor, allowed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[R, T, D] vectors -> [R, T] the allowed token of highest cosine for each."""
    cos = torch.nn.functional.normalize(x.detach().float(), dim=-1) @ W_normed.T   # [R, T, V]
    return cos.masked_fill(~allowed, -float("inf")).argmax(-1)


def pez(lm: LabModel, cfg: ActMaxConfig, target: Target, on_progress: OnProgress | None = None,
        start: torch.Tensor | None = None) -> Recorder:
    """PEZ from the continuous method's seeded starts (or `start` [R, T, D])."""
    x = starts(lm, cfg, start).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    W = lm.W_E.detach()
    Wn, allowed = torch.nn.functional.normalize(W.float(), dim=-1), allowed_tokens(lm).to(W.device)
    lam = torch.full((cfg.restarts,), float(cfg.lam), device=W.device)
    best_ids, best = None, torch.full((cfg.restarts,), -float("inf"))
    rec = Recorder(TOKEN_COLUMNS)
    for step in range(cfg.steps + 1):
        last = step == cfg.steps
        ids = project(Wn, allowed, x)
        p = W[ids].requires_grad_(not last)
        with torch.set_grad_enabled(not last):    # the final forward only measures
            s = forward_scores(lm, target, ids, cfg.fluent, inputs_embeds=p)
            obj = objective(s, lam)
            penalty = cfg.l2 * x.detach().pow(2).sum((1, 2))
        if not last:
            opt.zero_grad(set_to_none=True)
            (-obj).sum().backward()               # rows independent: each its own gradient
            x.grad = p.grad + 2 * cfg.l2 * x.detach()
        got = obj.detach().float().cpu()
        better = got > best
        best_ids = (ids.cpu().clone() if best_ids is None
                    else torch.where(better[:, None], ids.cpu(), best_ids))
        best = torch.maximum(best, got)
        rec.add(s.target.detach().cpu(), s.neighbours.cpu(), (penalty - obj.detach()).cpu(),
                x.detach().clone(), ce=s.ce.detach().cpu(), ids=best_ids.clone())
        report(on_progress, step, cfg.steps, "step", rec.message(cfg), rec)
        if not last:
            opt.step()
    return rec
