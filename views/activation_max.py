"""Activation maximization: drive one activation up by optimizing the input, live; continuous
vectors or real tokens (PEZ, discrete swaps, EPO-lite), against the corpus's best windows."""
import json

import streamlit as st

from lab import actmax, registry
from lab.sae.load import units
from lab.charts import actmax as charts
from ui.actmax_form import bar_tables, result_header, settings
from ui.common import current_model
from ui.estimate import show as show_estimate
from ui.jobs import job_result, run_live
from ui.share import share_button


st.title("Activation maximization")
st.markdown(
    "Which input makes one number inside the model as large as possible? We start from "
    "**random input vectors** (5 of them, one per token position, scaled like real token "
    "embeddings) and let **gradient ascent** (Adam) change them, step by step, so that one "
    "chosen activation grows: a dimension of the residual stream, one MLP neuron, or one latent "
    "of a sparse autoencoder. Then we ask which **real tokens** the optimized vectors resemble, "
    "and whether those tokens reproduce the effect. The token methods (PEZ, discrete, EPO-lite) "
    "search among real tokens from the start, and every answer is set against **the best real "
    "text of the corpus** at the same target."
)

lm = current_model()
exp = registry.get("actmax")
cfg = settings(lm, actmax.ActMaxConfig, "", "am", restarts=(1, 16))

with st.expander("What exactly is optimized", icon=":material/info:"):
    st.markdown(
        f"""
- **The target is a hook point and an index.** *Block output* of block L is
  `blocks.L.hook_resid_post`, the residual stream after that block (`hidden_states[L+1]`);
  *embeddings* is `hook_embed`, what enters block 0 (`hidden_states[0]`); *MLP output* is
  `blocks.L.hook_mlp_out`, what block L's MLP adds to the residual stream; *MLP neurons* is
  `blocks.L.mlp.hook_post`, the MLP's {lm.d_mlp} hidden units after the nonlinearity. The
  forward pass stops right after that block, so deeper blocks cost nothing. After the last
  block (block {lm.n_layers - 1}) we take the raw output; Hugging Face's last `hidden_states`
  entry would additionally have the final norm applied.
- **Loss** per restart: −a + λ·‖x‖², where a is the chosen unit (mean over positions,
  or the last position) and ‖x‖² sums the squares of all input vectors of that restart.
  Adam minimizes it, i.e. pushes a up. The model's weights are frozen; only x changes.
- **Position information is not bypassed.** The vectors enter through `inputs_embeds`, which
  replaces only the token-embedding lookup. GPT-2 then still adds its learned position
  embedding to every vector; SmolLM2 (Llama family) adds no position vector at all and
  instead rotates queries and keys inside attention (rotary embeddings). Either way the
  model sees positions exactly as it does for real text.
- **λ (L2 weight), default {actmax.DEFAULT_L2:g}.** The seeds name the penalty but not its weight. It
  keeps x at the size of real token embeddings, so that comparing x with real tokens (the
  cosine decoding, the gap meter) compares like with like. On SmolLM2 (block 7's output,
  dim 91, 10 restarts) λ = 0, 0.01, 0.1, 1 reached the same activation (339–343) while the vectors'
  norm went 3.43, 3.41, 3.26, 2.45; real tokens average 3.20. So 0.1 keeps the vectors
  token-sized at no cost to the target. (With Adam each number moves at most about lr per
  step, so over 500 steps at lr 10⁻³ x cannot run away even at λ = 0.)
- Restarts run as one batch; the loss is summed over restarts, so each restart follows
  exactly the path it would follow alone. Restart r starts from a random generator seeded
  with (sidebar seed, r).
- **PEZ** optimizes the same continuous vectors, but every forward runs on the real tokens
  closest to them (by cosine) and the gradient is applied to the vectors ("straight through");
  the answer is the best token sequence it projected to.
- **Discrete** (GCG-style) keeps a real token sequence. Each step the gradient with respect
  to a one-hot input ranks, per position, the top-k tokens that should raise the target; the
  candidates (one token swapped each) are all scored in one batched forward that stops after
  the target's block; the search moves to the best of them (even a worse one: that is how it
  leaves a dead end) and answers with the best prompt it visited.
- **Fluency weight λ**: PEZ and discrete can maximize activation − λ × the prompt's
  cross-entropy under the model itself (nats per token: how surprising the text is to the
  model). λ > 0 needs the full forward. **EPO-lite** runs a population with several λ at once
  and returns the frontier of activation against cross-entropy.
- Every number of a token method is the forward of its token ids; a prompt whose decoded text
  re-tokenizes differently is flagged.
- **The bar to beat**: every distinct stretch of {cfg.n_tokens} tokens in the corpus (bundled
  texts and fetched articles), fed alone like a prompt: the best of them is what real text
  already does.
"""
    )


