import streamlit as st

st.title("Activation maximization")
st.markdown("Gradient ascent on 5 random input embeddings drives one residual-stream dimension (default layer 4, dim 90) as high as it will go, live; then each optimized vector is decoded to its nearest real tokens by cosine similarity.")
st.info("This experiment is being built: nothing is computed on this page yet.", icon=":material/construction:")
