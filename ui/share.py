"""The result pages' "Share to the class board" button, and the board the app uses.

    share_button(result, "actmax")     # after a result is drawn; nothing when result is None

The nickname is picked once per browser session (up to 24 characters) and only ever drawn as
plain text (st.text, tables, chart labels), never as markdown or HTML.
"""
from __future__ import annotations

import hashlib
import json
import os

import streamlit as st

from lab.board import BOARD_EXPERIMENTS, NICK_MAX, Board, Refused, clean_nickname, default_path
from lab.board import share_record

NICK_KEY = "board_nickname"
NICK_ERR = "board_nickname_error"
_BOARDS: dict[tuple, Board] = {}


def class_code() -> str | None:
    """The teacher's code: `class_code` in .streamlit/secrets.toml, else $LAB_CLASS_CODE."""
    try:
        code = st.secrets.get("class_code")
    except Exception:   # no secrets file: Streamlit raises rather than returning nothing
        code = None
    return str(code) if code else (os.environ.get("LAB_CLASS_CODE") or None)


def board() -> Board:
    """One Board per file and code for the whole server (its schema is checked once)."""
    key = (str(default_path()), class_code())
    if key not in _BOARDS:
        _BOARDS[key] = Board(key[0], class_code=key[1])
    return _BOARDS[key]


def session_id() -> str:
    """This browser session's id: a share's owner (who may hide it without the code)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "local"


def share_button(result, experiment_name: str) -> None:
    """A nickname box (once per session) and "Share to the class board" for `result`."""
    if result is None:
        return
    if experiment_name not in BOARD_EXPERIMENTS:
        raise ValueError(f"the board shows {', '.join(BOARD_EXPERIMENTS)}, not {experiment_name}")
    with st.container(border=True):
        nick = _nickname(experiment_name)
        if st.button("Share to the class board", icon=":material/groups:",
                     key=f"board_share_{experiment_name}", disabled=nick is None):
            _share(result, nick)
        if nick is None:
            st.caption("Pick a nickname to share this result with the class.")


def _nickname(experiment_name: str) -> str | None:
    """The session's nickname; asked for until one is given, then shown as plain text."""
    nick = st.session_state.get(NICK_KEY)
    if nick:
        st.text(f"Sharing as {nick}")
        return nick
    key = f"board_nick_{experiment_name}"
    st.text_input(f"Your nickname for the class board (up to {NICK_MAX} characters)",
                  max_chars=NICK_MAX, key=key, on_change=_pick, args=(key,))
    if st.session_state.get(NICK_ERR):
        st.error(st.session_state[NICK_ERR])    # our sentence, never the typed text
    return None


def _pick(key: str) -> None:
    """Before the rerun: keep the cleaned nickname, so the page shows it instead of the box."""
    try:
        st.session_state[NICK_KEY] = clean_nickname(st.session_state.get(key) or "")
        st.session_state[NICK_ERR] = None
    except Refused as e:
        st.session_state[NICK_ERR] = str(e)


def _share(result, nick: str) -> None:
    try:
        record = share_record(result)
        sid, new = board().share(record, nick, share_id=_share_id(record), owner=session_id())
    except (Refused, ValueError) as e:
        st.error(f"Not shared: {e}")
        return
    st.success("Shared to the class board." if new else "Already on the class board.",
               icon=":material/check:")
    st.page_link("views/board.py", label="Open the class board", icon=":material/groups:")


def _share_id(record: dict) -> str:
    """The same result shared twice from one session is one share (a double click)."""
    text = session_id() + json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]
