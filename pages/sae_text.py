import streamlit as st

st.title("Sparse autoencoder on a text")
st.markdown("Train a sparse autoencoder (8x latents, Top-K) on one layer's MLP output over a short text about pálinka, watch the loss fall, then look for a latent that fires on country names, and check it against a shuffled-label control.")
st.info("This experiment is being built: nothing is computed on this page yet.", icon=":material/construction:")
