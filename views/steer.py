"""Steering: the model continues a prompt as you watch, unsteered, steered and with a random
control of the same norm, side by side; a coefficient sweep shows what the push buys (target
words) and what it costs (perplexity)."""
from __future__ import annotations

import json

import streamlit as st

from lab import registry
from lab.charts import steer as charts
from lab.hooks import hook_names
from lab.steer import DEFAULT_SAE, SteerConfig, default_hook
from ui import widgets
from ui.common import current_model, first_line, seed
from ui.jobs import PageRun, job_result, run_live

EXP = registry.get("steer")
C = SteerConfig
MAX_PAGE_TOKENS = 128

st.title("Steering")
st.markdown(
    "Watch the model **write**: it continues your prompt one token at a time. Then **push** it: "
    "a steering vector, times a coefficient alpha, is added to the model's activations at one "
    "hook point, at every position (the prompt's and each new token's). The vector is an SAE "
    "latent's decoder direction, or a **contrast**: the mean activation on prompt A minus on "
    "prompt B (ActAdd, e.g. ' Love' minus ' Hate'). A push that large changes any text, so the "
    "**control** is a random direction of the same norm, from the same seed: a real effect moves "
    "the target words, the control only breaks fluency.")

lm = current_model()

# ---------------------------------------------------------------- input
left, right = st.columns([3, 2], gap="large")
with left:
    widgets.text("Prompt", C, "prompt", key="steer_prompt")
    kind = st.radio("Vector", ["contrast", "sae"], horizontal=True, key="steer_kind",
                    format_func={"contrast": "Contrast of prompts (A|B)",
                                 "sae": "SAE latent"}.get,
                    help="A contrast needs no SAE; a latent needs an SAE trained on this model.")
    if kind == "contrast":
        widgets.text("Contrast A|B (a side may list prompts separated by ';')", C, "contrast",
                     key="steer_contrast")
    else:
        s1, s2 = st.columns([3, 1])
        with s1:
            st.text_input("SAE folder (empty: the SAE page's default SAE)", key="steer_sae",
                          help=f"{C.__dataclass_fields__['sae'].metadata['help']}")
        with s2:
            widgets.number("Latent", C, "latent", key="steer_latent", lo=0, value=0, step=1)
        st.caption("Find a latent worth pushing on the Feature view (its top examples); the "
                   "default SAE is trained here on first use, then kept.")
    widgets.text("Target words (comma-separated)", C, "target", key="steer_target")
with right:
    options = [""] + hook_names(lm)
    st.session_state.setdefault("steer_hook", "")
    if st.session_state.steer_hook not in options:
        st.session_state.steer_hook = ""
    st.selectbox("Hook point", options, key="steer_hook",
                 format_func=lambda h: h or f"default (SAE's hook, or {default_hook(lm)})",
                 help=C.__dataclass_fields__["hook"].metadata["help"])
    a1, a2 = st.columns(2)
    with a1:
        widgets.number("Coefficient alpha", C, "alpha", key="steer_alpha", step=0.5,
                       format="%.2f")
    with a2:
        widgets.number("New tokens", C, "max_new_tokens", key="steer_n", lo=1,
                       hi=min(MAX_PAGE_TOKENS, lm.n_ctx - 8), step=8)
    widgets.text("Sweep coefficients", C, "sweep", key="steer_sweep")
    sample = widgets.checkbox("Sample (else greedy)", C, "sample", key="steer_sample")
    if sample:
        t1, t2 = st.columns(2)
        with t1:
            widgets.number("Temperature", C, "temperature", key="steer_temperature", lo=0.05,
                           hi=10.0, step=0.1)
        with t2:
            widgets.number("Top-p", C, "top_p", key="steer_top_p", lo=0.05, hi=1.0, step=0.05)
    run = st.button("Run", key="steer_run", type="primary", icon=":material/play_arrow:")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.replace(";", ",").split(",") if p.strip())
    except ValueError:
        raise ValueError(f"the sweep must be comma-separated numbers, got {text!r}") from None


def _config() -> SteerConfig:
    s = st.session_state
    vector = ({"sae": s.get("steer_sae", "").strip() or DEFAULT_SAE,
               "latent": int(s.get("steer_latent", 0))} if kind == "sae"
              else {"contrast": s.steer_contrast})
    return SteerConfig(prompt=s.steer_prompt, hook=s.steer_hook, alpha=float(s.steer_alpha),
                       sweep=_floats(s.steer_sweep), max_new_tokens=int(s.steer_n),
                       sample=bool(s.steer_sample),
                       temperature=float(s.get("steer_temperature", 1.0)),
                       top_p=float(s.get("steer_top_p", widgets.default(C, "top_p"))),
                       target=tuple(s.steer_target.split(",")), seed=seed(), **vector)


