"""Tidy tables of a `LensResult` (built on demand from its arrays: a partial result after a
Stop is the same arrays over fewer layers)."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd


def token_label(pos: int, token: str) -> str:
    """A token as an axis label: its position first (labels stay unique and in order)."""
    return f"{pos} {token.strip() or repr(token)}"


def _layer_index(r, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """(layer, position) of every cell of a [layers done, extra] array, row-major."""
    return np.repeat(np.arange(r.n_layers_done), extra), np.tile(np.arange(extra), r.n_layers_done)


def cells(r) -> pd.DataFrame:
    """One row per (layer, position): the lens's verdict on the next token there."""
    layer, pos = _layer_index(r, r.n_tokens)
    pad = np.full((r.n_layers_done, 1), np.nan)   # the last position has no next token
    rank = np.concatenate([r.rank.astype(float), pad], axis=1).ravel()
    texts = np.array(r.tokens, dtype=object)
    nxt = np.append(texts[1:], "")
    return pd.DataFrame({
        "layer": layer, "label": np.array(r.labels, dtype=object)[layer], "pos": pos,
        "token": np.array(r.axis_labels(), dtype=object)[pos], "next_token": nxt[pos],
        "p_true": np.concatenate([r.p_true, pad], axis=1).ravel(),
        "rank": pd.array([None if math.isnan(v) else int(v) for v in rank], dtype="Int64"),
        "kl": r.kl.ravel(), "top1": [r.vocab[int(i)] for i in r.top_ids[..., 0].ravel()],
        "top1_p": r.top_p[..., 0].ravel()})


def layers(r) -> pd.DataFrame:
    """One row per layer: averages over the positions that have a next token."""
    return pd.DataFrame({
        "layer": np.arange(r.n_layers_done), "label": list(r.labels[:r.n_layers_done]),
        "p_true_mean": r.p_true.mean(axis=1), "top1_frac": (r.rank == 1).mean(axis=1),
        "rank_median": np.median(r.rank, axis=1), "kl_mean": r.kl.mean(axis=1)})


def top_tokens(r) -> pd.DataFrame:
    """One row per (layer, position, rank): the lens's most likely tokens."""
    k = r.top_ids.shape[-1]
    layer, pos = _layer_index(r, r.n_tokens)
    ids = r.top_ids.reshape(-1)
    return pd.DataFrame({
        "layer": np.repeat(layer, k), "label": np.array(r.labels, dtype=object)[np.repeat(layer, k)],
        "pos": np.repeat(pos, k), "rank": np.tile(np.arange(1, k + 1), len(layer)),
        "token_id": ids, "token": [r.vocab[int(i)] for i in ids], "p": r.top_p.reshape(-1)})


def top_table(r, pos: int) -> pd.DataFrame:
    """At one position: per layer the true next token's probability and rank, then the top
    tokens as "token (p)" columns (a table for people)."""
    has_next = pos < r.n_tokens - 1
    out = pd.DataFrame({"layer": list(r.labels[:r.n_layers_done])})
    out["p(next)"] = r.p_true[:, pos] if has_next else np.nan
    out["rank(next)"] = r.rank[:, pos] if has_next else pd.NA
    for j in range(r.top_ids.shape[-1]):
        out[str(j + 1)] = [f"{r.vocab[int(i)]!r} ({p:.2f})"
                           for i, p in zip(r.top_ids[:, pos, j], r.top_p[:, pos, j])]
    return out


def attention_sink(r) -> pd.DataFrame:
    """One row per (block, head): the mean attention its queries 1.. give token 0."""
    b, h = np.meshgrid(np.arange(r.n_blocks), np.arange(r.n_heads), indexing="ij")
    return pd.DataFrame({"block": b.ravel(), "head": h.ravel(), "token0": r.token0.ravel()})


def attention_blocks(r) -> pd.DataFrame:
    """One row per block: token-0 share averaged over heads, and its range over heads."""
    return pd.DataFrame({"block": np.arange(r.n_blocks), "token0_mean": r.token0.mean(axis=1),
                         "token0_min": r.token0.min(axis=1), "token0_max": r.token0.max(axis=1)})


def pattern(r, block: int, heads: Iterable[int], lo: int = 0, hi: int | None = None) -> pd.DataFrame:
    """Attention of queries lo..hi-1 to keys 0 and lo..query (the causal cells only; key 0
    always, so the first-token sink shows in any window)."""
    hi = r.n_tokens if hi is None else min(hi, r.n_tokens)
    labels = r.axis_labels()
    rows = [(h, q, k) for h in heads for q in range(lo, hi)
            for k in sorted({0, *range(lo, q + 1)})]
    h, q, k = (np.array(c, dtype=int) for c in zip(*rows))
    return pd.DataFrame({"head": h, "query": q, "key": k,
                         "query_token": [labels[i] for i in q], "key_token": [labels[i] for i in k],
                         "weight": r.patterns[block][h, q, k].astype(np.float32)})


def settle(r) -> dict:
    """From which layer the true next token is top-1, over positions the final layer gets
    right: `first` (the earliest layer it is top-1) and `settled` (top-1 there and in every
    later layer). Layers are hidden_states indices (0 = embeddings)."""
    top1 = r.rank == 1                                        # [layers, pos - 1]
    correct = top1[-1] if len(top1) else np.zeros(r.n_tokens - 1, bool)
    stays = np.flip(np.cumprod(np.flip(top1, 0), 0), 0).astype(bool)   # top-1 from here on
    settled = np.argmax(stays, axis=0)[correct]
    first = np.argmax(top1, axis=0)[correct]
    avg = lambda a, f: round(float(f(a)), 3) if len(a) else None  # noqa: E731
    return {"positions": int(r.n_tokens - 1), "correct": int(correct.sum()),
            "settled_mean": avg(settled, np.mean), "settled_median": avg(settled, np.median),
            "first_mean": avg(first, np.mean), "first_median": avg(first, np.median),
            "complete": bool(r.complete)}


def settle_sentence(s: dict) -> str:
    if s["settled_mean"] is None:
        return "never: the final layer ranks no true next token first"
    return (f"layer {s['settled_mean']:.1f} on average (median {s['settled_median']:g}) stays "
            f"top-1 from there on; first top-1 at layer {s['first_mean']:.1f} on average "
            f"(hidden_states index, 0 = embeddings; over the {s['correct']} positions the "
            f"final layer gets right)" + ("" if s["complete"] else " [incomplete run]"))


def plain(a: np.ndarray) -> list:
    """An array as JSON data: floats rounded to 6 digits, NaN as null."""
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return a.tolist()
    return np.where(np.isnan(a), None, np.round(a.astype(float), 6)).tolist()


def records(df: pd.DataFrame) -> list[dict]:
    """A table as JSON data (numpy scalars as Python numbers, NaN as null)."""
    def cell(v):
        v = v.item() if hasattr(v, "item") else v
        return None if isinstance(v, float) and math.isnan(v) else v
    return [{k: cell(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
