"""Hidden-state distributions: one forward pass over a text, every layer's residual stream."""
import json

import streamlit as st

from lab import hidden
from lab.charts import hidden as charts
from lab.experiment import field_of
from lab.hidden import HiddenConfig
from lab.registry import get
from ui import widgets
from ui.jobs import PageRun, job_result, run_live
from ui.common import current_model, first_line, seed

PAGE_TOKENS = 1024  # the page's first token limit (the config's is the whole context): stays quick

st.title("Hidden-state distributions")
st.markdown(
    "One forward pass over your text captures the residual stream after the embeddings and "
    "after every block. See how its values are distributed at each layer and how similar "
    "the layers are to each other. The last block's output is shown twice: raw, as "
    "**block N** (what the hooks see), and as **final norm**, after the model's final "
    "normalization (what Hugging Face returns as its last hidden state)."
)

lm = current_model()
EXP = get("hidden")


def _label(state: int) -> str:
    return "embed" if state == 0 else f"block {state - 1}"


# ---------------------------------------------------------------- input
left, right = st.columns([3, 2], gap="large")
with left:
    typed = st.text_area("Text", value=hidden.default_text(), height=230, key="hidden_text",
                         help="A paragraph written for this lab is filled in; paste your own.")
    upload = st.file_uploader("Or upload a .txt file (it replaces the text above)", type=["txt"],
                              key="hidden_upload")
with right:
    st.session_state.setdefault("hidden_max_tokens", min(PAGE_TOKENS, lm.n_ctx))
    max_tokens = widgets.number(
        "Token limit", HiddenConfig, "max_tokens", key="hidden_max_tokens", lo=2, hi=lm.n_ctx, step=64,
        help=f"{field_of(HiddenConfig, 'max_tokens').help} The model's context is {lm.n_ctx}.")
    keep_first = widgets.checkbox("Keep token 0", HiddenConfig, "keep_first_token",
                                  key="hidden_keep_first")
    show_norm = st.checkbox("Show the last state after the final norm too", value=True,
                            key="hidden_show_norm")
    bin_scale = widgets.choice("Histogram bins", HiddenConfig, "bin_scale", key="hidden_bins")
    symlog_y = st.checkbox("Symlog value axis on the scatter plots", value=False, key="hidden_symlog_y")
    first, last = st.select_slider("States shown", options=list(range(lm.n_layers + 1)),
                                   value=(0, lm.n_layers), format_func=_label, key="hidden_layers")

try:
    text = hidden.decode_upload(upload.getvalue()) if upload is not None else typed
    hidden.check_text(text)  # an emptied box is a mistake here, not the bundled paragraph
    cfg = HiddenConfig(text=text, max_tokens=int(max_tokens), keep_first_token=keep_first,
                       bin_scale=bin_scale, seed=seed())
except ValueError as e:
    st.error(first_line(e), icon=":material/error:")
    st.stop()

# No Run button: every setting is a job for the shared runner (a statistics setting reuses the
# forward inside lab.hidden; settings seen before come from the runner's cache at once).
job = PageRun(EXP.name)
if job.config != cfg or job.model != lm.name or (job.result is None and not job.stopped):
    run_live(lm, EXP, cfg)
result = job_result(lm, EXP)
if result is None:
    if job.stopped:
        st.info("Stopped before the forward pass finished: change a setting to run again.",
                icon=":material/pause_circle:")
    st.stop()
job.caption()

# ---------------------------------------------------------------- what was read
used = result.max_tokens if result.truncated else result.n_text_tokens
c1, c2, c3, c4 = st.columns(4)
c1.metric("Tokens in the text", result.n_text_tokens)
c2.metric("Tokens in the statistics", result.n_tokens,
          help="Token 0 is left out unless 'Keep token 0' is ticked.")
