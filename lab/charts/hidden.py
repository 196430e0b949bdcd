"""Altair charts of a `lab.hidden.HiddenResult` (pure functions: tidy DataFrame in, chart out).

States are ordered by their index (0 = embed, then the blocks, then the final-normed copy of
the last block), never alphabetically: every chart sorts by the labels in state order.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

VALUE_TITLE = "activation value (residual-stream units)"
STATE_LEGEND = "state (0 = embed)"


def _slim(df: pd.DataFrame, columns: list[str], digits: int = 4) -> pd.DataFrame:
    """Only the columns a chart uses, floats to `digits` significant digits: the data travel
    to the browser as JSON, where 17-digit floats would triple the payload."""
    out = df[columns].copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = [float(f"{v:.{digits}g}") for v in out[col]]
    return out


def _order(df: pd.DataFrame) -> list[str]:
    """Labels in state order."""
    return list(df.drop_duplicates("state").sort_values("state")["label"])


def _y_value(symlog: bool) -> alt.Y:
    scale = alt.Scale(type="symlog") if symlog else alt.Scale(zero=False)
    title = VALUE_TITLE + (", symlog scale" if symlog else "")
    return alt.Y("value:Q", title=title, scale=scale)


def _state_color(df: pd.DataFrame) -> alt.Color:
    # quantitative, so depth reads as a gradient from the embeddings (dark) to the last state
    return alt.Color("state:Q", title=STATE_LEGEND, scale=alt.Scale(scheme="viridis"),
                     legend=alt.Legend(gradientLength=220))


_POINT_TOOLTIP = [alt.Tooltip("label:N", title="state"), alt.Tooltip("token:Q", title="token"),
                  alt.Tooltip("token_text:N", title="text"), alt.Tooltip("dim:Q", title="dimension"),
                  alt.Tooltip("value:Q", title="value", format=".4g")]


def _points_chart(points: pd.DataFrame) -> alt.Chart:
    """Scatter base: numbers per point, state labels and token texts joined in the browser
    from two small tables (a label string on every point would double the payload)."""
    labels = points.drop_duplicates("state")[["state", "label"]]
    texts = points.drop_duplicates("token")[["token", "token_text"]]
    return (alt.Chart(_slim(points, ["state", "token", "dim", "value"]), height=340)
            .transform_lookup(lookup="state", from_=alt.LookupData(labels, "state", ["label"]))
            .transform_lookup(lookup="token", from_=alt.LookupData(texts, "token", ["token_text"]))
            .mark_circle(size=14, opacity=0.6))


def token_scatter(points: pd.DataFrame, symlog_y: bool = False) -> alt.Chart:
    """Token position vs value, one colour per state (a subsample of every state's values)."""
    return _points_chart(points).encode(
        x=alt.X("token:Q", title="token position (index in the text)"),
        y=_y_value(symlog_y), color=_state_color(points), tooltip=_POINT_TOOLTIP,
    ).properties(title="Values by token position")


def dim_scatter(points: pd.DataFrame, symlog_y: bool = False) -> alt.Chart:
    """Residual dimension vs value: outlier dimensions stand out as vertical streaks."""
    return _points_chart(points).encode(
        x=alt.X("dim:Q", title="residual dimension (index 0 .. d_model - 1)"),
        y=_y_value(symlog_y), color=_state_color(points), tooltip=_POINT_TOOLTIP,
    ).properties(title="Values by residual dimension")


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
    data = _slim(data, ["label", "lo", "hi", "count", "density"], digits=5)
    floor = float(data["density"].min()) / 2 if len(data) else 0.5  # log axes have no zero
    x_scale = (alt.Scale(type="symlog", constant=constant, nice=False) if bin_scale == "symlog"
               else alt.Scale(nice=False))
    base = alt.Chart(data, width=120, height=100).mark_rect(color="#4c78a8").encode(
        x=alt.X("lo:Q", title="value (resid. units)", scale=x_scale,  # short: repeated per column
                axis=alt.Axis(tickCount=4, labelOverlap=True, labelFontSize=9, titleFontSize=10)),
        x2="hi:Q",
        y=alt.Y("density:Q", title="count/unit (log)", scale=alt.Scale(type="log"),
                axis=alt.Axis(labelFontSize=9, tickCount=4, titleFontSize=10)),
        y2=alt.datum(floor),
        tooltip=[alt.Tooltip("label:N", title="state"), alt.Tooltip("lo:Q", title="from", format=".4g"),
                 alt.Tooltip("hi:Q", title="to", format=".4g"), alt.Tooltip("count:Q", title="count")],
    )
    return base.facet(facet=alt.Facet("label:N", sort=_order(histogram), title=None,
                                      header=alt.Header(labelFontSize=11)),
                      columns=columns).properties(title="Distribution of values per state")


def heatmap(pairs: pd.DataFrame, value: str = "r2") -> alt.Chart:
    """State x state matrix of R^2 (0..1) or covariance, values on hover."""
    order = _order(pairs.rename(columns={"state_a": "state", "label_a": "label"}))
    if value == "r2":
        color = alt.Color("r2:Q", title="R² (shared variance, 0..1)",
                          scale=alt.Scale(scheme="viridis", domain=[0, 1]))
        title, fmt = "R² between states (squared Pearson correlation)", ".3f"
    elif value == "cov":
        color = alt.Color("cov:Q", title="covariance (residual units²)",
                          scale=alt.Scale(scheme="blueorange", domainMid=0))
        title, fmt = "Covariance between states", ".4g"
    else:
        raise ValueError(f"value must be 'r2' or 'cov' (got {value!r}).")
    # Streamlit fits the whole chart (labels, legend) into `height`: the legend goes below
    # so that a half-width column leaves the matrix room.
    color = color.legend(orient="bottom", gradientLength=260, titleLimit=400)
    data = _slim(pairs, ["label_a", "label_b", value])
    return alt.Chart(data, height=560).mark_rect().encode(
        x=alt.X("label_b:N", title="state (layer)", sort=order,
                axis=alt.Axis(labelAngle=-60, labelOverlap=False, labelFontSize=9)),
        y=alt.Y("label_a:N", title="state (layer)", sort=order,
                axis=alt.Axis(labelOverlap=False, labelFontSize=9)),
        color=color,
        tooltip=[alt.Tooltip("label_a:N", title="state"), alt.Tooltip("label_b:N", title="vs state"),
                 alt.Tooltip(f"{value}:Q", title=value.replace("r2", "R²"), format=fmt)],
    ).properties(title=title)


def spread_chart(summary: pd.DataFrame) -> alt.Chart:
    """Std and largest |value| per state (log y): where the distribution widens or narrows."""
    data = summary.assign(max_abs=summary[["min", "max"]].abs().max(axis=1))
    data = _slim(data.melt(id_vars=["state", "label"], value_vars=["std", "max_abs"],
                           var_name="measure", value_name="spread"), ["label", "measure", "spread"])
    data["measure"] = data["measure"].map({"std": "standard deviation", "max_abs": "largest |value|"})
    return alt.Chart(data, height=400).mark_line(point=True).encode(
        x=alt.X("label:N", title="state (layer)", sort=_order(summary),
                axis=alt.Axis(labelAngle=-60, labelOverlap=False, labelFontSize=9)),
        # a short title: Streamlit fits labels and titles into the height, a long one squeezes the plot
        y=alt.Y("spread:Q", title="spread (resid. units, log)", scale=alt.Scale(type="log")),
        color=alt.Color("measure:N", title=None),
        tooltip=[alt.Tooltip("label:N", title="state"), alt.Tooltip("measure:N"),
                 alt.Tooltip("spread:Q", format=".4g")],
    ).properties(title="Spread of values per state")
