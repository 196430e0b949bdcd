import streamlit as st

st.title("Feature view")
st.info("Being built in this session: max-activating examples, output effect and ablation of one SAE latent.")
