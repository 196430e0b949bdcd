"""What every page shares: the sidebar (model, device, seed) and the cached model."""
from __future__ import annotations

import os

import streamlit as st

from lab.models import (MODEL_NAMES, SMOLLM2, LabModel, ModelUnavailable, available_devices,
                        available_offline, hub_reachable, load_model, resolve_device)


@st.cache_data(ttl=120, show_spinner=False)
def _hub_ok() -> bool:
    return hub_reachable(timeout=2.0)


@st.cache_data(ttl=120, show_spinner=False)
def _offline(name: str) -> bool:
    return available_offline(name)


def default_model() -> str:
    """GPT-2 when it can load (cached or hub reachable), else the bundled SmolLM2."""
    if os.environ.get("LAB_DEFAULT_MODEL"):
        return os.environ["LAB_DEFAULT_MODEL"]
    return "gpt2" if _offline("gpt2") or _hub_ok() else SMOLLM2


def _label(name: str) -> str:
    return f"{name}  (offline)" if _offline(name) else f"{name}  (needs internet)"


def sidebar() -> None:
    """Model picker, device and seed; values live in session_state under stable keys."""
    st.session_state.setdefault("model_name", default_model())
    with st.sidebar:
        st.selectbox("Model", MODEL_NAMES, key="model_name", format_func=_label,
                     help="'offline' models load without internet. smollm2-135m has real "
                          "pretrained weights; tiny-gpt2 is random, for quick tests.")
        st.selectbox("Device", available_devices(), key="device",
                     help="'auto' picks a GPU when there is one.")
        st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="seed",
                        help="Same seed, same random starts: results can be reproduced.")


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_resolved(name: str, device: str) -> LabModel:
    # Shared by every session: never mutate it; hooks are added and removed per call.
    return load_model(name, device)


def load_shared(name: str, device: str) -> LabModel:
    """The process's one copy of a model ("auto" and "cpu" name the same copy on a CPU box);
    the job runner loads through this too."""
    return _load_resolved(name, str(resolve_device(device)))


def _use_offline() -> None:
    st.session_state["model_name"] = SMOLLM2


def current_model() -> LabModel:
    """The sidebar's model, loaded once per process; on failure one sentence and st.stop()."""
    name = st.session_state.get("model_name") or default_model()
    device = st.session_state.get("device", "auto")
    try:
        with st.spinner(f"Loading {name}... (the first load of a model can take a minute)"):
            return load_shared(name, device)
    except (ModelUnavailable, ValueError, OSError) as e:
        st.error(f"Could not load {name}: {first_line(e)}")
        if name != SMOLLM2:
            st.button(f"Use {SMOLLM2} (works offline)", on_click=_use_offline, type="primary")
        st.stop()


def seed() -> int:
    return int(st.session_state.get("seed", 0))


def first_line(e: Exception) -> str:
    """An exception as one readable sentence, never a traceback."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