def _live(rec) -> None:
    st.altair_chart(charts.activation_curves(rec.history, cfg.index, cfg.steps, cfg.unit,
                                             cfg.method), width="stretch")


def _continuous_metrics(res, per) -> None:
    m = st.columns(5)
    m[0].metric("Start activation", f"{per.initial.mean():.3f}")
    m[1].metric("Final activation", f"{per.final.mean():.3f}")
    m[2].metric("Gain final / |start|", f"{per.gain.mean():,.0f}×",
                help="The final activation in units of the starting one's size (|start|).")
    m[3].metric("Best cosine to a real token", f"{res.best_cosine:.3f}")
    m[4].metric("Moved from the start", f"{per.moved.mean():.0%}",
                help="‖x − x₀‖ / ‖x₀‖: how far the vectors travelled, relative to their random start.")
    st.subheader("Nearest real tokens")
    restart = 0
    if res.config.restarts > 1:
        restart = st.selectbox("Restart", list(range(res.config.restarts)), key="am_show_restart")
    st.dataframe(actmax.nearest_wide(res.nearest, restart), hide_index=True, width="stretch")
    st.markdown(
        f"Each optimized vector is compared with all {lm.vocab_size:,} token embeddings by cosine "
        f"similarity (1 = same direction, 0 = unrelated). The best match anywhere is "
        f"**{res.best_cosine:.2f}**: the optimized vectors point in directions that no real "
        f"token occupies, so the decoded string is a poor description of what the target wants. "
        f"The vectors moved {per.moved.mean():.0%} of their starting length (their norm is now "
        f"{per.vector_norm.mean():.2f}; real tokens average {res.token_norm:.2f}): when that is "
        f"small, the nearest tokens mostly reflect the random start, not the target."
    )


def _token_metrics(res, per) -> None:
    p, best = res.prompts, res.prompts.best
    m = st.columns(5)
    m[0].metric("Start activation", f"{per.initial.mean():.3f}")
    m[1].metric("Best prompt's activation", f"{p.activation[best]:.3f}",
                help="Its token ids fed through the model again: a real forward, not a stored number.")
    m[2].metric("Its cross-entropy", f"{p.ce[best]:.2f} nats",
                help="Mean −log p(token | the tokens before it) under the model: lower reads "
                     "more like text.")
    if res.bar is not None:
        m[3].metric("Corpus's best window", f"{res.bar.top:.3f}",
                    delta=f"{p.activation[best] - res.bar.top:+.3f} prompt − corpus",
                    delta_color="normal")
    m[4].metric("Survives re-tokenizing", f"{int(p.survives.sum())} of {len(p)}")
    st.markdown(f"Best prompt: **{p.text[best]!r}** (tokens `{p.tokens[best]}`)")


def _frontier(res) -> None:
    st.subheader("EPO-lite: activation against cross-entropy")
    members = res.prompts.frame()
    corpus = res.bar.windows() if res.bar is not None else None
    st.altair_chart(charts.frontier_chart(res.frontier.frame(), members, corpus, res.config.unit),
                    width="stretch")
    st.caption("Look for: the price of fluency. Moving left along the line (lower cross-entropy, "
               "more text-like) costs activation; a large λ (yellow) sits left and low, λ = 0 "
               "(purple) right and high. Grey diamonds: real corpus windows, for scale: a prompt "
               "above and left of them is both stronger and more fluent than real text.")
    with st.expander("The frontier's prompts"):
        st.dataframe(res.frontier.frame()[["text", "activation", "ce", "survives_retokenize"]],
                     hide_index=True, width="stretch")


