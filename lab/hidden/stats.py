"""The statistics of captured states: moments, shared-edge histograms, covariance and R^2
between states, outlier dimensions and a scatter sample. Pure functions of the states."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lab.hidden.capture import HiddenStates
from lab.hidden.config import HiddenConfig
from lab.hidden.result import HiddenResult

_TOKEN_CHUNK = 128  # tokens per pass over the states: bounds float64 scratch memory


def _chunks(x: np.ndarray, dtype=torch.float64):
    """x [S, T, d] in slices of whole tokens, flattened: [S, chunk * d] each.

    torch, not numpy, does the arithmetic: numpy's OpenBLAS threads fight torch's for the
    same cores (a 32 x 73k covariance took 0.05-5 s with numpy, steadily ~0.05 s in torch)."""
    for t in range(0, x.shape[1], _TOKEN_CHUNK):
        part = torch.from_numpy(x[:, t:t + _TOKEN_CHUNK, :])
        yield part.reshape(part.shape[0], -1).to(dtype).contiguous()


def _symlog(v, constant: float):
    """vega-lite's symlog transform."""
    return np.sign(v) * np.log1p(np.abs(v) / constant)


def bin_edges(lo: float, hi: float, n_bins: int, scale: str, constant: float = 1.0) -> np.ndarray:
    """n_bins + 1 edges over [lo, hi], equally spaced on a linear or a symlog axis.

    symlog is vega-lite's: f(x) = sign(x) log1p(|x| / constant), so the bars come out equally
    wide on the chart's symlog x axis with the same constant.
    """
    if hi <= lo:  # a constant state: one nonzero-width bin around it
        lo, hi = lo - 0.5, hi + 0.5
    if scale == "linear":
        return np.linspace(lo, hi, n_bins + 1)
    g = np.linspace(_symlog(lo, constant), _symlog(hi, constant), n_bins + 1)
    edges = np.sign(g) * np.expm1(np.abs(g)) * constant
    edges[0], edges[-1] = lo, hi  # exact ends: no value falls outside by rounding
    return edges


def symlog_constant(std: np.ndarray) -> float:
    """Width of the linear part of the symlog axis: the smallest state's spread, so even the
    narrowest state (the embeddings) is resolved by several bins."""
    positive = std[std > 0]
    return float(positive.min()) if positive.size else 1.0


def _moments(x: np.ndarray):
    """Per state: mean, min, max, covariance matrix [S, S] (ddof 1, as numpy.cov), 4th moment."""
    S, n = x.shape[0], x.shape[1] * x.shape[2]
    total = torch.zeros(S, dtype=torch.float64)
    for c in _chunks(x, torch.float32):
        total += c.sum(1, dtype=torch.float64)
    mean = total / n
    cov, m4 = torch.zeros(S, S, dtype=torch.float64), torch.zeros(S, dtype=torch.float64)
    for c in _chunks(x):
        c -= mean[:, None]
        cov += c @ c.T
        sq = c * c
        m4 += (sq * sq).sum(1)
    # c @ c.T is symmetric only up to rounding on some CPUs (AVX-512 kernels): mirror one half
    cov = torch.triu(cov) + torch.triu(cov, 1).T
    lo, hi = x.min(axis=(1, 2)).astype(np.float64), x.max(axis=(1, 2)).astype(np.float64)
    return mean.numpy(), lo, hi, (cov / max(n - 1, 1)).numpy(), (m4 / n).numpy()


def _counts(x: np.ndarray, edges: np.ndarray, mean: np.ndarray, cut: np.ndarray):
    """Histogram counts [S, n_bins] on shared edges, and outlier counts |x - mean| > cut [S]."""
    S, nb = x.shape[0], len(edges) - 1
    inner = torch.from_numpy(edges[1:-1])  # values equal to the last edge go in the last bin
    offset = nb * torch.arange(S)[:, None]
    mean_t, cut_t = torch.from_numpy(mean)[:, None], torch.from_numpy(cut)[:, None]
    counts, outliers = torch.zeros(S * nb, dtype=torch.int64), torch.zeros(S, dtype=torch.int64)
    for c in _chunks(x):
        idx = torch.bucketize(c, inner, right=True)  # bin i: edges[i] <= v < edges[i+1], as numpy
        counts += torch.bincount((idx + offset).ravel(), minlength=S * nb)
        outliers += ((c - mean_t).abs() > cut_t).sum(1)
    return counts.reshape(S, nb).numpy(), outliers.numpy()


