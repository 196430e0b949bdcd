"""Hidden-state distributions: one forward pass, every layer's residual stream, its statistics.

The states, in order (n = number of blocks, so n + 2 states in all):

    state 0        "embed"                    hook_embed: the input to block 0
    state L + 1    "block L"                  blocks.{L}.hook_resid_post: output of block L, raw
    state n + 1    "final norm"               the last block's output after the final norm,
                                              which is what HF returns as its last hidden state

The raw residual and the normed copy of the last state are both kept, labelled, because the
final norm rescales every token: "the last layer narrows again" can be a fact about the
residual stream or only about the norm, and the two states tell which.

Two steps, so that a page can cache the expensive one: `capture_states` runs the model once
(seconds); `analyze` turns the states into tidy tables (a fraction of that), for any `HiddenConfig`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from lab.hooks import run_with_hooks
from lab.models import LabModel
from lab.paths import read_text

DEFAULT_TEXT_FILE = "hidden_default.txt"
BIN_SCALES = ("symlog", "linear")
_TOKEN_CHUNK = 128  # tokens per pass over the states: bounds float64 scratch memory


def default_text() -> str:
    """The paragraph written for this experiment (ordinary English prose, ~260 SmolLM2 tokens)."""
    return read_text(DEFAULT_TEXT_FILE)


# ---------------------------------------------------------------- input text

def decode_upload(data: bytes) -> str:
    """An uploaded file's bytes as text; one-sentence ValueError when it is not plain text."""
    if b"\x00" in data:
        raise ValueError("This file looks binary (it contains NUL bytes): use a plain-text .txt file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("This file is not UTF-8 text: save it as plain UTF-8 text (.txt) and try again.") from None
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > max(2, len(text) // 100):  # text has almost none; binary formats many
        raise ValueError("This file looks binary (many control characters): use a plain-text .txt file.")
    return text


def check_text(text: str) -> str:
    """The text, or a one-sentence ValueError when there is nothing to read."""
    if not text or not text.strip():
        raise ValueError("The text is empty: paste some text or upload a .txt file.")
    return text


# ---------------------------------------------------------------- the forward pass

@dataclass(frozen=True, eq=False)
class HiddenStates:
    """What one forward pass captured; `values` is the only large field."""

    model: str                   # registry name of the model that ran
    values: np.ndarray           # [n_states, n_tokens, d_model] float32, states in the order above
    labels: tuple[str, ...]      # one per state: "embed", "block 0", ..., "block n-1", "final norm"
    token_ids: tuple[int, ...]   # the tokens that were run (after truncation)
    tokens: tuple[str, ...]      # each token decoded on its own, for tooltips
    used_text: str               # the text those tokens decode to: what the model actually read
    n_text_tokens: int           # tokens in the whole text, before truncation
    max_tokens: int              # the limit that applied: min(model context, caller's limit)
    forward_seconds: float       # wall time of the forward pass

    @property
    def n_states(self) -> int:
        return self.values.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.values.shape[1]

    @property
    def d_model(self) -> int:
        return self.values.shape[2]

    @property
    def truncated(self) -> bool:
        return self.n_text_tokens > self.n_tokens


def state_labels(n_layers: int) -> tuple[str, ...]:
    return ("embed", *(f"block {L}" for L in range(n_layers)), "final norm")


def hook_points(n_layers: int) -> list[str]:
    return ["hook_embed"] + [f"blocks.{L}.hook_resid_post" for L in range(n_layers)]


def tokenize(lm: LabModel, text: str, max_tokens: int | None = None) -> tuple[list[int], int, int]:
    """(token ids cut to the limit, tokens in the whole text, the limit) for `text`."""
    check_text(text)
    limit = lm.n_ctx if max_tokens is None else min(int(max_tokens), lm.n_ctx)
    if limit < 2:
        raise ValueError(f"The token limit must be at least 2 (got {max_tokens}).")
    ids = list(lm.tokenizer(text, verbose=False)["input_ids"])
    if not ids:
        raise ValueError("The text produced no tokens: paste some ordinary text.")
    return ids[:limit], len(ids), limit


def capture_states(lm: LabModel, text: str, max_tokens: int | None = None) -> HiddenStates:
    """Run the model once over `text` (cut to `max_tokens`, at most its context) and keep
    the embeddings, every block's raw output, and the final-normed last output."""
    ids, n_text, limit = tokenize(lm, text, max_tokens)
    input_ids = torch.tensor([ids], device=lm.device)  # [1, pos]
    names = hook_points(lm.n_layers)
    t0 = time.perf_counter()
    with torch.no_grad():
        acts = run_with_hooks(lm, names, input_ids=input_ids, stop_early=False, detach=True)
        normed = lm.arch.final_norm_of(lm.model)(acts[names[-1]])  # [1, pos, d_model]
    seconds = time.perf_counter() - t0
    stacked = torch.cat([acts[n] for n in names] + [normed])  # [n_states, pos, d_model]
    tok = lm.tokenizer
    return HiddenStates(model=lm.name, values=stacked.float().cpu().numpy(),
                        labels=state_labels(lm.n_layers), token_ids=tuple(ids),
                        tokens=tuple(tok.decode([i]) for i in ids), used_text=tok.decode(ids),
                        n_text_tokens=n_text, max_tokens=limit, forward_seconds=seconds)


# ---------------------------------------------------------------- statistics

@dataclass(frozen=True)
class HiddenConfig:
    """How the captured states become statistics (the forward pass does not depend on it)."""

    keep_first_token: bool = False  # token 0 has no context and carries extreme values: dropped by default
    n_bins: int = 80                # histogram bins; the same edges for every state
    bin_scale: str = "symlog"       # "symlog": equal width on a symlog axis (fine near 0, wide in the tails); "linear"
    outlier_std: float = 5.0        # a value is an outlier when |x - mean| > outlier_std * std of its state
    top_dims: int = 3               # outlier dimensions listed per state (largest max |x| over tokens)
    points_per_state: int = 60      # scatter points per state sent to the browser (~1.9k for 32 states)
    extremes_per_state: int = 6     # of those, the largest |x| values, so outliers always show
    seed: int = 0                   # picks the random part of the scatter sample

    def __post_init__(self):
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2 (got {self.n_bins}).")
        if self.bin_scale not in BIN_SCALES:
            raise ValueError(f"bin_scale must be one of {BIN_SCALES} (got {self.bin_scale!r}).")
        if not self.outlier_std > 0:
            raise ValueError(f"outlier_std must be positive (got {self.outlier_std}).")
        if self.top_dims < 1:
            raise ValueError(f"top_dims must be at least 1 (got {self.top_dims}).")
        if not 0 <= self.extremes_per_state <= self.points_per_state:
            raise ValueError("extremes_per_state must be between 0 and points_per_state "
                             f"(got {self.extremes_per_state} and {self.points_per_state}).")


@dataclass(frozen=True)
class HiddenResult:
    """Tidy tables of one analysis. Every table has `state` (0 = embed) and `label`."""

    config: HiddenConfig
    model: str
    summary: pd.DataFrame       # one row per state: tokens, values, mean, std, min, max, excess_kurtosis, outlier_frac, top_dims
    outlier_dims: pd.DataFrame  # state, label, rank, dim, max_abs: dimensions with the largest |x|
    histogram: pd.DataFrame     # state, label, bin, lo, hi, count: shared edges, counts per state
    pairs: pd.DataFrame         # state_a, label_a, state_b, label_b, cov, r2: every ordered pair
    points: pd.DataFrame        # state, label, token, token_text, dim, value: scatter sample
    n_tokens: int               # tokens the statistics used (token 0 dropped unless kept)
    n_text_tokens: int          # tokens in the whole text
    max_tokens: int             # the truncation limit that applied
    d_model: int
    forward_seconds: float      # wall time of the forward pass that produced the states
    bin_constant: float         # the symlog constant of the histogram edges (charts reuse it)
    tokens: tuple[str, ...]     # every token that was run, decoded on its own (token 0 included)
    used_text: str              # what the model read: the text after truncation

    @property
    def truncated(self) -> bool:
        return self.n_text_tokens > self.max_tokens

    @property
    def labels(self) -> list[str]:
        return list(self.summary["label"])

    def matrix(self, value: str = "r2") -> pd.DataFrame:
        """`value` ("r2" or "cov") as a square state x state table labelled both ways."""
        square = self.pairs.pivot(index="state_a", columns="state_b", values=value)
        names = dict(zip(self.summary["state"], self.summary["label"]))
        return square.rename(index=names, columns=names).rename_axis(index=None, columns=None)

    def only(self, states: Sequence[int]) -> "HiddenResult":
        """The same result restricted to some states (for display; nothing is recomputed)."""
        keep = set(states)
        pick = lambda df, col="state": df[df[col].isin(keep)].reset_index(drop=True)  # noqa: E731
        pairs = self.pairs[self.pairs["state_a"].isin(keep) & self.pairs["state_b"].isin(keep)]
        return HiddenResult(self.config, self.model, pick(self.summary), pick(self.outlier_dims),
                            pick(self.histogram), pairs.reset_index(drop=True), pick(self.points),
                            self.n_tokens, self.n_text_tokens, self.max_tokens, self.d_model,
                            self.forward_seconds, self.bin_constant, self.tokens, self.used_text)

    def to_dict(self) -> dict:
        """Everything needed to reproduce and read the result, JSON-ready."""
        return {"model": self.model, "config": asdict(self.config), "versions": _versions(),
                "tokens_used": self.n_tokens, "tokens_in_text": self.n_text_tokens,
                "max_tokens": self.max_tokens, "truncated": self.truncated, "d_model": self.d_model,
                "labels": self.labels, "summary": self.summary.to_dict(orient="records"),
                "r2": self.matrix("r2").to_numpy().round(6).tolist(),
                "cov": self.matrix("cov").to_numpy().round(6).tolist()}


def _versions() -> dict:
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}


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
    order = np.argsort(-peak, axis=1)[:, :k]        # [S, k]
    rows = [{"state": s, "label": labels[s], "rank": r + 1, "dim": int(order[s, r]),
             "max_abs": float(peak[s, order[s, r]])} for s in range(x.shape[0]) for r in range(k)]
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


def hidden_states(lm: LabModel, text: str, cfg: HiddenConfig = HiddenConfig(),
                  max_tokens: int | None = None) -> HiddenResult:
    """The whole experiment: one forward pass over `text`, then its statistics."""
    return analyze(capture_states(lm, text, max_tokens), cfg)
