"""Charts and the example list of the feature view (pure functions of the result's tables)."""
from __future__ import annotations

import html

import altair as alt
import pandas as pd

_ROLE_SCALE = alt.Scale(domain=["target", "control"], range=["#d62728", "#7f7f7f"])
_DIRECTION_SCALE = alt.Scale(domain=["promoted", "suppressed"], range=["#2ca02c", "#9467bd"])


def examples_html(top: pd.DataFrame) -> str:
    """The top examples as HTML rows: context with the peak token highlighted, its value,
    the text it came from; target words marked. Everything from the text is escaped."""
    if not len(top):
        return "<p>No window scanned yet.</p>"
    peak = max(float(top["activation"].max()), 1e-12)
    rows = []
    for r in top.itertuples():
        shade = 0.25 + 0.75 * max(float(r.activation), 0.0) / peak
        token = html.escape(r.token).replace("\n", "⏎")
        ctx = (f"<span style='color:#666'>{html.escape(r.before).replace(chr(10), ' ')}</span>"
               f"<mark style='background:rgba(255,140,0,{shade:.2f});padding:0 2px;"
               f"border-radius:3px'><b>{token}</b></mark>"
               f"<span style='color:#666'>{html.escape(r.after).replace(chr(10), ' ')}</span>")
        tag = " <span title='a target word' style='color:#d62728'>●</span>" if r.target else ""
        rows.append(f"<tr><td style='text-align:right;padding-right:8px'>{r.rank}</td>"
                    f"<td style='text-align:right;padding-right:12px;font-variant-numeric:"
                    f"tabular-nums'>{r.activation:.3g}</td><td style='font-family:monospace;"
                    f"white-space:pre-wrap'>{ctx}{tag}</td><td style='color:#888;"
                    f"padding-left:12px'>{html.escape(str(r.source))}</td></tr>")
    head = ("<tr><th>#</th><th>activation</th><th>context (peak token highlighted)</th>"
            "<th>text</th></tr>")
    return f"<table style='border-collapse:collapse;width:100%'>{head}{''.join(rows)}</table>"


def activation_histogram(hist: pd.DataFrame, density: float) -> alt.Chart:
    """Counts of the latent's nonzero activations over the corpus (zeros are the density's).
    Look for: a long right tail (rare strong firing, the top examples) vs a bulk of weak
    activations that may mean something else."""
    title = f"nonzero activations over the corpus (active on {density:.3%} of tokens)"
    return alt.Chart(hist, title=title).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("lo:Q", title="activation (latent units)"), x2="hi:Q",
        y=alt.Y("count:Q", title="tokens (count, log)", scale=alt.Scale(type="symlog")),
        y2=alt.datum(0),
        tooltip=[alt.Tooltip("lo:Q", format=".3g", title="from"),
                 alt.Tooltip("hi:Q", format=".3g", title="to"), "count:Q"],
    ).properties(height=220)


def _token_bars(frame: pd.DataFrame, value: str, title: str, scale: alt.Scale,
                tooltip: list) -> alt.Chart:
    """One bar per token (labelled with repr: spaces and newlines stay visible), largest first."""
    frame = frame.assign(label=frame["token"].map(repr))
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{value}:Q", title=title),
        y=alt.Y("label:N", sort=alt.EncodingSortField(value, order="descending"), title=None),
        color=alt.Color("direction:N", scale=scale, title=None),
        tooltip=["token", *tooltip],
    ).properties(height=alt.Step(14))


def output_chart(output: pd.DataFrame) -> alt.Chart:
    """Promoted and suppressed tokens of the decoder direction, read out directly."""
    return _token_bars(output, "logit", "logit change (centred over the vocabulary, RMS-1 "
                       "direction)", _DIRECTION_SCALE, [alt.Tooltip("logit:Q", format=".3f"), "target"])


def kl_chart(kl: pd.DataFrame) -> alt.LayerChart:
    """KL per position of the target's edit (red) and each control's (grey)."""
    frame = kl.assign(series=kl["role"] + " " + kl["latent"].astype(str))
    base = alt.Chart(frame).encode(
        x=alt.X("position:Q", title="position in the text (token)"),
        y=alt.Y("kl:Q", title="KL(unedited || edited), nats", scale=alt.Scale(type="symlog",
                                                                             constant=1e-4)),
        detail="series:N",
        tooltip=["latent", "role", "position", "token", alt.Tooltip("kl:Q", format=".3g"),
                 alt.Tooltip("activation:Q", format=".3g")])
    controls = base.transform_filter("datum.role == 'control'").mark_line(
        color="#7f7f7f", opacity=0.5, strokeWidth=1)
    target = base.transform_filter("datum.role == 'target'").mark_line(color="#d62728",
                                                                        strokeWidth=2)
    return (controls + target).properties(height=240)


def effects_chart(effects: pd.DataFrame, column: str, title: str) -> alt.Chart:
    """One dot per edited latent: the target against its controls."""
    return alt.Chart(effects).mark_circle(size=120).encode(
        x=alt.X(f"{column}:Q", title=title),
        y=alt.Y("role:N", title=None, sort=["target", "control"]),
        color=alt.Color("role:N", scale=_ROLE_SCALE, legend=None),
        tooltip=["latent", "role", "fires_on", alt.Tooltip(f"{column}:Q", format=".3g")],
    ).properties(height=130)


def moved_chart(moved: pd.DataFrame) -> alt.Chart:
    """Tokens whose mean probability over the text the edit raised or lowered most."""
    scale = alt.Scale(domain=["up", "down"], range=["#2ca02c", "#9467bd"])
    return _token_bars(moved, "dp", "change in probability (mean over positions)", scale,
                       [alt.Tooltip("dp:Q", format=".3g"), alt.Tooltip("p_before:Q", format=".3g"),
                        alt.Tooltip("p_after:Q", format=".3g")])
