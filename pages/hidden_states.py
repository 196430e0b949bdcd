import streamlit as st

st.title("Hidden-state distributions")
st.markdown("One forward pass over your text captures the residual stream after the embeddings and after every block. You will see the distribution of values per layer (histograms with log y), scatter plots by token and by dimension, and how similar layers are to each other (covariance and R² matrices).")
st.info("This experiment is being built: nothing is computed on this page yet.", icon=":material/construction:")
