"""Altair charts for activation maximization and its reproducibility (pure functions).

Each builder takes tidy frames from `lab.actmax` (and the target's index and unit,
"dim" or "neuron", for its labels) and returns an `alt.Chart`; the pages add
one sentence on what to look for.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

from lab.actmax.decode import GAP_SOURCES

MAX_POINTS_PER_LINE = 200   # thin long histories: a live chart is re-sent on every redraw


def thin(history: pd.DataFrame, max_points: int = MAX_POINTS_PER_LINE) -> pd.DataFrame:
    """Keep at most ~max_points steps per restart (evenly spaced, always the last one)."""
    steps = history.step.unique()
    if len(steps) <= max_points:
        return history
    every = -(-len(steps) // max_points)
    keep = set(steps[::every]) | {steps.max()}
    return history[history.step.isin(keep)]


UNITS = {"dim": "residual-stream units", "neuron": "MLP-neuron units",
         "latent": "SAE-latent units"}                                   # by ActMaxConfig.unit
STEP_TITLES = {"continuous": "Adam step (updates applied)",             # by ActMaxConfig.method
               "pez": "Adam step on the continuous copy (forward on its nearest tokens)",
               "discrete": "search step (moved to the best one-token swap tried)",
               "epo": "search step (the population chosen again)"}


def series_names(index: int, unit: str = "dim") -> tuple[str, str]:
    """The legend's names of the target and of its neighbours' mean."""
    return f"{unit} {index} (target)", f"neighbouring {unit}s (mean)"


def _long(history: pd.DataFrame, index: int, unit: str) -> pd.DataFrame:
    """history -> step, restart, series, activation (target and neighbours as rows)."""
    h = thin(history)
    target_name, nb_name = series_names(index, unit)
    out = h.melt(id_vars=["step", "restart"], value_vars=["target", "neighbours"],
                 var_name="series", value_name="activation")
    out["series"] = out.series.map({"target": target_name, "neighbours": nb_name})
    return out.dropna(subset=["activation"])


def _step_axes(unit: str, steps: int | None, method: str = "continuous") -> dict:
    """x = the method's step over the whole run (a live chart does not rescale as it grows),
    y = activation."""
    x_scale = alt.Scale(domain=[0, steps]) if steps else alt.Undefined
    return {"x": alt.X("step:Q", title=STEP_TITLES[method], scale=x_scale),
            "y": alt.Y("activation:Q", title=f"activation ({UNITS[unit]})")}


def activation_curves(history: pd.DataFrame, index: int, steps: int | None = None,
                      unit: str = "dim", method: str = "continuous") -> alt.Chart:
    """Target unit and its neighbours' mean against the step; one line per restart (epo: per
    population member). Every point of pez, discrete and epo is a forward on real tokens.

    `steps` fixes the x range (the whole run), so a live chart does not rescale as it grows.
    """
    return alt.Chart(_long(history, index, unit)).mark_line(strokeWidth=1.5).encode(
        **_step_axes(unit, steps, method),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="top")),
        detail="restart:N",
        tooltip=["step", "restart", "series", alt.Tooltip("activation:Q", format=".3f")],
    ).properties(height=320)


def restart_curves(history: pd.DataFrame, index: int, steps: int | None = None,
                   unit: str = "dim", method: str = "continuous") -> alt.Chart:
    """The target unit of every restart in its own colour; neighbours' means in grey."""
    nb_name = series_names(index, unit)[1]
    base = alt.Chart(_long(history, index, unit)).encode(
        **_step_axes(unit, steps, method),
        tooltip=["step", "restart", "series", alt.Tooltip("activation:Q", format=".3f")])
    target = base.transform_filter(alt.datum.series != nb_name).mark_line(
        strokeWidth=1.5).encode(color=alt.Color("restart:N", title="restart",
                                                legend=alt.Legend(orient="right")))
    neigh = base.transform_filter(alt.datum.series == nb_name).mark_line(
        strokeWidth=1, strokeDash=[4, 3], color="#999999").encode(detail="restart:N")
    return (neigh + target).properties(height=320)


def symlog_ticks(values) -> list[float]:
    """0 and the signed powers of ten (>= 1) that span `values` (vega's own symlog ticks crowd)."""
    import math
    lo, hi = float(min(values)), float(max(values))
    ticks = [0.0]
    for sign, end in ((1, hi), (-1, -lo)):
        if end >= 1:
            ticks += [sign * 10.0 ** p for p in range(0, math.ceil(math.log10(end)) + 1)]
    return sorted(set(ticks))


