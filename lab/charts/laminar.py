"""Altair charts for the laminar profile (pure functions returning charts).

Every chart takes the sweep's rows (lab.laminar.COLUMNS), possibly of several models, and an
x-axis choice: layer index, or relative depth so that a 12-layer and a 36-layer model line up.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

X_AXES = {"layer": "layer index (block, 0 = first)",
          "relative_depth": "relative depth (layer / (layers - 1); 0 = first, 1 = last)"}
# Streamlit's default autosize "fit" counts the axis titles into the height and squeezes the
# plot; "fit-x" stretches the width only. Legends go below, so narrow columns keep their plot.
_AUTOSIZE = alt.AutoSizeParams(type="fit-x", contains="padding")
_LEGEND = alt.Legend(orient="bottom", direction="horizontal")

# What each chart shows, and what to look for (one sentence each, shown under the chart).
LOOK_FOR = {
    "density": "Density is the average fraction of latents that fire (> 0) on a token: "
               "the seed expects it to rise with depth, a denser code in later layers.",
    "nmse": "Normalized MSE is the reconstruction error over the variance of the layer's "
            "activations (0 = perfect, 1 = no better than the mean): compare it across layers "
            "and models; the seed expects a U, easiest in the middle. Dashed: held-out tokens.",
    "mse": "Raw MSE is in the activations' own squared units, so it mostly tracks how large "
           "a layer's MLP outputs are; it is shown for completeness, not for comparison.",
    "dead_fraction": "Dead latents never fire on any token: a high share means the "
                     "dictionary was larger than this layer needed, or the L1 was too strong.",
}


def _deepest(rows: pd.DataFrame) -> int:
    """The last layer index of the deepest model in `rows`, so a sweep's first points sit on
    the whole model's axis (rows without `n_layers`: the deepest layer present)."""
    if rows.empty:
        return 1
    last = rows["n_layers"].max() - 1 if "n_layers" in rows else rows["layer"].max()
    return max(1, int(last))


def _x(x: str, rows: pd.DataFrame) -> alt.X:
    if x not in X_AXES:
        raise ValueError(f"x must be one of {list(X_AXES)}, got {x!r}")
    if x == "relative_depth":
        return alt.X(f"{x}:Q", title=X_AXES[x], scale=alt.Scale(domain=[0, 1]),
                     axis=alt.Axis(format=".1f"))
    return alt.X(f"{x}:Q", title=X_AXES[x], scale=alt.Scale(domain=[0, _deepest(rows)]),
                 axis=alt.Axis(tickMinStep=1, format="d"))


def _base(rows: pd.DataFrame, x: str, y: str, y_title: list[str], title: str) -> alt.Chart:
    return alt.Chart(rows, title=title).mark_line(point=True).encode(
        x=_x(x, rows),
        y=alt.Y(f"{y}:Q", title=y_title),
        color=alt.Color("model:N", title="model", legend=_LEGEND),
        tooltip=["model", "layer", alt.Tooltip("relative_depth:Q", format=".2f"),
                 alt.Tooltip(f"{y}:Q", format=".4g")],
    )


def density_chart(rows: pd.DataFrame, x: str = "layer", height: int = 260) -> alt.Chart:
    """Density (mean fraction of latents active per token) against depth, one line per model."""
    return _base(rows, x, "density", ["density", "(fraction of latents > 0 per token)"],
                 "Code density by layer").properties(height=height, autosize=_AUTOSIZE)


def nmse_chart(rows: pd.DataFrame, x: str = "layer", height: int = 260) -> alt.Chart:
    """Normalized MSE against depth: solid = training tokens, dashed = held-out tokens."""
    long = rows.melt(id_vars=["model", "layer", "relative_depth"], value_vars=["nmse", "val_nmse"],
                     var_name="split", value_name="normalized_mse")
    long["split"] = long["split"].map({"nmse": "train", "val_nmse": "held out"})
    return alt.Chart(long, title="Reconstruction error by layer (normalized)").mark_line(
        point=True).encode(
        x=_x(x, rows),
        y=alt.Y("normalized_mse:Q", title=["normalized MSE", "(MSE / activation variance, unitless)"]),
        color=alt.Color("model:N", title="model", legend=_LEGEND),
        strokeDash=alt.StrokeDash("split:N", title="tokens",
                                  legend=alt.Legend(orient="bottom", symbolType="stroke"),
                                  scale=alt.Scale(domain=["train", "held out"], range=[[1, 0], [5, 3]])),
        tooltip=["model", "layer", "split", alt.Tooltip("normalized_mse:Q", format=".4g")],
    ).properties(height=height, autosize=_AUTOSIZE)


def mse_chart(rows: pd.DataFrame, x: str = "layer", height: int = 220) -> alt.Chart:
    """Raw MSE (training tokens) against depth, log scale: it spans the layers' activation scales."""
    title = ["raw MSE", "(squared activation units, log)"]
    return _base(rows, x, "mse", title, "Raw reconstruction error by layer").encode(
        y=alt.Y("mse:Q", title=title, scale=alt.Scale(type="log"))
    ).properties(height=height, autosize=_AUTOSIZE)


def dead_chart(rows: pd.DataFrame, x: str = "layer", height: int = 220) -> alt.Chart:
    """Fraction of dead latents against depth."""
    title = ["dead latents", "(fraction of the dictionary)"]
    return _base(rows, x, "dead_fraction", title, "Dead latents by layer").encode(
        y=alt.Y("dead_fraction:Q", title=title, scale=alt.Scale(domain=[0, 1]))
    ).properties(height=height, autosize=_AUTOSIZE)

