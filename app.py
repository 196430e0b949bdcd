"""The lab's frame: page config, the shared sidebar, navigation (from lab.registry).

Pages live in views/, not pages/: Streamlit would also serve a pages/ folder as a legacy
multipage app (a first visit to a deep link would then run a page without this frame).
"""
import streamlit as st

from lab.registry import EXPERIMENTS  # cheap: no torch

st.set_page_config(page_title="GPT-2 interpretability lab", page_icon=":material/biotech:",
                   layout="wide")

PAGES = [st.Page("views/home.py", title="Home", icon=":material/home:", default=True)] + [
    st.Page(e.view, title=e.title, icon=e.icon, url_path=e.url_path) for e in EXPERIMENTS] + [
    st.Page("views/board.py", title="Class board", icon=":material/groups:", url_path="board")]

nav = st.navigation(PAGES)  # before the heavy imports below, so the menu appears at once

from ui.common import sidebar  # noqa: E402  (imports torch: seconds on the first run)

sidebar()
nav.run()
