"""The class board's shared caches (one per server, across sessions): the visible shares read
once per change of the board, a group's statistics and its charts once per set of shares.
Kept in ui/ so a page only draws (ARCHITECTURE.md)."""
from __future__ import annotations

import streamlit as st

from lab.board import agreement, sae_agreement
from lab.charts import board as charts


def shared_rows(board, signature: tuple) -> list[dict]:
    return _rows(str(board.path), signature, board)


@st.cache_resource(max_entries=8)
def _rows(path: str, signature: tuple, _board) -> list[dict]:
    """The visible shares of the board at `path`, as of `signature`."""
    return _board.rows()


@st.cache_resource(max_entries=64)
def group_stats(kind: str, key: str, ids: tuple, _group):
    """A group's statistics ("optima": actmax/repro cosines; else the SAE's), once per set of shares."""
    return agreement(_group) if kind == "optima" else sae_agreement(_group)


@st.cache_resource(max_entries=64)
def agreement_spec(key: str, ids: tuple, _a) -> dict:
    """A group's cosine matrices as Vega-Lite, built once per set of shares."""
    return charts.agreement_spec(_a.cosine, _a.null_cosine, _a.labels)