def _r2(cov: np.ndarray) -> np.ndarray:
    """Squared Pearson correlation from a covariance matrix; 0 where a state is constant."""
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(np.outer(sd, sd) > 0, cov / np.outer(sd, sd), 0.0)
    r2 = np.clip(corr, -1, 1) ** 2
    np.fill_diagonal(r2, np.where(sd > 0, 1.0, 0.0))
    return r2


def _top_dims(x: np.ndarray, labels, k: int) -> pd.DataFrame:
    peak = np.abs(x).max(axis=1)                    # [S, d]: largest |x| of each dimension
    order = np.argsort(-peak, axis=1)[:, :k]        # [S, min(k, d)]: k may exceed a small d_model
    rows = [{"state": s, "label": labels[s], "rank": r + 1, "dim": int(order[s, r]),
             "max_abs": float(peak[s, order[s, r]])}
            for s in range(x.shape[0]) for r in range(order.shape[1])]
    return pd.DataFrame(rows)


def _sample_points(x: np.ndarray, cfg: HiddenConfig, first: int, tokens, labels) -> pd.DataFrame:
    """Per state: its `extremes_per_state` largest |x| plus a uniform random sample."""
    rng = np.random.default_rng(cfg.seed)
    S, T, d = x.shape
    frames = []
    for s in range(S):
        flat = x[s].reshape(-1)
        k = min(cfg.extremes_per_state, flat.size)
        top = np.argpartition(-np.abs(flat), k - 1)[:k] if k else np.empty(0, dtype=np.int64)
        n_rand = min(cfg.points_per_state - k, flat.size)
        pick = np.unique(np.concatenate([top, rng.choice(flat.size, n_rand, replace=False)]))
        tok = pick // d + first
        frames.append(pd.DataFrame({"state": s, "label": labels[s], "token": tok,
                                    "token_text": [tokens[t] for t in tok], "dim": pick % d,
                                    "value": flat[pick].astype(np.float64)}))
    return pd.concat(frames, ignore_index=True)


def analyze(states: HiddenStates, cfg: HiddenConfig = HiddenConfig()) -> HiddenResult:
    """Per-state summary, shared-edge histograms, state x state covariance and R^2 over the
    flattened [tokens x d_model] values, and a scatter sample."""
    first = 0 if cfg.keep_first_token else 1
    x = states.values[:, first:, :]                  # [S, T, d]
    if x.shape[1] == 0:
        raise ValueError("The text has a single token, and token 0 is excluded: keep the first "
                         "token or use a longer text.")
    S, T, d = x.shape
    labels = states.labels
    mean, lo, hi, cov, m4 = _moments(x)
    var = np.diag(cov) * (T * d - 1) / (T * d)       # population variance for the summary
    std = np.sqrt(var)
    constant = symlog_constant(std)
    edges = bin_edges(lo.min(), hi.max(), cfg.n_bins, cfg.bin_scale, constant)
    counts, outliers = _counts(x, edges, mean, cfg.outlier_std * std)
    top = _top_dims(x, labels, cfg.top_dims)
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = np.where(var > 0, m4 / var ** 2 - 3.0, np.nan)
    summary = pd.DataFrame({
        "state": np.arange(S), "label": labels, "tokens": T, "values": T * d, "mean": mean,
        "std": std, "min": lo, "max": hi, "excess_kurtosis": kurt, "outlier_frac": outliers / (T * d),
        "top_dims": [", ".join(f"{r.dim} ({r.max_abs:.3g})" for r in g.itertuples())
                     for _, g in top.groupby("state", sort=True)]})
    histogram = pd.DataFrame({
        "state": np.repeat(np.arange(S), cfg.n_bins), "label": np.repeat(labels, cfg.n_bins),
        "bin": np.tile(np.arange(cfg.n_bins), S), "lo": np.tile(edges[:-1], S),
        "hi": np.tile(edges[1:], S), "count": counts.ravel()})
    a, b = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
    pairs = pd.DataFrame({"state_a": a.ravel(), "label_a": np.array(labels)[a.ravel()],
                          "state_b": b.ravel(), "label_b": np.array(labels)[b.ravel()],
                          "cov": cov.ravel(), "r2": _r2(cov).ravel()})
    points = _sample_points(x, cfg, first, states.tokens, labels)
    return HiddenResult(cfg, states.model, summary, top, histogram, pairs, points, T,
                        states.n_text_tokens, states.max_tokens, d, states.forward_seconds, constant,
                        states.tokens, states.used_text)
