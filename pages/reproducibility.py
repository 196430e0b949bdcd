import streamlit as st

st.title("Reproducibility")
st.markdown("The same optimization from 10 random starts (default layer 8, dim 91): do the restarts agree on which tokens maximize the dimension, or does each find its own answer? Compared against random, unoptimized vectors.")
st.info("This experiment is being built: nothing is computed on this page yet.", icon=":material/construction:")