def gap_chart(gap_frame: pd.DataFrame, index: int, unit: str = "dim") -> alt.Chart:
    """Dot plot: the optimum, nearest real tokens, the token methods' prompts, the corpus's
    best windows, random real tokens (the sources present, in that order).

    A symlog axis when the optimum is far beyond the rest (linear near 0, logarithmic far
    out), so both the optimum and the real tokens stay readable; a linear axis otherwise.
    """
    order = [s for s in GAP_SOURCES if s in set(gap_frame.source)]
    wide = gap_frame.activation.abs().max() >= 20
    title = f"activation of {unit} {index} ({UNITS[unit]}"
    x = (alt.X("activation:Q", title=f"{title}, symlog scale)", scale=alt.Scale(type="symlog"),
               axis=alt.Axis(values=symlog_ticks(gap_frame.activation), format="~g"))
         if wide else alt.X("activation:Q", title=f"{title})"))
    return alt.Chart(gap_frame).mark_circle(size=70, opacity=0.6).encode(
        x=x,
        y=alt.Y("source:N", title=None, sort=order, axis=alt.Axis(labelLimit=250)),
        color=alt.Color("source:N", sort=order, legend=None),
        tooltip=["source", "item", alt.Tooltip("activation:Q", format=".3f")],
    ).properties(height=170)


def unique_chart(summary: pd.DataFrame) -> alt.Chart:
    """Unique decoded tokens: optimized restarts vs the null control (out of `decoded`)."""
    total = int(summary.decoded.max())
    bars = alt.Chart(summary).mark_bar(size=40).encode(
        x=alt.X("vectors:N", title=None, sort=["optimized", "null control"],
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y("unique:Q", title=f"unique nearest tokens (of {total} decoded)",
                scale=alt.Scale(domain=[0, total])),
        color=alt.Color("vectors:N", legend=None),
        tooltip=["vectors", "unique", "decoded", "most_common_count"])
    rule = alt.Chart(pd.DataFrame({"y": [total]})).mark_rule(strokeDash=[4, 3]).encode(y="y:Q")
    return (bars + rule).properties(height=260)


def frequency_chart(freq: pd.DataFrame, top: int = 20) -> alt.Chart:
    """How often each decoded token occurs (most common first)."""
    data = freq.head(top).assign(label=lambda d: d.token.map(repr) + " #" + d.token_id.astype(str))
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("count:Q", title="occurrences (restarts x positions)", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("label:N", title="decoded token", sort="-x"),
        tooltip=["token", "token_id", "count", alt.Tooltip("frequency:Q", format=".0%")],
    ).properties(height=max(120, 18 * len(data)))


def matrix_chart(pairs: pd.DataFrame, value: str, title: str) -> alt.Chart:
    """Heatmap of a restart x restart matrix (`value` = "jaccard" or "cosine").

    Cells are sized by step (not by the container), so the matrix stays square and readable
    in a half-width column; numbers are printed in the cells up to 12 restarts.
    """
    n = int(pairs.restart_a.nunique())
    step = max(10, min(30, 300 // max(n, 1)))
    # Jaccard lives in [0, 1]; a cosine can be negative: diverging colours centred on 0.
    scale = (alt.Scale(domain=[-1, 1], scheme="redblue") if value == "cosine"
             else alt.Scale(domain=[0, 1], scheme="blues"))
    base = alt.Chart(pairs).encode(
        x=alt.X("restart_b:O", title="restart", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("restart_a:O", title="restart"))
    rect = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", title=title, scale=scale,
                        legend=alt.Legend(orient="bottom", gradientLength=200)),
        tooltip=["restart_a", "restart_b", alt.Tooltip(f"{value}:Q", format=".2f")])
    chart = rect
    if n <= 12:
        chart = rect + base.mark_text(fontSize=9).encode(
            text=alt.Text(f"{value}:Q", format=".1f"),
            color=alt.condition(f"abs(datum.{value}) > 0.6", alt.value("white"), alt.value("black")))
    return chart.properties(width=alt.Step(step), height=alt.Step(step))


def frontier_chart(frontier: pd.DataFrame, members: pd.DataFrame,
                   corpus: pd.DataFrame | None = None, unit: str = "dim") -> alt.Chart:
    """EPO-lite: activation against cross-entropy. The frontier (no prompt has both a higher
    activation and a lower cross-entropy) as a line, the population's members as dots coloured
    by their fluency weight, the corpus's best windows as grey diamonds for scale."""
    axes = {"x": alt.X("ce:Q", title="cross-entropy of the prompt under the model (nats per token)",
                       scale=alt.Scale(zero=False)),
            "y": alt.Y("activation:Q", title=f"activation ({UNITS[unit]})")}
    tip = ["text", alt.Tooltip("activation:Q", format=".3f"), alt.Tooltip("ce:Q", format=".2f")]
    line = alt.Chart(frontier.sort_values("ce")).mark_line(
        point=alt.OverlayMarkDef(size=30), color="#555555").encode(
        **axes, tooltip=tip)
    dots = alt.Chart(members).mark_circle(size=110, opacity=0.85).encode(
        **axes, color=alt.Color("lam:O", title="fluency weight λ", scale=alt.Scale(scheme="viridis")),
        tooltip=["lam", *tip])
    chart = line + dots
    if corpus is not None and len(corpus):
        chart += alt.Chart(corpus).mark_point(shape="diamond", size=90, color="#999999",
                                              filled=True).encode(**axes, tooltip=["source", *tip])
    return chart.properties(height=340)
