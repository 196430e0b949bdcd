import streamlit as st

from lab.registry import EXPERIMENTS
from ui.common import current_model

st.title("Inside a transformer: the lab")
st.markdown(
    "A language model turns every token of a text into a vector (768 numbers in GPT-2 small) "
    "and passes it through a stack of blocks. Each block reads that **residual stream** and "
    "adds to it. This lab lets you look at those numbers and poke them:")
st.markdown("\n".join(f"- **{e.title}**: {e.summary}" for e in EXPERIMENTS))
st.markdown("Pick a model in the sidebar. Every page explains what to look for in its charts.")

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
