import streamlit as st

st.title("Laminar profile")
st.markdown("Train a fresh sparse autoencoder on every layer's MLP output over a Wikipedia article and plot density and reconstruction error against depth, model beside model.")
st.info("This experiment is being built: nothing is computed on this page yet.", icon=":material/construction:")
