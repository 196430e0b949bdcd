"""Reproducibility: activation maximization from many random starts; do the restarts agree?

Agreement is measured on the decoded tokens (counts, Jaccard overlap of the restarts' token
sets) and on the vectors (cosine between restarts, and between their moves x - x0), each
against a null control: random unoptimized vectors of the same shape and scale, decoded the
same way.

With pez and discrete the tokens are the prompts themselves and the vectors their token
embeddings (what the model saw); the null control is what each method starts from unoptimized:
random vectors projected to their nearest tokens (pez), random allowed tokens (discrete).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.decode import token_texts, top1
from lab.actmax.optimize import Recorder, random_embeddings
from lab.actmax.result import ActMaxResult, maximize
from lab.actmax.result import partial_result as actmax_partial
from lab.experiment import OnProgress, param, record, share_seed, validate
from lab.hooks import resid_post
from lab.models import LabModel


@dataclass(frozen=True)
class ReproConfig:
    """Many restarts of one activation-maximization run, compared with each other."""

    actmax: ActMaxConfig = param(ActMaxConfig(hook=resid_post(7), index=91, restarts=10,
                                              corpus_top=0),
                                 "the activation-maximization run whose restarts are compared "
                                 "(no corpus bar by default: this page compares restarts)")
    seed: int = param(0, "random seed: restart r starts from a generator seeded with (seed, r); "
                         "the null control and the gap meter use their own streams of it", min=0)

    def __post_init__(self):
        validate(self)
        share_seed(self, "actmax")
        if self.actmax.restarts < 2:
            raise ValueError(f"reproducibility compares restarts: restarts must be at least 2, "
                             f"got {self.actmax.restarts}")
        if self.actmax.method == "epo":
            raise ValueError("reproducibility compares restarts of continuous, pez or discrete; "
                             "epo's rows are a population, not restarts")


@dataclass(frozen=True)
class TokenStats:
    """Agreement between restarts, from their decoded tokens and their vectors."""

    token_ids: np.ndarray     # [restarts, n_tokens] nearest token of every vector
    frequencies: pd.DataFrame  # token_id, token, count, frequency (numpy.unique, most common first)
    jaccard: np.ndarray       # [restarts, restarts] |A∩B| / |A∪B| of the restarts' token sets
    cosine: np.ndarray        # [restarts, restarts] cosine of the flattened [n_tokens*d_model] vectors

    @property
    def n_total(self) -> int:
        return int(self.token_ids.size)

    @property
    def n_unique(self) -> int:
        return int(len(self.frequencies))

    @property
    def mean_jaccard(self) -> float:
        return off_diagonal_mean(self.jaccard)

    @property
    def mean_cosine(self) -> float:
        return off_diagonal_mean(self.cosine)


def off_diagonal_mean(m: np.ndarray) -> float:
    mask = ~np.eye(len(m), dtype=bool)
    return float(m[mask].mean()) if mask.any() else float("nan")


def token_statistics(token_ids: np.ndarray, vectors: np.ndarray | torch.Tensor,
                     labels: list[str] | None = None) -> TokenStats:
    """Counts, Jaccard and cosine for token ids [R, T] and their vectors [R, T, D].

    `labels` gives the text of each id in `token_ids.ravel()` order (ids when None).
    """
    token_ids = np.asarray(token_ids)
    flat = token_ids.ravel()
    text = dict(zip(flat.tolist(), labels if labels is not None else map(str, flat.tolist())))
    uniq, counts = np.unique(flat, return_counts=True)
    order = np.lexsort((uniq, -counts))   # most common first, ties by id
    freq = pd.DataFrame({"token_id": uniq[order], "token": [text[i] for i in uniq[order].tolist()],
                         "count": counts[order], "frequency": counts[order] / flat.size})
    sets = [set(row.tolist()) for row in token_ids]
    jac = np.array([[len(a & b) / len(a | b) for b in sets] for a in sets])
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float64)).reshape(len(token_ids), -1)
    v = torch.nn.functional.normalize(v, dim=-1)
    return TokenStats(token_ids, freq, jac, (v @ v.T).numpy())


@dataclass(frozen=True)
class ReproResult:
    """The restarts (an ActMaxResult) and how much they agree, against the null control."""

    config: ReproConfig
    maximized: ActMaxResult   # the run itself: history, nearest tokens, gap meter
    optimized: TokenStats     # the optimized embeddings of every restart
    null: TokenStats          # random unoptimized vectors of the same shape and scale
    same_as_start: int        # decoded tokens equal to the nearest token of their own start
    step_cosine: np.ndarray   # [restarts, restarts] cosine of the displacements x - x0

    @property
    def mean_step_cosine(self) -> float:
        """Do the restarts *move* the same way, even if they started far apart?"""
        return off_diagonal_mean(self.step_cosine)

    def _both(self):
        return (("optimized", self.optimized), ("null control", self.null))

    def summary(self) -> pd.DataFrame:
        rows = []
        for name, s in self._both():
            rows.append({"vectors": name, "decoded": s.n_total, "unique": s.n_unique,
                         "most_common_count": int(s.frequencies["count"].iloc[0]),
                         "mean_jaccard": s.mean_jaccard, "mean_cosine": s.mean_cosine})
        return pd.DataFrame(rows)

    def pairs(self) -> pd.DataFrame:
        """Tidy pairwise matrices: vectors, restart_a, restart_b, jaccard, cosine."""
        rows = []
        for name, s in self._both():
            n = len(s.jaccard)
            rows += [(name, a, b, float(s.jaccard[a, b]), float(s.cosine[a, b]))
                     for a in range(n) for b in range(n)]
        return pd.DataFrame(rows, columns=["vectors", "restart_a", "restart_b", "jaccard", "cosine"])

    def agreement(self) -> dict:
        """The agreement numbers as plain JSON data."""
        return {"summary": self.summary().to_dict(orient="records"),
                "same_as_start": self.same_as_start,
                "mean_displacement_cosine": self.mean_step_cosine,
                "frequencies": self.optimized.frequencies.to_dict(orient="records"),
                "null_frequencies": self.null.frequencies.to_dict(orient="records"),
                "jaccard": self.optimized.jaccard.round(4).tolist(),
                "cosine": self.optimized.cosine.round(4).tolist(),
                "null_jaccard": self.null.jaccard.round(4).tolist()}

    def to_record(self) -> dict:
        return record("repro", self.config, self.maximized.model, **self.maximized.numbers(),
                      reproducibility=self.agreement())

    def frames(self) -> dict[str, pd.DataFrame]:
        return {**self.maximized.frames(), "agreement": self.summary(), "pairs": self.pairs(),
                "frequencies": self.optimized.frequencies,
                "null_frequencies": self.null.frequencies}

    def brief(self) -> dict:
        s = self.summary().set_index("vectors")
        opt, null = s.loc["optimized"], s.loc["null control"]
        n = int(opt["decoded"])
        return {**self.maximized.brief(),
                "unique_tokens": f"{int(opt['unique'])} of {n}",
                "null_unique_tokens": f"{int(null['unique'])} of {n}",
                "mean_jaccard": round(opt["mean_jaccard"], 3),
                "null_mean_jaccard": round(null["mean_jaccard"], 3),
                "mean_cosine": round(opt["mean_cosine"], 3),
                "tokens_unchanged_from_start": f"{self.same_as_start} of {n}",
                "mean_cosine_of_moves": round(self.mean_step_cosine, 3),
                "top_tokens": self.optimized.frequencies.head(5)[["token", "count"]].values.tolist()}


def _stats_of(lm: LabModel, vectors: torch.Tensor) -> TokenStats:
    ids = top1(lm, vectors)
    return token_statistics(ids, vectors.detach().cpu().numpy(), token_texts(lm, ids))


def _stats_of_ids(lm: LabModel, ids) -> TokenStats:
    ids = np.asarray(ids)
    return token_statistics(ids, lm.W_E.detach().cpu()[torch.as_tensor(ids)].numpy(),
                            token_texts(lm, ids))


def reproducibility(lm: LabModel, result: ActMaxResult,
                    cfg: ReproConfig | None = None) -> ReproResult:
    """How much the restarts of `result` agree, against random unoptimized vectors (same
    shape, scale). `cfg` defaults to the ReproConfig of `result.config`."""
    run_cfg = result.config
    cfg = ReproConfig(actmax=run_cfg, seed=run_cfg.seed) if cfg is None else cfg
    if result.prompts is not None:
        return _token_reproducibility(lm, result, cfg)
    null = random_embeddings(lm, run_cfg.seed, run_cfg.restarts, run_cfg.n_tokens, stream=1)
    optimized = _stats_of(lm, result.embeds)
    kept = int((optimized.token_ids == top1(lm, result.start)).sum())
    return ReproResult(cfg, result, optimized, _stats_of(lm, null), kept,
                       _move_cosine(result.embeds, result.start))


def _move_cosine(end: torch.Tensor, start: torch.Tensor) -> np.ndarray:
    steps = torch.nn.functional.normalize((end - start).double().flatten(1), dim=-1)
    return (steps @ steps.T).numpy()


def _token_reproducibility(lm: LabModel, result: ActMaxResult, cfg: ReproConfig) -> ReproResult:
    """pez and discrete: the prompts' tokens and embeddings; the null is the method's start
    left unoptimized (random vectors' nearest allowed tokens, or random allowed tokens)."""
    from lab.actmax.pez import project
    from lab.actmax.target import allowed_tokens, random_ids
    c, W = result.config, lm.W_E.detach().cpu()
    if c.method == "pez":
        vectors = random_embeddings(lm, c.seed, c.restarts, c.n_tokens, stream=1).cpu()
        null = project(torch.nn.functional.normalize(W.float(), dim=-1), allowed_tokens(lm), vectors)
    else:
        null = random_ids(lm, c.seed, c.restarts, c.n_tokens, stream=1)
    ids, start = torch.as_tensor(result.prompts.ids), torch.as_tensor(result.start_ids)
    return ReproResult(cfg, result, _stats_of_ids(lm, ids), _stats_of_ids(lm, null),
                       int((ids == start).sum()), _move_cosine(W[ids], W[start]))


def run(lm: LabModel, cfg: ReproConfig, on_progress: OnProgress | None = None) -> ReproResult:
    """Maximize from `cfg.actmax.restarts` starts as one batch, then compare the restarts."""
    return reproducibility(lm, maximize(lm, cfg.actmax, on_progress), cfg)


def partial_result(lm: LabModel, cfg: ReproConfig, partial: Recorder) -> ReproResult:
    """A stopped run's restarts (the Recorder of its last Progress), compared as they are."""
    return reproducibility(lm, actmax_partial(lm, cfg.actmax, partial), cfg)
