"""The class board's charts: the optima's cosine matrix beside the null's."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd


def matrix_frame(matrix: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Tidy [a, b, cosine] rows of a square matrix (its diagonal left out: always 1)."""
    n = len(labels)
    return pd.DataFrame([{"a": labels[i], "b": labels[j], "cosine": float(matrix[i, j])}
                         for i in range(n) for j in range(n) if i != j])


def cosine_heatmap(matrix: np.ndarray, labels: list[str], title: str, size: int = 260) -> alt.Chart:
    """One matrix on a fixed -1..1 scale, so the optima and the null read alike."""
    frame = matrix_frame(matrix, labels)
    order = list(labels)
    return alt.Chart(frame, title=title).mark_rect().encode(
        # columns by number only ("3"): full names at an angle overlap, and Vega hides them
        x=alt.X("a:N", sort=order, title=None,
                axis=alt.Axis(labelAngle=0, labelExpr="split(datum.label, '.')[0]")),
        y=alt.Y("b:N", sort=order, title=None, axis=alt.Axis(labelLimit=160)),
        color=alt.Color("cosine:Q", scale=alt.Scale(domain=[-1, 1], scheme="redblue", reverse=True),
                        legend=alt.Legend(title="cosine")),
        tooltip=["a:N", "b:N", alt.Tooltip("cosine:Q", format=".3f")],
    ).properties(width=size, height=size)


def agreement_charts(optimized: np.ndarray, null: np.ndarray, labels: list[str]) -> alt.HConcatChart:
    """The class's optima beside random vectors of the same norms."""
    nulls = [f"{i + 1}. random" for i in range(len(labels))]
    return alt.hconcat(cosine_heatmap(optimized, labels, "the class's optima"),
                       cosine_heatmap(null, nulls, "random vectors, same norms")
                       ).resolve_scale(color="shared")


def agreement_spec(optimized: np.ndarray, null: np.ndarray, labels: list[str]) -> dict:
    """`agreement_charts` as a Vega-Lite dict, unvalidated: the board redraws it for every
    page on every new share, and altair's schema check is ~0.25-0.5 s of a 30-share board
    (20 ms without; tests/test_board.py validates the same chart once)."""
    return agreement_charts(optimized, null, labels).to_dict(validate=False)
