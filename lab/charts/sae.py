"""Altair charts for the sparse autoencoder experiment (pure functions returning charts)."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

_CURVES = [("loss", "loss (normalized MSE + L1)"),
           ("nmse", "normalized MSE (MSE / input variance)"),
           ("l0", "L0 (active latents per token)")]
_SPLIT_SCALE = alt.Scale(domain=["train", "val"], range=["#1f77b4", "#ff7f0e"])


def training_curves(history: pd.DataFrame, width: int = 260, height: int = 200) -> alt.HConcatChart:
    """Loss, normalized MSE and L0 per epoch, train vs held-out rows.
    Look for: the validation nMSE falling with the training one (learning) or flattening
    while training keeps falling (memorising the few tokens)."""
    panels = []
    for col, title in _CURVES:
        panels.append(alt.Chart(history).mark_line(point=len(history) < 60).encode(
            x=alt.X("epoch:Q", title="epoch (passes over the tokens)"),
            y=alt.Y(f"{col}:Q", title=title, scale=alt.Scale(zero=col == "l0")),
            color=alt.Color("split:N", title="rows", scale=_SPLIT_SCALE),
            tooltip=["epoch", "split", alt.Tooltip(f"{col}:Q", format=".4g")],
        ).properties(width=width, height=height))
    return alt.hconcat(*panels)


def density_histogram(stats: pd.DataFrame, bins: int = 30) -> alt.Chart:
    """How many latents fire on what fraction of tokens (log axis; dead latents, density 0,
    have no place on it and are counted in the title). Look for: a pile at the left (latents
    that fire on one or two tokens) and any at 1.0 (always-on, carrying no information)."""
    alive = stats.loc[stats["density"] > 0, "density"].to_numpy()
    n_dead = int((stats["density"] == 0).sum())
    title = f"latent density ({n_dead} dead latents not shown)"
    if alive.size == 0:
        frame = pd.DataFrame({"lo": [0.0], "hi": [0.0], "count": [0]})
    else:
        lo = np.log10(alive.min())
        edges = np.linspace(lo - 1e-9, 0.0 + 1e-9, bins + 1) if lo < 0 else np.array([-1e-9, 1e-9])
        counts, edges = np.histogram(np.log10(alive), bins=edges)
        frame = pd.DataFrame({"lo": 10 ** edges[:-1], "hi": 10 ** edges[1:], "count": counts})
        frame = frame[frame["count"] > 0]
    return alt.Chart(frame, title=title).mark_bar().encode(
        x=alt.X("lo:Q", title="density (fraction of tokens where the latent is > 0, log)",
                scale=alt.Scale(type="log")),
        x2="hi:Q",
        y=alt.Y("count:Q", title="latents (count)"),
        tooltip=[alt.Tooltip("lo:Q", format=".3g", title="from"),
                 alt.Tooltip("hi:Q", format=".3g", title="to"), "count:Q"],
    ).properties(height=240)


_ROLE_SCALE = alt.Scale(domain=["target", "control", "other"], range=["#d62728", "#2ca02c", "#dddddd"])


def token_latent_heatmap(frame: pd.DataFrame, step: int = 11) -> alt.VConcatChart:
    """Activation of the chosen latents on every token, in text order; the strip above marks
    target and control tokens. Look for: a latent lit only under the red marks. A latent that
    also lights up on commas, brackets or function words is not a "geography" latent."""
    order = (frame.drop_duplicates("position").sort_values("position")["label"].tolist())
    x = alt.X("label:N", sort=order, title="token (position and text, in text order)",
              axis=alt.Axis(labelAngle=-90, labelFontSize=9, labelLimit=90))
    tokens = frame.drop_duplicates("position")
    strip = alt.Chart(tokens).mark_rect().encode(
        x=x.axis(None),
        color=alt.Color("role:N", title="word list", scale=_ROLE_SCALE),
        tooltip=["position", "token", "role"],
    ).properties(height=12, width=alt.Step(step))
    heat = alt.Chart(frame).mark_rect().encode(
        x=x,
        y=alt.Y("latent:N", title="latent (index)", sort=None),
        color=alt.Color("activation:Q", title="activation (units of input s.d.)",
                        scale=alt.Scale(scheme="viridis")),
        tooltip=["position", "token", "role", "latent", alt.Tooltip("activation:Q", format=".3g")],
    ).properties(width=alt.Step(step), height=alt.Step(22))
    return alt.vconcat(strip, heat, spacing=2).resolve_scale(color="independent")


def null_max_chart(null_max: np.ndarray, top: pd.DataFrame) -> alt.LayerChart:
    """Best score over all latents on each shuffle of the labels (bars) against the observed
    top scores (red rules). Look for: observed rules far right of the bars; a rule inside the
    bars is a score that chance alone produces."""
    finite = np.asarray(null_max, dtype=float)
    hist = alt.Chart(pd.DataFrame({"null_max": finite})).mark_bar(color="#999999").encode(
        x=alt.X("null_max:Q", bin=alt.Bin(maxbins=40),
                title="best selectivity score among all latents (ratio, shuffled labels)"),
        y=alt.Y("count():Q", title="shuffles (count)"),
    )
    rules = alt.Chart(top).mark_rule(color="#d62728").encode(
        x="score:Q", tooltip=["rank", "latent", alt.Tooltip("score:Q", format=".4g"),
                              alt.Tooltip("p_fwer:Q", format=".3g")])
    return (hist + rules).properties(height=220)
