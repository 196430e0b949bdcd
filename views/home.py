import streamlit as st

from ui.common import current_model

st.title("Inside a transformer: the lab")
st.markdown(
    """
A language model turns every token of a text into a vector (768 numbers in GPT-2 small) and
passes it through a stack of blocks. Each block reads that **residual stream** and adds to it.
This lab lets you look at those numbers and poke them:

- **Hidden states**: how the values are distributed at every layer, and how alike layers are.
- **Activation maximization**: which input makes one chosen dimension fire hardest?
- **Reproducibility**: does that answer survive a different random start?
- **Sparse autoencoder**: rewrite one layer's activations as a few features; find a "geography" feature, and test whether it is real.
- **Laminar profile**: train a sparse autoencoder at every layer and see how sparsity and reconstruction change with depth.

Pick a model in the sidebar. Every page explains what to look for in its charts.
"""
)

lm = current_model()
st.subheader(f"Model: {lm.name}")
facts = lm.facts()
cols = st.columns(5)
cols[0].metric("Layers (blocks)", facts["layers"])
cols[1].metric("Residual width d_model", facts["d_model"])
cols[2].metric("MLP width d_mlp", facts["d_mlp"])
cols[3].metric("Vocabulary (tokens)", f"{facts['vocab']:,}")
cols[4].metric("Parameters", f"{facts['parameters'] / 1e6:.1f} M")
st.caption(f"Weights: {facts['source']}. Loaded on {facts['device']} in {facts['load_seconds']:.1f} s "
           f"(later visits reuse the loaded copy). Longest input: {facts['n_ctx']:,} tokens.")
if lm.name == "tiny-gpt2":
    st.info("tiny-gpt2 has random weights: good for checking the mechanics, "
            "meaningless for behaviour. Pick smollm2-135m or gpt2 for real results.")
