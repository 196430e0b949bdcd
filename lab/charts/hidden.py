"""Altair charts of a `lab.hidden.HiddenResult` (pure functions: tidy DataFrame in, chart out).

States are ordered by their index (0 = embed, then the blocks, then the final-normed copy of
the last block), never alphabetically: nominal axes sort by the `state` column.

Light on the browser. Streamlit runs vega's expression *interpreter* (no compiled
expressions), so every per-datum expression is slow; profiled in Chromium, the interpreter
and number formatting were most of the page's drawing time. Hence no per-datum expression
but one trivial `datum`:
  - the data are rounded here, and tooltips show the datum as it is (`tooltip=_DATUM`)
    instead of a list of formatted fields;
  - `aria=False`: no per-mark ARIA description string (a `format()` call per field per
    point; a screen reader gets nothing from 2,500 of them anyway; chart titles remain);
  - nominal axes sort by a field (an aggregate) rather than an explicit list (a per-datum
    `indexof` calculation), and no lookup transforms;
  - canvas, not SVG: Streamlit picks SVG below 2,000 marks, and a 32 x 32 heatmap in SVG is
    a thousand DOM nodes for the browser to lay out (`usermeta=_CANVAS`).
"""
from __future__ import annotations

import altair as alt
import pandas as pd

VALUE_TITLE = "activation value (residual-stream units)"
STATE_LEGEND = "state (0 = embed)"
_DATUM = {"content": "data"}  # tooltip: every field of the hovered datum
_CANVAS = {"embedOptions": {"renderer": "canvas"}}
_BY_STATE = alt.EncodingSortField("state", op="min")
_BY_STATE_B = alt.EncodingSortField("state_b", op="min")


def _slim(df: pd.DataFrame, columns: dict[str, str], digits: int = 4) -> pd.DataFrame:
    """Only the columns a chart uses, renamed to what the tooltip should say, floats to
    `digits` significant digits (the data travel to the browser and show in tooltips)."""
    out = df[list(columns)].rename(columns=columns)
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = [float(f"{v:.{digits}g}") for v in out[col]]
    return out


def _y_value(symlog: bool) -> alt.Y:
    scale = alt.Scale(type="symlog") if symlog else alt.Scale(zero=False)
    title = VALUE_TITLE + (", symlog scale" if symlog else "")
    return alt.Y("value:Q", title=title, scale=scale)


def _points_chart(points: pd.DataFrame) -> alt.Chart:
    # Labels and token texts ride on every point: a vega lookup transform would halve the
    # payload but costs the browser more time than it saves.
    data = _slim(points, {"state": "state", "label": "layer", "token": "token",
                          "token_text": "text", "dim": "dimension", "value": "value"})
    return alt.Chart(data, height=340).mark_circle(size=14, opacity=0.6, aria=False, tooltip=_DATUM)


def _state_color() -> alt.Color:
    # quantitative, so depth reads as a gradient from the embeddings (dark) to the last state
    return alt.Color("state:Q", title=STATE_LEGEND, scale=alt.Scale(scheme="viridis"),
                     legend=alt.Legend(gradientLength=220))


def token_scatter(points: pd.DataFrame, symlog_y: bool = False) -> alt.Chart:
    """Token position vs value, one colour per state (a subsample of every state's values)."""
    return _points_chart(points).encode(
        x=alt.X("token:Q", title="token position (index in the text)"),
        y=_y_value(symlog_y), color=_state_color(),
    ).properties(title="Values by token position", usermeta=_CANVAS)


def dim_scatter(points: pd.DataFrame, symlog_y: bool = False) -> alt.Chart:
    """Residual dimension vs value: outlier dimensions stand out as vertical streaks."""
    return _points_chart(points).encode(
        x=alt.X("dimension:Q", title="residual dimension (index 0 .. d_model - 1)"),
        y=_y_value(symlog_y), color=_state_color(),
    ).properties(title="Values by residual dimension", usermeta=_CANVAS)


