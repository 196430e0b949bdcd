"""Activation maximization: gradient ascent on input embeddings drives one residual dim up, live."""
import json

import streamlit as st

from lab import actmax
from lab.charts import actmax as charts
from ui.actmax_run import L2_OPTIONS, LR_OPTIONS, current_result, run_live, target_defaults
from ui.common import current_model, first_line, seed
from ui.jobs import Job


st.title("Activation maximization")
st.markdown(
    "Which input makes one number inside the model as large as possible? We start from "
    "**random input vectors** (5 of them, one per token position, scaled like real token "
    "embeddings) and let **gradient ascent** (Adam) change them, step by step, so that one "
    "chosen dimension of the residual stream grows. Then we ask which **real tokens** the "
    "optimized vectors resemble, and whether those tokens reproduce the effect."
)

lm = current_model()

target_defaults(lm, "am", layer=4, dim=90)

with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    c1.slider("Layer (hidden_states index)", 0, lm.n_layers, key="am_layer",
              help="0 = the input to block 0 (embeddings); L = the raw output of block L-1.")
    c2.slider("Dimension", 0, lm.d_model - 1, key="am_dim",
              help=f"Which of the {lm.d_model} residual-stream numbers to drive up.")
    c3.slider("Steps", 10, 2000, 500, step=10, key="am_steps")
    c4, c5, c6 = st.columns(3)
    c4.select_slider("Learning rate", LR_OPTIONS, key="am_lr", format_func=lambda v: f"{v:g}")
    c5.select_slider("L2 penalty weight", L2_OPTIONS, key="am_l2", format_func=lambda v: f"{v:g}",
                     help="Weight of ||x||^2 (sum of squares of one restart's input vectors) in the loss.")
    c6.slider("Restarts (random starts, run as one batch)", 1, 16, 1, key="am_restarts")
    c7, c8 = st.columns(2)
    c7.slider("Input tokens", 1, 20, 5, key="am_tokens")
    c8.radio("Activation to maximize", ["mean", "last"], key="am_reduce", horizontal=True,
             format_func={"mean": "mean over positions", "last": "last position"}.get)

with st.expander("What exactly is optimized", icon=":material/info:"):
    st.markdown(
        f"""
- **Layer L means `hidden_states[L]`**, the residual stream: 0 is what enters block 0, and
  L ≥ 1 is the raw output of block L−1. The forward pass stops right after that block, so
  deeper blocks cost nothing. At L = {lm.n_layers} (the last block) we take the raw output; Hugging
  Face's last `hidden_states` entry would additionally have the final norm applied.
- **Loss** per restart: −a + λ·‖x‖², where a is the chosen dimension (mean over positions,
  or the last position) and ‖x‖² sums the squares of all input vectors of that restart.
  Adam minimizes it, i.e. pushes a up. The model's weights are frozen; only x changes.
- **Position information is not bypassed.** The vectors enter through `inputs_embeds`, which
  replaces only the token-embedding lookup. GPT-2 then still adds its learned position
  embedding to every vector; SmolLM2 (Llama family) adds no position vector at all and
  instead rotates queries and keys inside attention (rotary embeddings). Either way the
  model sees positions exactly as it does for real text.
- **λ (L2 weight), default {actmax.DEFAULT_L2:g}.** The seeds name the penalty but not its weight. It
  keeps x at the size of real token embeddings, so that comparing x with real tokens (the
  cosine decoding, the gap meter) compares like with like. On SmolLM2 (layer 8, dim 91, 10
  restarts) λ = 0, 0.01, 0.1, 1 reached the same activation (339–343) while the vectors'
  norm went 3.43, 3.41, 3.26, 2.45; real tokens average 3.20. So 0.1 keeps the vectors
  token-sized at no cost to the target. (With Adam each number moves at most about lr per
  step, so over 500 steps at lr 10⁻³ x cannot run away even at λ = 0.)
- Restarts run as one batch; the loss is summed over restarts, so each restart follows
  exactly the path it would follow alone. Restart r starts from a random generator seeded
  with (sidebar seed, r).
"""
    )

job = Job("actmax")
run = st.button("Run", key="am_run", type="primary", icon=":material/play_arrow:")

if run:
    try:
        cfg = actmax.ActMaxConfig(
            layer=st.session_state.am_layer, dim=st.session_state.am_dim,
            n_tokens=st.session_state.am_tokens, steps=st.session_state.am_steps,
            lr=st.session_state.am_lr, l2=st.session_state.am_l2,
            restarts=st.session_state.am_restarts, reduce=st.session_state.am_reduce,
            seed=seed()).check(lm)
    except ValueError as e:
        st.error(first_line(e))
        st.stop()
    run_live(lm, job, cfg, charts.activation_curves,
             lambda info, rec: (f"Step {info.step} of {info.steps} · dim {cfg.dim} = "
                                f"{info.target.mean():.3f} · {rec.seconds:.0f} s"))