def _gap(res) -> None:
    st.subheader("Gap meter: does real text reach the optimum?")
    gap = res.gap.summary()
    g = st.columns(3)
    if res.config.tokens:
        g[0].metric("Optimized prompts (real tokens)", f"{res.prompts.activation.mean():.3f}")
        if res.bar is not None:
            g[1].metric("The corpus's best windows", f"{res.bar.best.activation.mean():.3f}")
    else:
        g[0].metric("Optimized embeddings", f"{gap['optimum_mean']:.3f}")
        g[1].metric("Their nearest tokens, fed back", f"{gap['snapped_mean']:.3f}")
    g[2].metric(f"{len(res.gap.random)} random token sequences",
                f"{gap['random_mean']:.3f} ± {gap['random_std']:.3f}")
    st.altair_chart(charts.gap_chart(res.gap_frame(), res.config.index, res.config.unit),
                    width="stretch")
    bar = f", the corpus's best window {res.bar.top:.3f}" if res.bar is not None else ""
    st.caption(
        f"Look for: how far the optimum sits from everything real. The "
        f"{'prompts' if res.config.tokens else 'nearest tokens'} reach "
        f"{gap['snapped_mean']:.3f}, above {gap['snapped_percentile_mean']:.0f}% of random "
        f"real-token sequences (max {gap['random_max']:.3f}){bar}. When the axis says symlog it is "
        f"linear near 0 and logarithmic far from it, so the optimum and the real tokens both fit.")


run_col, time_col = st.columns([1, 5], vertical_alignment="center")
show_estimate(lm, exp, cfg, time_col)
if run_col.button("Run", key="am_run", type="primary", icon=":material/play_arrow:"):
    run_live(lm, exp, cfg, draw=_live)

res = job_result(lm, exp)
share_button(res, "actmax")
if res is not None:
    rc = res.config
    space = {"neuron": "MLP layer", "latent": "SAE"}.get(rc.unit, "residual stream")
    width = units(lm, rc.point, rc.sae)
    result_header(exp, res, charts.activation_curves)
    st.caption(f"Look for: the dark line ({rc.target}) climbing far above where it started while "
               f"the light line (mean of {rc.unit}s {max(rc.index - rc.neighbours, 0)}.."
               f"{min(rc.index + rc.neighbours, width - 1)} except the target) stays flat: the "
               f"optimization singles out this one {rc.unit} rather than inflating the whole {space}."
               + (" Each point is the forward of real tokens. A discrete line may step down: the "
                  "search always moves to the best swap it tried, and answers with the best "
                  "prompt it visited." if rc.tokens else ""))
    per = res.per_restart()
    if rc.tokens:
        _token_metrics(res, per)
    else:
        _continuous_metrics(res, per)
    if rc.restarts > 1:
        st.caption("Averages over restarts; the table at the bottom has each restart.")
    st.subheader("The bar to beat: the corpus's best windows")
    bar_tables(res)
    if res.frontier is not None:
        _frontier(res)
    _gap(res)

    with st.expander("Every restart"):
        st.dataframe(per, hide_index=True, width="stretch")
    d1, d2 = st.columns(2)
    d1.download_button("History (CSV)", res.history.to_csv(index=False), "actmax_history.csv",
                       "text/csv", icon=":material/download:", key="am_dl_csv")
    d2.download_button("Result (JSON: config, model, seed, tokens)",
                       json.dumps(res.to_record(), indent=2), "actmax_result.json",
                       "application/json", icon=":material/download:", key="am_dl_json")
else:
    st.info("Pick a method, where in the model and which unit, then press **Run**. The chart updates while it runs; "
            "**Stop** keeps what was computed so far.", icon=":material/play_circle:")
