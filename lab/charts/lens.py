"""Altair charts of a `lab.lens.LensResult` (pure functions: tidy DataFrame in, chart out).

Tokens are nominal axes labelled "position token" and sorted by position (an aggregate sort,
no per-datum expression); layers and blocks sort by their index. Canvas rendering and one
`datum` tooltip, as in lab.charts.hidden: Streamlit's vega interpreter is slow per datum.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

_DATUM = {"content": "data"}  # tooltip: every field of the hovered datum
_CANVAS = {"embedOptions": {"renderer": "canvas"}}
LAYER_TITLE = "layer (hidden_states index: 0 = embeddings, L = output of block L-1)"
_TOKENS = alt.Axis(labelAngle=-90, labelOverlap="greedy", labelLimit=90)  # vertical: one per column
_STEPS = alt.Axis(tickMinStep=1, format="d")   # layers and blocks are whole numbers
METRICS = {"p_true": "probability of the true next token",
           "kl": "KL(final layer || this layer), nats"}


def _rounded(df: pd.DataFrame, rename: dict[str, str], digits: int = 4) -> pd.DataFrame:
    """The columns a chart uses, renamed for the tooltip; floats cut to `digits` significant
    digits (they travel to the browser)."""
    out = df[list(rename)].rename(columns=rename)
    for col in out.select_dtypes("float").columns:
        out[col] = out[col].map(lambda v: float(f"{v:.{digits}g}"))
    return out


def _by(field: str, title: str) -> dict:
    """Sort a nominal token axis by the position column next to it ("<field>_index")."""
    return {"sort": alt.EncodingSortField(f"{field}_index", op="min"), "title": title}


def lens_heatmap(cells: pd.DataFrame, metric: str = "p_true") -> alt.Chart:
    """Layer (rows, deepest on top) x position (tokens): the lens's verdict per cell."""
    data = _rounded(cells, {"layer": "layer_index", "label": "layer", "pos": "token_index",
                            "token": "token", "next_token": "next token", "p_true": "p_true",
                            "rank": "rank", "kl": "kl", "top1": "top-1", "top1_p": "top-1 p"})
    data["rank"] = data["rank"].astype(object).where(data["rank"].notna(), None)
    color = (alt.Color("p_true:Q", title="p(true next)", scale=alt.Scale(domain=[0, 1], scheme="viridis"))
             if metric == "p_true" else
             alt.Color("kl:Q", title="KL, nats", scale=alt.Scale(type="symlog", scheme="magma",
                                                                  reverse=True)))
    n_layers = data["layer_index"].nunique()
    y_sort = alt.EncodingSortField("layer_index", op="min", order="descending")
    # Streamlit fits axes and labels into the height: 16 px a row plus the vertical token labels
    return alt.Chart(data, height=16 * n_layers + 130).mark_rect(aria=False, tooltip=_DATUM).encode(
        x=alt.X("token:N", **_by("token", "token at the position (the lens predicts the next one)"),
                axis=_TOKENS),
        y=alt.Y("layer:N", sort=y_sort, title="layer", axis=alt.Axis(labelOverlap=False)),
        color=color,
    ).properties(title=f"Logit lens: {METRICS[metric]}", usermeta=_CANVAS)


def layer_lines(layers: pd.DataFrame) -> alt.Chart:
    """Per layer, averaged over positions: mean p(true next token) and the top-1 fraction."""
    names = {"p_true_mean": "mean p(true next token)", "top1_frac": "fraction where it is top-1"}
    long = layers.melt(id_vars=["layer", "label"], value_vars=list(names),
                       var_name="measure", value_name="value").replace({"measure": names})
    data = _rounded(long, {"layer": "layer", "label": "label", "measure": "measure", "value": "value"})
    return alt.Chart(data, height=280).mark_line(point=True, tooltip=_DATUM).encode(
        x=alt.X("layer:Q", title=LAYER_TITLE, axis=_STEPS),
        y=alt.Y("value:Q", title="probability / fraction (0..1)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="top", labelLimit=320)),
    ).properties(title="Per layer: how often and how surely the lens is right", usermeta=_CANVAS)


def kl_line(layers: pd.DataFrame) -> alt.Chart:
    data = _rounded(layers, {"layer": "layer", "label": "label", "kl_mean": "mean KL (nats)"})
    return alt.Chart(data, height=280).mark_line(point=True, tooltip=_DATUM, color="#b03060").encode(
        x=alt.X("layer:Q", title=LAYER_TITLE, axis=_STEPS),
        y=alt.Y("mean KL (nats):Q", title="mean KL(final || layer), nats, symlog scale",
                scale=alt.Scale(type="symlog")),
    ).properties(title="Per layer: distance to the final prediction", usermeta=_CANVAS)


def _pattern_base(pattern: pd.DataFrame, height: int) -> alt.Chart:
    data = _rounded(pattern, {"head": "head", "query": "query_index", "key": "key_index",
                              "query_token": "query", "key_token": "key", "weight": "weight"})
    return alt.Chart(data, height=height).mark_rect(aria=False, tooltip=_DATUM).encode(
        color=alt.Color("weight:Q", title="attention (0..1)",
                        scale=alt.Scale(domain=[0, 1], scheme="blues")))


def attention_heatmap(pattern: pd.DataFrame, title: str) -> alt.Chart:
    """Query (rows) x key (columns) for one head; each row sums to 1 over its keys."""
    n = pattern["query"].nunique()
    return _pattern_base(pattern, max(260, min(700, 14 * n + 130))).encode(
        x=alt.X("key:N", **_by("key", "key: the token attended to"),
                axis=_TOKENS),
        y=alt.Y("query:N", **_by("query", "query: the token attending")),
    ).properties(title=title, usermeta=_CANVAS)


def head_grid(patterns: pd.DataFrame, block: int, columns: int = 4) -> alt.FacetChart:
    """Every head of one block as a small query x key heatmap (no token labels: hover)."""
    bare = alt.Axis(labels=False, ticks=False, title=None)
    return _pattern_base(patterns, 150).encode(
        x=alt.X("key:N", sort=alt.EncodingSortField("key_index", op="min"), axis=bare),
        y=alt.Y("query:N", sort=alt.EncodingSortField("query_index", op="min"), axis=bare),
    ).properties(width=150).facet(
        facet=alt.Facet("head:O", title=f"block {block}: every head (rows = queries, columns = keys)"),
        columns=columns,
    ).properties(usermeta=_CANVAS)


def sink_chart(per_head: pd.DataFrame, per_block: pd.DataFrame) -> alt.LayerChart:
    """Per block, the share of attention that goes to token 0: one dot per head, the mean line."""
    heads = _rounded(per_head, {"block": "block", "head": "head", "token0": "share to token 0"})
    mean = _rounded(per_block, {"block": "block", "token0_mean": "mean over heads"})
    x = alt.X("block:Q", title="block (its attention writes into layer block + 1)", axis=_STEPS)
    dots = alt.Chart(heads).mark_circle(size=28, opacity=0.45, color="#7f7f7f", tooltip=_DATUM).encode(
        x=x, y=alt.Y("share to token 0:Q", title="attention to token 0 (share, 0..1)",
                     scale=alt.Scale(domain=[0, 1])))
    line = alt.Chart(mean).mark_line(point=True, color="#1f77b4", tooltip=_DATUM).encode(
        x=x, y="mean over heads:Q")
    return alt.layer(dots, line, height=280).properties(   # top padding: the title was clipped
        title="Attention to token 0 per block (dots: heads; line: their mean)", usermeta=_CANVAS,
        padding={"top": 12, "left": 5, "right": 5, "bottom": 5})
