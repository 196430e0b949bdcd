"""The lab's frame: page config, the shared sidebar, navigation. Pages live in pages/."""
import streamlit as st

st.set_page_config(page_title="GPT-2 interpretability lab", page_icon=":material/biotech:",
                   layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/hidden_states.py", title="Hidden states", icon=":material/bar_chart:"),
    st.Page("pages/activation_max.py", title="Activation maximization", icon=":material/trending_up:"),
    st.Page("pages/reproducibility.py", title="Reproducibility", icon=":material/repeat:"),
    st.Page("pages/sae_text.py", title="Sparse autoencoder", icon=":material/grain:"),
    st.Page("pages/laminar.py", title="Laminar profile", icon=":material/layers:"),
]

nav = st.navigation(PAGES)  # before the heavy imports below, so the menu appears at once

from ui.common import sidebar  # noqa: E402  (imports torch: seconds on the first run)

sidebar()
nav.run()