def draw_live(partial) -> None:
    """While it writes: the three continuations at alpha, as plain text, growing."""
    cols = st.columns(3)
    for col, a in zip(cols, partial.side_by_side()):
        col.markdown(f"**{charts.arm_label(a.arm, a.alpha)}**")
        col.code(partial.config.prompt + a.text, language=None, wrap_lines=True)


if run:
    try:
        cfg = _config()
    except ValueError as e:
        st.error(first_line(e), icon=":material/error:")
        st.stop()
    run_live(lm, EXP, cfg, draw_live)

result = job_result(lm, EXP)
if result is None:
    st.info("Press **Run**: the unsteered, steered and control continuations stream in as "
            "they are written, then the sweep's numbers (SmolLM2 on a CPU, the defaults: a few "
            "seconds). **Stop** keeps the tokens written so far.",
            icon=":material/play_circle:")
    st.stop()

# ---------------------------------------------------------------- what was written
PageRun(EXP.name).caption()
cfg = result.config
v = result.verdict()
m1, m2, m3, m4 = st.columns(4)
m1.metric("Steered beats control?", {None: "-", True: "yes", False: "no"}[v["steered_beats_control"]],
          help=f"At alpha {cfg.alpha:g}: more target-word mass in the steered continuation than "
               "in the random control's.")
if v["steered_beats_control"] is not None:
    m2.metric("Target mass steered / control", f"{v['mass_steered']:.3f} / {v['mass_control']:.3f}",
              help="Mean probability per new token that the next token starts a target word "
                   "(under the arm's own model). Unsteered: "
                   f"{v['mass_unsteered']:.3f}.")
m3.metric("Vector norm", f"{result.vector_norm:.3g}",
          help=f"The prompt's activations at the hook have mean norm {result.act_norm:.3g}: "
               f"alpha {cfg.alpha:g} adds {cfg.alpha * result.vector_norm / max(result.act_norm, 1e-9):.2g}x that.")
m4.metric("Tokens per second", f"{result.tokens_per_second:.0f}",
          help=f"All {len(result.arms)} continuations are rows of one batch; "
               f"{result.seconds:.1f} s of generation.")
st.caption(f"Hook {result.hook}; vector: {result.source}.")

tokens = result.tokens()
cols = st.columns(3)
for col, a in zip(cols, result.side_by_side()):
    label = charts.arm_label(a.arm, a.alpha)
    with col:
        st.markdown(f"**{label}**")
        st.markdown(charts.shaded_html(tokens, label, cfg.prompt), unsafe_allow_html=True)
        ppl = "-" if a.perplexity is None else f"{a.perplexity:.3g}"
        mass = "-" if a.target_mass is None else f"{a.target_mass:.3f}"
        st.caption(f"target mass {mass}, perplexity {ppl}")
st.caption("The prompt in grey, then the new tokens, each on a colour for how much likelier "
           "(red) or less likely (blue) its own model made it than the unsteered model does in "
           "the same context, in nats (hover a token). Look for red on the target words in the "
           "steered text, and for the control's text going wrong without turning to them.")

labels = [charts.arm_label(a.arm, a.alpha) for a in result.arms]
st.subheader("Every continuation, token by token")
st.altair_chart(charts.token_strip(tokens, labels), width="stretch")
st.caption("Rows: every continuation of the run (unsteered, then steered and control at each "
           "coefficient); columns: the new tokens in order. Colour: log p under the row's own "
           "model minus log p under the unsteered model, nats (clipped at +-6). Look for where "
           "the steered rows first leave the unsteered text, and whether the control rows at "
           "the same coefficient shift as far without the target words.")

st.subheader("Coefficient sweep")
if result.complete or len(result.sweep()):
    st.altair_chart(charts.sweep_chart(result.sweep()), width="content")
st.caption("Left: target mass, the mean probability (0..1, symlog axis) per new token that the "
           "next token starts a target word; right: the continuation's perplexity under the "
           "unsteered model (log axis; a fluency cost: low is fluent, though a loop of one word "
           "is cheap too). Red is the vector, grey the random direction of the same norm. Look "
           "for a gap on the left that opens with alpha while the grey line stays flat: that is "
           "the vector's own effect, not the size of the push.")
st.dataframe(result.continuations(), hide_index=True, width="stretch",
             column_config={"target_mass": st.column_config.NumberColumn(format="%.4f"),
                            "perplexity": st.column_config.NumberColumn(format="%.3g")})

d1, d2, d3 = st.columns(3)
d1.download_button("Continuations (CSV)", result.continuations().to_csv(index=False),
                   "continuations.csv", "text/csv", icon=":material/download:", key="steer_dl_c")
d2.download_button("Tokens (CSV)", tokens.to_csv(index=False), "tokens.csv", "text/csv",
                   icon=":material/download:", key="steer_dl_t")
d3.download_button("Everything with config (JSON)",
                   json.dumps({**result.to_record(), "device": str(lm.device)}),
                   "steer.json", "application/json", icon=":material/download:", key="steer_dl_j")