c3.metric("States", len(result.summary), help="Embeddings, every block, and the final-normed last block.")
c4.metric("Forward pass", f"{result.forward_seconds:.2f} s", help="Cached: display options never rerun it.")
if result.truncated:
    st.warning(f"The text has {result.n_text_tokens} tokens; {lm.name} reads at most {used} here "
               f"(token limit {int(max_tokens)}, context {lm.n_ctx}), so only the first {used} were used.",
               icon=":material/content_cut:")
    with st.expander("The text that was used"):
        st.text(result.used_text)
if upload is not None:
    st.caption(f"Analysing the uploaded file {upload.name!r}; the text box is ignored until you remove it.")
if not keep_first:
    st.caption(f"Token 0 ({result.tokens[0]!r}) is excluded from every statistic and chart.")

shown = list(range(first, last + 1)) + ([lm.n_layers + 1] if show_norm else [])
view = result.only(shown)

# ---------------------------------------------------------------- charts
st.subheader("Scatter plots")
st.altair_chart(charts.token_scatter(view.points, symlog_y), width="stretch")
st.caption(f"A sample of {len(view.points)} values ({cfg.points_per_state} per state, its "
           f"{cfg.extremes_per_state} largest |values| included). Look for the spread growing with "
           "depth, and for tokens whose values stand out in every layer.")
st.altair_chart(charts.dim_scatter(view.points, symlog_y), width="stretch")
st.caption("Look for vertical streaks: a few residual dimensions carry huge values in many "
           "tokens and layers (outlier dimensions, listed in the table below).")

st.subheader("Histograms")
st.altair_chart(charts.histogram_grid(view.histogram, cfg.bin_scale, result.bin_constant),
                width="content")
st.caption("Counts on a log axis show the tails (side lobes). Compare the width of the "
           "embeddings with the middle blocks, and the raw last block with its final-normed copy: "
           "does the last layer narrow, or only the norm?")
st.altair_chart(charts.spread_chart(view.summary), width="stretch")
st.caption("The same question as one line per measure: where the standard deviation and the "
           "largest value grow, and where they fall.")

st.subheader("How similar are the layers?")
h1, h2 = st.columns(2)
with h1:
    st.altair_chart(charts.heatmap(view.pairs, "r2"), width="stretch")
    st.caption("R² is the share of variance two states have in common over all tokens and "
               "dimensions. Look for the bright band near the diagonal: neighbouring blocks "
               "change the residual stream gradually.")
with h2:
    st.altair_chart(charts.heatmap(view.pairs, "cov"), width="stretch")
    st.caption("Covariance also carries scale: deep, wide states dominate it. Look for which "
               "states co-vary most with the last one.")

st.subheader("Summary per state")
columns = {
    "label": "state", "values": st.column_config.NumberColumn("values", help="tokens x d_model"),
    "outlier_frac": st.column_config.NumberColumn(f"fraction |x - mean| > {cfg.outlier_std:g} std",
                                                  format="%.4f"),
    "excess_kurtosis": st.column_config.NumberColumn("excess kurtosis", format="%.1f",
                                                     help="0 for a normal distribution"),
    "top_dims": st.column_config.TextColumn("top dimensions (max |x|)")}
st.dataframe(view.summary.drop(columns=["state"]), hide_index=True, column_config=columns,
             height=35 * (len(view.summary) + 1) + 3)  # every state visible, no inner scroll

d1, d2, d3 = st.columns(3)
d1.download_button("Summary (CSV)", result.summary.to_csv(index=False), "hidden_summary.csv",
                   "text/csv", icon=":material/download:", key="hidden_dl_summary")
d2.download_button("R² and covariance (CSV)", result.pairs.to_csv(index=False), "hidden_pairs.csv",
                   "text/csv", icon=":material/download:", key="hidden_dl_pairs")
d3.download_button("Everything with config (JSON)",
                   json.dumps({**result.to_record(), "device": str(lm.device)}, indent=1),
                   "hidden_states.json", "application/json", icon=":material/download:",
                   key="hidden_dl_json")
