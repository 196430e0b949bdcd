"""Layer by layer: the logit lens and attention patterns, from one forward pass over a text."""
import json

import streamlit as st

from lab import registry
from lab.charts import lens as charts
from lab.experiment import field_of
from lab.hidden import check_text, decode_upload, default_text
from lab.lens import MAX_TOKENS, LensConfig
from ui import widgets
from ui.common import current_model, first_line, seed
from ui.jobs import PageRun, job_result, run_live

WINDOW = 40  # positions shown at first: token labels stay readable

st.title("Layer by layer")
st.markdown(
    "What would the model say if it stopped after block L? The **logit lens** reads every "
    "layer's residual stream through the model's final norm and unembedding, so the last layer "
    "is exactly the model's own prediction and earlier layers show how it forms. The **attention "
    "patterns** show where each head looks: every query token spreads one unit of attention over "
    "the tokens before it. Both come from one forward pass over your text."
)

lm = current_model()
exp = registry.get("lens")


def _clamped(key: str, default, hi: int):
    """Put `default` (or the stored value, clamped to 0..hi) in session state for `key`."""
    value = st.session_state.get(key, default)
    clamp = lambda v: min(max(int(v), 0), hi)  # noqa: E731
    st.session_state[key] = tuple(map(clamp, value)) if isinstance(value, tuple) else clamp(value)


# ---------------------------------------------------------------- input
left, right = st.columns([3, 2], gap="large")
with left:
    typed = st.text_area("Text", value=default_text(), height=200, key="lens_text",
                         help="The hidden-states page's paragraph is filled in; paste your own.")
    upload = st.file_uploader("Or upload a .txt file (it replaces the text above)", type=["txt"],
                              key="lens_upload")
with right:
    limit = min(MAX_TOKENS, lm.n_ctx)
    widgets.number("Token limit", LensConfig, "max_tokens", key="lens_max_tokens", lo=2, hi=limit,
                   step=32, help=f"{field_of(LensConfig, 'max_tokens').help} The model's context "
                                 f"is {lm.n_ctx}.")
    widgets.slider("Top tokens per layer", LensConfig, "top_k", 1, 20, key="lens_top_k")
    run = st.button("Run", key="lens_run", type="primary", icon=":material/play_arrow:")

if run:
    try:
        text = decode_upload(upload.getvalue()) if upload is not None else typed
        check_text(text)  # an emptied box is a mistake here, not the bundled paragraph
        cfg = LensConfig(text="" if text == default_text() else text,
                         max_tokens=int(st.session_state.lens_max_tokens),
                         top_k=int(st.session_state.lens_top_k), seed=seed())
    except ValueError as e:
        st.error(first_line(e), icon=":material/error:")
        st.stop()
    run_live(lm, exp, cfg)

result = job_result(lm, exp)
if result is None:
    st.info("Press **Run**: one forward pass, then the lens at every layer (SmolLM2 on a CPU: "
            "about half a minute). **Stop** keeps the layers read so far.",
            icon=":material/play_circle:")
    st.stop()

# ---------------------------------------------------------------- what was read
PageRun(exp.name).caption()
s = result.settle()
c1, c2, c3, c4 = st.columns(4)
c1.metric("Tokens read", result.n_tokens, help=f"{result.n_text_tokens} in the text.")
c2.metric("Final layer top-1 correct", f"{s['correct']} of {s['positions']}",
          help="Positions where the model's own most likely next token is the one that follows.")
c3.metric("Top-1 from layer (mean)", "-" if s["settled_mean"] is None else f"{s['settled_mean']:.1f}",
          help="Over the positions the final layer gets right: the layer from which the true next "
               "token is top-1 in that and every later layer (0 = embeddings).")
c4.metric("Forward + lens", f"{result.forward_seconds + result.lens_seconds:.1f} s")
if result.truncated:
    st.warning(f"The text has {result.n_text_tokens} tokens; only the first {result.n_tokens} "
               f"were read (token limit {result.max_tokens}).", icon=":material/content_cut:")
st.caption("Unembedding tied to the input embeddings." if result.tied else
           "Unembedding separate from the input embeddings (untied).")

n = result.n_tokens
_clamped("lens_window", (0, min(n, WINDOW) - 1), n - 1)
lo, hi = st.slider("Positions shown", 0, n - 1, key="lens_window",
                   help="The heatmaps show these positions (the averages use all of them).")

