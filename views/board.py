"""The class board: everyone's shared results side by side, grouped by experiment and settings
(all but the seed), live as shares arrive; the teacher's clear, hide and export."""
import json
import time

import streamlit as st

from lab.board import NeedsCode, Refused, changed_settings, groups
from lab.board.stats import actmax_table, feature_sentence, feature_table
from lab.registry import get
from ui.board_cache import agreement_spec as _spec, group_stats as _stats, shared_rows
from ui.share import board, class_code, session_id

WATCH_S = 0.5    # how often a page looks for new shares (one small query); it redraws only then
REDRAW_S = 1.0   # and at most this often: 30 shares in 1.6 s would otherwise redraw every page
                 # ~30 times (10 viewers: 1.9-4.1 s from the last share to the full board)
_MD = set("\\`*_{}[]()#+-.!|<>~$:")

st.title("Class board")
st.markdown(
    "Everyone's shared results, side by side. Each group is one experiment on one model with "
    "the **same settings except the seed**, so a group asks the reproducibility question of the "
    "whole room: do different random starts find the same answer? Share a result from the "
    "activation-maximization, reproducibility, SAE or feature page; it appears here within a "
    "second or two."
)
BOARD = board()


def md(text) -> str:
    """Text from a record, safe inside markdown (every markup character escaped)."""
    return "".join("\\" + ch if ch in _MD else ch for ch in str(text))


@st.fragment(run_every=WATCH_S)
def _watch(seen: tuple) -> None:
    """Rerun the page when the board changed since it was drawn (cheap otherwise)."""
    if BOARD.signature() != seen and time.monotonic() - st.session_state["board_drawn"] >= REDRAW_S:
        st.rerun()


def _group(g) -> None:
    with st.container(border=True):
        changed = changed_settings(g)
        st.subheader(f"{md(get(g.experiment).title)} on {md(g.model)}")
        st.caption(f"{len(g.shares)} share(s), seeds {', '.join(map(str, g.seeds))}")
        st.text("settings: " + (json.dumps(changed) if changed else "the page's defaults"))
        ids = tuple(s["id"] for s in g.shares)
        if g.experiment in ("actmax", "repro"):
            _optima(g, ids, _stats("optima", g.key, ids, g))
        elif g.experiment == "sae":
            a = _stats("sae", g.key, ids, g)
            st.markdown(f"**{md(a.sentence())}**")
            st.dataframe(a.rows, hide_index=True, width="stretch",
                         column_config={"share": None})
        else:
            st.markdown(f"**{md(feature_sentence(g))}**")
            st.dataframe(feature_table(g), hide_index=True, width="stretch",
                         column_config={"share": None})


def _optima(g, ids: tuple, a) -> None:
    st.markdown(f"**{md(a.sentence())}**")
    st.dataframe(actmax_table(g), hide_index=True, width="stretch",
                 column_config={"share": None,
                                "final activation": st.column_config.NumberColumn(format="%.3f"),
                                "best cosine to a token": st.column_config.NumberColumn(format="%.3f")})
    if a.n >= 2:
        st.vega_lite_chart(_spec(g.key, ids, a))
        st.caption("Each square: the cosine between two students' optimized inputs (all positions "
                   "flattened); right, the same for random vectors with the same norm at every "
                   "position. Optima that agree would show as a dark block on the left.")


def _mine(rows: list[dict]) -> None:
    """A student's own shares, which they may hide without the code."""
    me = [r for r in rows if r["owner"] == session_id()]
    if not me:
        return
    with st.expander(f"Your shares ({len(me)})", icon=":material/person:"):
        pick = st.selectbox("Share", me, format_func=_share_label, key="board_mine")
        if st.button("Hide it", key="board_hide_mine"):
            BOARD.hide(pick["share_id"], owner=session_id())
            st.rerun()


def _share_label(r: dict) -> str:
    return f"{r['id']}. {r['nickname']} (seed {r['seed']}): {get(r['experiment']).title}"


def _teacher(rows: list[dict]) -> None:
    with st.expander("Teacher", icon=":material/admin_panel_settings:"):
        if class_code() is None:
            st.caption("No class code is configured, so this board is yours alone (a laptop). For "
                       "a class, set class_code in .streamlit/secrets.toml or LAB_CLASS_CODE: "
                       "clearing, hiding and exporting then need it.")
            code = None
        else:
            code = st.text_input("Class code", type="password", key="board_code")
        _act(code, rows)


def _act(code, rows: list[dict]) -> None:
    c = st.columns(3)
    if rows:
        pick = c[0].selectbox("Share to hide", rows, format_func=_share_label, key="board_pick")
        if c[0].button("Hide this share", key="board_hide"):
            _guarded(lambda: BOARD.hide(pick["share_id"], code))
    sure = c[1].checkbox("Yes, remove every share", key="board_sure")
    if c[1].button("Clear the board", disabled=not sure, key="board_clear"):
        _guarded(lambda: BOARD.clear(code))
    try:
        BOARD.check_code(code, "exporting the board")
    except NeedsCode as e:
        c[2].caption(str(e))
        return
    # deferred (made on click): building both exports on every redraw was ~0.7 s of a 30-share
    # board per viewer, the whole of the 10-viewer lag (profiled: json.dumps of every record)
    c[2].download_button("Export (CSV)", lambda: BOARD.export("csv", code), "class_board.csv",
                         "text/csv")
    c[2].download_button("Export (JSON)", lambda: BOARD.export("json", code), "class_board.json",
                         "application/json")


def _guarded(action) -> None:
    try:
        action()
    except (NeedsCode, Refused) as e:
        st.error(str(e))
        return
    st.rerun()


signature = BOARD.signature()
st.session_state["board_drawn"] = time.monotonic()
rows = shared_rows(BOARD, signature)
if not rows:
    st.info("Nothing shared yet. Run an experiment, then press **Share to the class board** "
            "under its result.", icon=":material/groups:")
else:
    st.caption(f"{len(rows)} shares on the board")
    for group in groups(rows):
        _group(group)
_mine(rows)
_teacher(rows)
_watch(signature)
