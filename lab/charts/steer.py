"""Altair charts of a `lab.steer.SteerResult` (pure functions: tidy DataFrame in, chart out),
and the HTML of a continuation with each token shaded by its log-probability shift.

    shift = logp - logp_unsteered   nats: how much more likely the arm's own (steered) model
                                    made the token than the unsteered model does, same context
"""
from __future__ import annotations

import html

import altair as alt
import numpy as np
import pandas as pd

_DATUM = {"content": "data"}
_CANVAS = {"embedOptions": {"renderer": "canvas"}}
SHIFT_CLIP = 6.0          # nats: the colour scale's ends
ARM_COLORS = {"steered": "#d62728", "control": "#7f7f7f", "unsteered": "#1f77b4"}


def arm_label(arm: str, alpha: float) -> str:
    return "unsteered" if arm == "unsteered" else f"{arm} x {alpha:g}"


def shifts(tokens: pd.DataFrame) -> pd.DataFrame:
    """The tokens table with `label` (arm and alpha) and `shift` (nats; NaN while unscored)."""
    out = tokens.copy()
    out["label"] = [arm_label(a, x) for a, x in zip(out["arm"], out["alpha"])]
    out["shift"] = out["logp"] - out["logp_unsteered"]
    return out


def token_strip(tokens: pd.DataFrame, labels: list[str]) -> alt.Chart:
    """One row per continuation (`labels`, in order), one cell per new token: the token's text
    on a colour that says its log-probability shift (red: the push made it likelier)."""
    data = shifts(tokens)
    data = data[data["label"].isin(labels)].copy()
    data["token"] = data["token"].map(lambda t: t.replace("\n", "\u21b5"))
    data["shift"] = data["shift"].clip(-SHIFT_CLIP, SHIFT_CLIP).round(3)
    for c in ("logp", "logp_unsteered"):
        data[c] = data[c].round(3)
    data = data[["label", "pos", "token", "logp", "logp_unsteered", "shift"]]
    base = alt.Chart(data, height=30 * len(labels) + 60)
    x = alt.X("pos:O", title="new token (position in the continuation)")
    y = alt.Y("label:N", sort=labels, title=None)
    rect = base.mark_rect(tooltip=_DATUM).encode(
        x=x, y=y, color=alt.Color("shift:Q", title="log p shift, nats",
                                  scale=alt.Scale(scheme="redblue", reverse=True,
                                                  domain=[-SHIFT_CLIP, SHIFT_CLIP])))
    text = base.mark_text(fontSize=10, limit=40).encode(x=x, y=y, text="token:N")
    return (rect + text).properties(
        title="Each token's log-probability: its own model minus the unsteered model",
        usermeta=_CANVAS)


def sweep_chart(sweep: pd.DataFrame) -> alt.HConcatChart:
    """Target mass and perplexity against the coefficient, steered and control on one chart."""
    color = alt.Color("arm:N", title="arm", scale=alt.Scale(domain=["steered", "control"],
                                                            range=[ARM_COLORS["steered"],
                                                                   ARM_COLORS["control"]]))
    x = alt.X("alpha:Q", title="coefficient alpha (times the vector)")

    def panel(measure: str, title: str, scale: alt.Scale, heading: str) -> alt.Chart:
        d = sweep[sweep["measure"] == measure][["arm", "alpha", "value"]].copy()
        d["value"] = d["value"].map(lambda v: float(f"{v:.4g}"))
        return alt.Chart(d, height=260, width=300).mark_line(point=True, tooltip=_DATUM).encode(
            x=x, y=alt.Y("value:Q", title=title, scale=scale), color=color
        ).properties(title=heading)

    mass = panel("target_mass", "target mass (mean probability per token, 0..1)",
                 alt.Scale(type="symlog", constant=0.001), "Target words")
    ppl = panel("perplexity", "perplexity under the unsteered model (log axis)",
                alt.Scale(type="log"), "Fluency cost")
    return alt.hconcat(mass, ppl).properties(usermeta=_CANVAS)


def shaded_html(tokens: pd.DataFrame, label: str, prompt: str = "") -> str:
    """One continuation as HTML: the prompt in grey, each new token on a background whose
    red (likelier under the push) or blue (less likely) says its shift in nats."""
    data = shifts(tokens)
    data = data[data["label"] == label]
    parts = [f'<span style="color:#888">{html.escape(prompt)}</span>'] if prompt else []
    for tok, s in zip(data["token"], data["shift"]):
        if np.isnan(s):
            bg = "transparent"
        else:
            a = min(abs(s) / SHIFT_CLIP, 1.0) * 0.8
            bg = f"rgba(214,39,40,{a:.2f})" if s > 0 else f"rgba(31,119,180,{a:.2f})"
        title = "" if np.isnan(s) else f' title="shift {s:+.2f} nats"'
        text = html.escape(tok).replace("\n", "\u21b5")   # a newline as a mark: columns stay short
        parts.append(f'<span style="background:{bg};border-radius:3px"{title}>{text}</span>')
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7">'
            + "".join(parts) + "</div>")