def histogram_grid(histogram: pd.DataFrame, bin_scale: str = "symlog", constant: float = 1.0,
                   columns: int = 6) -> alt.FacetChart:
    """One small histogram per state on the shared bin edges, log y.

    The height is count / bin width: with symlog bins (narrow near 0, wide in the tails) raw
    counts would dip at 0 just because the bins there are narrow; divided by the width, the
    shape is the true density, and with linear bins it is the counts up to a constant.
    Empty bins are left out (log 0 is undefined).
    """
    data = histogram[histogram["count"] > 0].assign(
        density=lambda d: d["count"] / (d["hi"] - d["lo"]))
    data = _slim(data, {"state": "state", "label": "layer", "lo": "from", "hi": "to",
                        "count": "count", "density": "density"}, digits=5)
    floor = float(data["density"].min()) / 2 if len(data) else 0.5  # log axes have no zero
    x_scale = (alt.Scale(type="symlog", constant=constant, nice=False) if bin_scale == "symlog"
               else alt.Scale(nice=False))
    base = alt.Chart(data, width=120, height=100).mark_rect(
        color="#4c78a8", aria=False, tooltip=_DATUM).encode(
        x=alt.X("from:Q", title="value (resid. units)", scale=x_scale,  # short: repeated per column
                axis=alt.Axis(tickCount=4, labelOverlap=True, labelFontSize=9, titleFontSize=10)),
        x2="to:Q",
        y=alt.Y("density:Q", title="count/unit (log)", scale=alt.Scale(type="log"),
                axis=alt.Axis(labelFontSize=9, tickCount=4, titleFontSize=10)),
        y2=alt.datum(floor),
    )
    return base.facet(facet=alt.Facet("layer:N", sort=_BY_STATE, title=None,
                                      header=alt.Header(labelFontSize=11)),
                      columns=columns).properties(title="Distribution of values per state",
                                                  usermeta=_CANVAS)


def heatmap(pairs: pd.DataFrame, value: str = "r2") -> alt.Chart:
    """State x state matrix of R^2 (0..1) or covariance, values on hover."""
    if value == "r2":
        color = alt.Color("R²:Q", title="R² (shared variance, 0..1)",
                          scale=alt.Scale(scheme="viridis", domain=[0, 1]))
        title, name = "R² between states (squared Pearson correlation)", "R²"
    elif value == "cov":
        color = alt.Color("covariance:Q", title="covariance (residual units²)",
                          scale=alt.Scale(scheme="blueorange", domainMid=0))
        title, name = "Covariance between states", "covariance"
    else:
        raise ValueError(f"value must be 'r2' or 'cov' (got {value!r}).")
    data = _slim(pairs, {"state_a": "state", "label_a": "layer", "state_b": "state_b",
                         "label_b": "vs layer", value: name})
    # Streamlit fits the whole chart (labels, legend) into `height`: the legend goes below
    # so that a half-width column leaves the matrix room.
    color = color.legend(orient="bottom", gradientLength=260, titleLimit=400)
    small = dict(labelOverlap=False, labelFontSize=9)
    return alt.Chart(data, height=560).mark_rect(aria=False, tooltip=_DATUM).encode(
        x=alt.X("vs layer:N", title="state (layer)", sort=_BY_STATE_B, axis=alt.Axis(labelAngle=-60, **small)),
        y=alt.Y("layer:N", title="state (layer)", sort=_BY_STATE, axis=alt.Axis(**small)),
        color=color,
    ).properties(title=title, usermeta=_CANVAS)


def spread_chart(summary: pd.DataFrame) -> alt.Chart:
    """Std and largest |value| per state (log y): where the distribution widens or narrows."""
    data = summary.assign(max_abs=summary[["min", "max"]].abs().max(axis=1))
    data = data.melt(id_vars=["state", "label"], value_vars=["std", "max_abs"],
                     var_name="measure", value_name="spread")
    data["measure"] = data["measure"].map({"std": "standard deviation", "max_abs": "largest |value|"})
    data = _slim(data, {"state": "state", "label": "layer", "measure": "measure", "spread": "spread"})
    return alt.Chart(data, height=400).mark_line(point=alt.OverlayMarkDef(aria=False), aria=False, tooltip=_DATUM).encode(
        x=alt.X("layer:N", title="state (layer)", sort=_BY_STATE,
                axis=alt.Axis(labelAngle=-60, labelOverlap=False, labelFontSize=9)),
        # a short title: Streamlit fits labels and titles into the height, a long one squeezes the plot
        y=alt.Y("spread:Q", title="spread (resid. units, log)", scale=alt.Scale(type="log")),
        color=alt.Color("measure:N", title=None),
    ).properties(title="Spread of values per state", usermeta=_CANVAS)