# ---------------------------------------------------------------- logit lens
st.subheader("Logit lens")
metric = st.radio("Colour", list(charts.METRICS), format_func=charts.METRICS.get,
                  horizontal=True, key="lens_metric")
cells = result.cells()
st.altair_chart(charts.lens_heatmap(cells[cells["pos"].between(lo, hi)], metric), width="stretch")
st.caption("Each cell: the layer's residual stream at that position, read through the final norm "
           "and unembedding. Colour is the probability (0..1) the layer gives the token that really "
           "comes next, or the KL divergence from the final layer's distribution (nats, 0 = same "
           "prediction). Look for the row where the colour changes: below it the layers do not yet "
           "know the next token; hover a cell for the layer's own top-1 guess.")
l1, l2 = st.columns(2)
with l1:
    st.altair_chart(charts.layer_lines(result.layers()), width="stretch")
    st.caption("Averages over every position that has a next token. Look for where the top-1 "
               "fraction starts to climb: that is the depth at which the prediction becomes "
               "readable; the last point is the model's own accuracy on this text.")
with l2:
    st.altair_chart(charts.kl_line(result.layers()), width="stretch")
    st.caption("Mean KL(final || layer) in nats, symlog axis; 0 at the last layer by definition. "
               "Look for a steady fall (each block refines the guess) or a sudden drop in the last "
               "few blocks (the guess is formed late).")

_clamped("lens_pos", min(lo + 5, n - 1), n - 1)
pos = st.select_slider("Position for the top tokens", list(range(n)), key="lens_pos",
                       format_func=lambda p: result.axis_labels()[p])
following = repr(result.tokens[pos + 1]) if pos < n - 1 else "nothing (the last token)"
st.markdown(f"After **{result.tokens[pos]!r}** comes {following}. The top "
            f"{result.config.top_k} tokens each layer would predict there:")
st.dataframe(result.top_table(pos), hide_index=True, width="stretch",
             height=35 * (result.n_layers_done + 1) + 3,  # every layer visible, no inner scroll
             column_config={"p(next)": st.column_config.NumberColumn(format="%.3g")})
st.caption("p(next): probability (0..1) of the true next token at that layer; rank(next): its rank "
           "among all tokens (1 = top). Look for the layer where the true token enters the top "
           "columns, and for what the early layers guess instead (often the input token itself, "
           "or frequent words).")

# ---------------------------------------------------------------- attention
st.subheader("Attention")
a1, a2 = st.columns(2)
_clamped("lens_block", result.n_blocks // 2, result.n_blocks - 1)
_clamped("lens_head", 0, result.n_heads - 1)
block = a1.slider("Block", 0, result.n_blocks - 1, key="lens_block")
head = a2.slider("Head", 0, result.n_heads - 1, key="lens_head")
st.altair_chart(charts.attention_heatmap(result.pattern(block, head, lo, hi + 1),
                                         f"Block {block}, head {head}: query x key"),
                width="stretch")
st.caption("Rows are the tokens attending (queries), columns the tokens attended to (keys, token 0 "
           "always included); colour is the attention probability (0..1), each row sums to 1 over "
           "all its keys. Look for a bright first column (the attention sink), a bright diagonal "
           "(the token itself) or the diagonal just below it (the previous token).")
st.altair_chart(charts.head_grid(result.heads(block, lo, min(hi, lo + WINDOW - 1) + 1), block),
                width="content")
st.caption(f"Every head of block {block}, the same colour scale (0..1), at most {WINDOW} positions "
           "of the window. Look for heads with different jobs in the same block: sink heads (first "
           "column), previous-token heads (a stripe below the diagonal), and broad heads.")
st.altair_chart(charts.sink_chart(result.attention_sink(), result.attention_blocks()),
                width="stretch")
st.caption("The share of attention (0..1) that queries 1.. give token 0, per head (dots) and its "
           "mean over heads (line); query 0 can only attend to itself and is left out. Look for the "
           "blocks where it jumps: the first token's huge hidden-state values (the hidden-states "
           "page, 'keep token 0') are what these heads use as a place to park attention.")

d1, d2 = st.columns(2)
d1.download_button("Lens per layer and position (CSV)", cells.to_csv(index=False), "lens.csv",
                   "text/csv", icon=":material/download:", key="lens_dl_csv")
d2.download_button("Everything with config (JSON)",
                   json.dumps({**result.to_record(), "device": str(lm.device)}),
                   "lens.json", "application/json", icon=":material/download:", key="lens_dl_json")