res = current_result(lm, job)
if res is not None:
    cfg = res.config
    job.caption()
    st.subheader("Result")
    st.caption(f"{res.model} · layer {cfg.layer} · dim {cfg.dim} · {res.steps_done} of {cfg.steps} "
               f"steps · lr {cfg.lr:g} · λ {cfg.l2:g} · {cfg.restarts} restart(s) · seed {cfg.seed} · "
               f"{res.seconds:.1f} s")
    st.altair_chart(charts.activation_curves(res.history, cfg.dim, cfg.steps), width="stretch")
    st.caption(f"Look for: the dark line (dim {cfg.dim}) climbing far above where it started while "
               f"the light line (mean of dims {cfg.dim - cfg.neighbours}..{cfg.dim + cfg.neighbours} "
               f"except the target) stays flat: the optimization singles out this one dimension "
               f"rather than inflating the whole residual stream.")
    per = res.per_restart()
    m = st.columns(5)
    m[0].metric("Start activation", f"{per.initial.mean():.3f}")
    m[1].metric("Final activation", f"{per.final.mean():.3f}")
    m[2].metric("Gain final / |start|", f"{per.gain.mean():,.0f}×",
                help="The final activation in units of the starting one's size (|start|).")
    m[3].metric("Best cosine to a real token", f"{res.best_cosine:.3f}")
    m[4].metric("Moved from the start", f"{per.moved.mean():.0%}",
                help="‖x − x₀‖ / ‖x₀‖: how far the vectors travelled, relative to their random start.")
    if cfg.restarts > 1:
        st.caption("Averages over restarts; the table at the bottom has each restart.")

    st.subheader("Nearest real tokens")
    restart = 0
    if cfg.restarts > 1:
        restart = st.selectbox("Restart", list(range(cfg.restarts)), key="am_show_restart")
    st.dataframe(actmax.nearest_wide(res.nearest, restart), hide_index=True, width="stretch")
    st.markdown(
        f"Each optimized vector is compared with all {lm.vocab_size:,} token embeddings by cosine "
        f"similarity (1 = same direction, 0 = unrelated). The best match anywhere is "
        f"**{res.best_cosine:.2f}**: the optimized vectors point in directions that no real "
        f"token occupies, so the decoded string is a poor description of what the dimension wants. "
        f"The vectors moved {per.moved.mean():.0%} of their starting length (their norm is now "
        f"{per.vector_norm.mean():.2f}; real tokens average {res.token_norm:.2f}): when that is "
        f"small, the nearest tokens mostly reflect the random start, not the dimension."
    )

    st.subheader("Gap meter: does real text reach the optimum?")
    gap = res.gap.summary()
    g = st.columns(3)
    g[0].metric("Optimized embeddings", f"{gap['optimum_mean']:.3f}")
    g[1].metric("Their nearest tokens, fed back", f"{gap['snapped_mean']:.3f}")
    g[2].metric(f"{len(res.gap.random)} random token sequences",
                f"{gap['random_mean']:.3f} ± {gap['random_std']:.3f}")
    st.altair_chart(charts.gap_chart(res.gap.frame(), cfg.dim), width="stretch")
    st.caption(
        f"Look for: how far the optimum sits from everything real. The nearest tokens reach "
        f"{gap['snapped_mean']:.3f}, above {gap['snapped_percentile_mean']:.0f}% of random "
        f"real-token sequences (max {gap['random_max']:.3f}). When the axis says symlog it is "
        f"linear near 0 and logarithmic far from it, so the optimum and the real tokens both fit.")

    with st.expander("Every restart"):
        st.dataframe(per, hide_index=True, width="stretch")
    d1, d2 = st.columns(2)
    d1.download_button("History (CSV)", res.history.to_csv(index=False), "actmax_history.csv",
                       "text/csv", icon=":material/download:", key="am_dl_csv")
    d2.download_button("Result (JSON: config, model, seed, tokens)",
                       json.dumps(res.to_json(), indent=2, default=str), "actmax_result.json",
                       "application/json", icon=":material/download:", key="am_dl_json")
else:
    st.info("Pick a layer and a dimension, then press **Run**. The chart updates while it runs; "
            "**Stop** keeps what was computed so far.", icon=":material/play_circle:")
