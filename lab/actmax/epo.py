"""EPO-lite (after Thompson et al., "Fluent dreaming for language models"): a population per
restart, one member per fluency weight lam_i, searched with the discrete method's steps.

Each step every member proposes candidates from its own gradient (cfg.candidates shared out
among the members, so a step costs what a discrete step costs); the members' candidates and
the members themselves form the restart's pool, and member i becomes the pool's best prompt
for its own objective a - lam_i x ce. One weight alone climbs one point of the trade-off;
the pool lets a member adopt what another found. Every scored prompt also feeds an archive
of the non-dominated ones (no other prompt has both a higher activation and a lower
cross-entropy): the activation-vs-cross-entropy frontier.
"""
from __future__ import annotations

import numpy as np
import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.discrete import search
from lab.actmax.optimize import Recorder
from lab.actmax.target import Scores, Target
from lab.experiment import OnProgress
from lab.models import LabModel

MAX_FRONTIER = 64     # prompts kept on the frontier (evenly spread along the cross-entropy)


def pareto(act: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
    """Indices of the non-dominated points (high activation, low cross-entropy), by ce."""
    order = np.lexsort((-act.numpy(), ce.numpy()))       # ce low first; ties: activation high first
    best, keep = -float("inf"), []
    for i in order.tolist():
        if act[i] > best:
            keep.append(i)
            best = float(act[i])
    return torch.tensor(keep, dtype=torch.long)


class Population:
    """The epo selection step, and the frontier archive it keeps."""

    def __init__(self, cfg: ActMaxConfig):
        self.lams = torch.tensor(cfg.epo_lams, dtype=torch.float32)          # [P]
        self.frontier: torch.Tensor | None = None                            # [F, T] ids
        self._scores = (torch.empty(0), torch.empty(0))                      # their act, ce

    def __call__(self, ids: torch.Tensor, cur: Scores, cands: torch.Tensor,
                 scores: Scores) -> torch.Tensor:
        P, (B, n, T) = len(self.lams), cands.shape
        pool = torch.cat([ids.view(-1, P, T), cands.view(-1, P * n, T)], dim=1)   # [R, P+Pn, T]
        act = torch.cat([cur.target.view(-1, P), scores.target.view(-1, P * n)], dim=1)
        ce = torch.cat([cur.ce.view(-1, P), scores.ce.view(-1, P * n)], dim=1)
        J = act.unsqueeze(1) - self.lams.view(1, P, 1) * ce.unsqueeze(1)   # [R, P, pool]
        pick = J.argmax(-1)                                                # [R, P]
        self._archive(pool.flatten(0, 1), act.flatten(), ce.flatten())
        return torch.gather(pool, 1, pick.unsqueeze(-1).expand(-1, -1, T)).view(B, T)

    def _archive(self, ids: torch.Tensor, act: torch.Tensor, ce: torch.Tensor) -> None:
        if self.frontier is not None:
            ids = torch.cat([self.frontier, ids])
            act, ce = torch.cat([self._scores[0], act]), torch.cat([self._scores[1], ce])
        ids, first = _unique_rows(ids)
        act, ce = act[first], ce[first]
        keep = pareto(act, ce)
        if len(keep) > MAX_FRONTIER:
            keep = keep[torch.linspace(0, len(keep) - 1, MAX_FRONTIER).round().long()]
        self.frontier, self._scores = ids[keep], (act[keep], ce[keep])


def _unique_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of [N, T] and, for each, the index of its first occurrence."""
    uniq, inverse = torch.unique(ids, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(ids), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    return uniq, first


def epo(lm: LabModel, cfg: ActMaxConfig, target: Target,
        on_progress: OnProgress | None = None) -> Recorder:
    """EPO-lite from `cfg.restarts` random prompts; rows = restarts x len(cfg.epo_lams)
    members (restart r's members are rows r*P .. r*P+P-1, member i with epo_lams[i])."""
    pop = Population(cfg)
    lam = pop.lams.repeat(cfg.restarts)
    return search(lm, cfg, target, lam, pop, cfg.candidates // len(pop.lams), on_progress)


def row_lams(cfg: ActMaxConfig) -> list[float]:
    """The fluency weight of every row of a token method's result."""
    if cfg.method == "epo":
        return list(cfg.epo_lams) * cfg.restarts
    return [float(cfg.lam)] * cfg.restarts


def row_restarts(cfg: ActMaxConfig) -> list[int]:
    """The restart of every row of a token method's result."""
    members = len(cfg.epo_lams) if cfg.method == "epo" else 1
    return [b // members for b in range(cfg.restarts * members)]
