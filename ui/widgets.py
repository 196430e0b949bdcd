"""Widgets whose default and help come from a config field (lab.experiment.param), so a
page never copies a default or a help text by hand.

Values live in `st.session_state[key]`: the default is put there on first use (and a stored
number is clamped into the widget's range, e.g. after switching to a smaller model), so no
widget is created with both a value and a session-state entry.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st

from lab.experiment import field_of


def default(cls, path: str) -> Any:
    """The default of config field `path` ("layer", or "sae.k" in a nested config)."""
    return field_of(cls, path).default


def _seed_state(key: str, value: Any, lo: Any = None, hi: Any = None) -> None:
    current = st.session_state.get(key, value)
    if current is not None and lo is not None:
        current = max(current, lo)
    if current is not None and hi is not None:
        current = min(current, hi)
    st.session_state[key] = current


def slider(label: str, cls, path: str, lo, hi, key: str, value: Any = None, **kw) -> Any:
    """A slider over [lo, hi] starting at the field's default (or `value`, e.g. a default that
    depends on the model), clamped into the range."""
    _seed_state(key, default(cls, path) if value is None else value, lo, hi)
    return st.slider(label, lo, hi, key=key, help=kw.pop("help", field_of(cls, path).help), **kw)


def number(label: str, cls, path: str, key: str, lo=None, hi=None, value: Any = None, **kw) -> Any:
    """A number input starting at the field's default (or `value`, e.g. model-dependent)."""
    _seed_state(key, default(cls, path) if value is None else value, lo, hi)
    return st.number_input(label, min_value=lo, max_value=hi, key=key,
                           help=kw.pop("help", field_of(cls, path).help), **kw)


def select_slider(label: str, cls, path: str, options: Sequence, key: str, **kw) -> Any:
    _seed_state(key, default(cls, path))
    return st.select_slider(label, list(options), key=key,
                            help=kw.pop("help", field_of(cls, path).help), **kw)


def choice(label: str, cls, path: str, key: str, format_func: Callable | None = None,
           horizontal: bool = True, **kw) -> Any:
    """A radio over the field's `Literal` choices."""
    f = field_of(cls, path)
    _seed_state(key, f.default)
    return st.radio(label, list(f.choices), key=key, horizontal=horizontal,
                    format_func=format_func or str, help=kw.pop("help", f.help), **kw)


def checkbox(label: str, cls, path: str, key: str, **kw) -> bool:
    _seed_state(key, default(cls, path))
    return st.checkbox(label, key=key, help=kw.pop("help", field_of(cls, path).help), **kw)


def text(label: str, cls, path: str, key: str, **kw) -> str:
    """A text input for a str field, or a comma-separated tuple of words."""
    value = default(cls, path)
    _seed_state(key, ", ".join(map(str, value)) if isinstance(value, tuple) else value)
    return st.text_input(label, key=key, help=kw.pop("help", field_of(cls, path).help), **kw)
