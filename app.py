"""The lab's frame: page config, the shared sidebar, navigation.

Pages live in views/, not pages/: Streamlit would also serve a pages/ folder as a legacy
multipage app (a first visit to a deep link would then run a page without this frame).
"""
import streamlit as st

st.set_page_config(page_title="GPT-2 interpretability lab", page_icon=":material/biotech:",
                   layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/hidden_states.py", title="Hidden states", icon=":material/bar_chart:"),
    st.Page("views/activation_max.py", title="Activation maximization", icon=":material/trending_up:"),
    st.Page("views/reproducibility.py", title="Reproducibility", icon=":material/repeat:"),
    st.Page("views/sae_text.py", title="Sparse autoencoder", icon=":material/grain:"),
    st.Page("views/laminar.py", title="Laminar profile", icon=":material/layers:"),
]

nav = st.navigation(PAGES)  # before the heavy imports below, so the menu appears at once

from ui.common import sidebar  # noqa: E402  (imports torch: seconds on the first run)

sidebar()
nav.run()
