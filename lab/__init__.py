"""The lab: experiments on the insides of GPT-2-style transformers, without Streamlit."""
__version__ = "0.1.0"
