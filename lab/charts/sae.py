"""Altair charts for the sparse autoencoder experiment (pure functions returning charts)."""
from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd

_CURVES = [("loss", "loss (MSE of normalized input, + L1)"),
           ("nmse", "normalized MSE (MSE / input variance)"),
           ("l0", "L0 (active latents per token)")]
_SPLIT_SCALE = alt.Scale(domain=["train", "val"], range=["#1f77b4", "#ff7f0e"])


def training_curves(history: pd.DataFrame, width: int = 225, height: int = 190) -> alt.HConcatChart:
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
    return alt.Chart(frame, title=title).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("lo:Q", title="density (fraction of tokens where the latent is > 0, log)",
                scale=alt.Scale(type="log")),
        x2="hi:Q",
        y=alt.Y("count:Q", title="latents (count)"),
        y2=alt.datum(0),
        tooltip=[alt.Tooltip("lo:Q", format=".3g", title="from"),
                 alt.Tooltip("hi:Q", format=".3g", title="to"), "count:Q"],
    ).properties(height=240)


_ROLE_COLORS = {"target": "#d62728", "control": "#2ca02c"}


def _label_color(labels_by_role: dict[str, list[str]]) -> dict | str:
    """Axis label colour by role: red for target tokens, green for control tokens."""
    cond = [{"test": f"indexof({json.dumps(labels)}, datum.value) >= 0", "value": _ROLE_COLORS[r]}
            for r, labels in labels_by_role.items() if labels]
    if not cond:
        return "#555555"
    return {"condition": cond if len(cond) > 1 else cond[0], "value": "#555555"}


def token_latent_heatmap(frame: pd.DataFrame, per_line: int = 48, step: int = 16) -> alt.VConcatChart:
    """Activation of the chosen latents on every token, in text order, wrapped like text into
    lines of `per_line` tokens; target tokens have red labels, control tokens green ones.
    Look for: a latent lit only above the red labels. A latent that also lights up on commas,
    brackets or function words is not a "geography" latent."""
    frame = frame.assign(line=frame["position"] // per_line)
    vmax = max(float(frame["activation"].max()) if len(frame) else 1.0, 1e-6)
    color = alt.Color("activation:Q", title="activation (input s.d.)",
                      scale=alt.Scale(scheme="viridis", domain=[0, vmax]))
    lines = []
    for _, part in frame.groupby("line", sort=True):
        tokens = part.drop_duplicates("position").sort_values("position")
        roles = {r: tokens.loc[tokens["role"] == r, "label"].tolist() for r in _ROLE_COLORS}
        axis = alt.Axis(labelAngle=-90, labelFontSize=11, labelLimit=120,
                        labelColor=_label_color(roles), labelFontWeight="normal")
        first, last = int(tokens["position"].iloc[0]), int(tokens["position"].iloc[-1])
        lines.append(alt.Chart(part).mark_rect().encode(
            x=alt.X("label:N", sort=tokens["label"].tolist(), axis=axis,
                    title=f"tokens {first}-{last} (position and text, in text order; "
                          "red: target words, green: control words)"),
            y=alt.Y("latent:N", title="latent (index)", sort=None),
            color=color,
            tooltip=["position", "token", "role", "latent",
                     alt.Tooltip("activation:Q", format=".3g")],
        ).properties(width=alt.Step(step), height=alt.Step(20)))
    return alt.vconcat(*lines, spacing=12).resolve_scale(x="independent")


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
