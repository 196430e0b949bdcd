"""Reproducibility: activation maximization from many random starts; do the answers agree?"""
import json

import streamlit as st

from lab import registry
from lab.actmax.repro import ReproConfig
from lab.charts import actmax as charts
from ui.actmax_form import result_header, settings
from ui.common import current_model, seed
from ui.estimate import show as show_estimate
from ui.jobs import job_result, run_live
from ui.share import share_button


st.title("Reproducibility")
st.markdown(
    "A finding counts only if it comes back when you repeat the experiment. Here the same "
    "activation maximization runs from **many random starts** at once (same target, "
    "optimizer and loss; only the starting noise differs). If the target stood for one "
    "clear idea, the restarts should land on the same tokens. We count how often they do, and "
    "compare with a **null control**: random vectors that were never optimized, decoded the "
    "same way. With **PEZ** or **discrete** the restarts' answers are real token sequences from "
    "the start, so the question is asked again with a prior that keeps the input text-like."
)

lm = current_model()
exp = registry.get("repro")
cfg = settings(lm, ReproConfig, "actmax.", "rp", restarts=(2, 32), inputs=False,
               methods=("continuous", "pez", "discrete"))
LOSS = {"continuous": "loss −(mean over positions of the target) + λ‖x‖², Adam",
        "pez": "the same loss with every forward on the vectors' nearest tokens (PEZ)",
        "discrete": "one-token swaps ranked by the one-hot gradient, the search moving to the best "
                    "(discrete)"}
NULL = {"continuous": "random vectors that were never optimized, decoded the same way",
        "pez": "random vectors never optimized, projected to their nearest tokens like PEZ's",
        "discrete": "random tokens, like discrete's starts, never optimized"}
st.caption(f"{cfg.actmax.n_tokens} input tokens, {LOSS[cfg.actmax.method]}. Restart r starts from "
           f"a generator seeded with (sidebar seed = {seed()}, r). The Activation maximization "
           f"page explains the details: what each place in the model is, how positions enter, "
           f"and how each method works.")


def _live(rec) -> None:
    am = cfg.actmax
    st.altair_chart(charts.restart_curves(rec.history, am.index, am.steps, am.unit, am.method),
                    width="stretch")


run_col, time_col = st.columns([1, 5], vertical_alignment="center")
show_estimate(lm, exp, cfg, time_col)
if run_col.button("Run", key="rp_run", type="primary", icon=":material/play_arrow:"):
    run_live(lm, exp, cfg, draw=_live)

rep = job_result(lm, exp)
share_button(rep, "repro")
if rep is not None:
    res, rc = rep.maximized, rep.config.actmax
    summary = rep.summary().set_index("vectors")
    opt, null = summary.loc["optimized"], summary.loc["null control"]
    n_opt, n_null, n_total = int(opt["unique"]), int(null["unique"]), int(opt["decoded"])
    result_header(exp, res, charts.restart_curves)
    st.caption("Look for: whether the restarts climb to the same height. Similar heights with "
               f"different tokens (below) mean many different inputs satisfy this {rc.unit} "
               f"equally well. Dashed grey: each restart's neighbouring {rc.unit}s (mean).")

    m = st.columns(4)
    m[0].metric("Unique tokens, optimized", f"{n_opt} of {n_total}")
    m[1].metric("Unique tokens, null control", f"{n_null} of {n_total}")
    m[2].metric("Mean Jaccard overlap", f"{opt.mean_jaccard:.2f}",
                delta=f"{opt.mean_jaccard - null.mean_jaccard:+.2f} vs null", delta_color="off")
    m[3].metric("Mean cosine between restarts", f"{opt.mean_cosine:.2f}",
                delta=f"{opt.mean_cosine - null.mean_cosine:+.2f} vs null", delta_color="off")
    m2 = st.columns(4)
    m2[0].metric("Tokens unchanged from the start", f"{rep.same_as_start} of {n_total}",
                 help="Positions whose nearest token is the same before and after optimizing.")
    m2[1].metric("Mean cosine of the moves x − x₀", f"{rep.mean_step_cosine:.2f}",
                 help="Do the restarts travel in the same direction, even from different starts?")
    m2[2].metric("Moved from the start", f"{res.moved.mean():.0%}",
                 help="‖x − x₀‖ / ‖x₀‖, mean over restarts and positions.")
    m2[3].metric("Final activation (min – max)",
                 f"{res.final.min():.1f} – {res.final.max():.1f}")
    decoded = "prompt tokens" if rc.tokens else "decoded tokens"
    st.markdown(
        f"Of the **{n_total}** {decoded} ({rc.restarts} restarts × {rc.n_tokens} "
        f"positions), **{n_opt}** are different; the null control ({NULL[rc.method]}) gives "
        f"**{n_null}**. The closer the two numbers, the less the optimization converges on "
        f"shared tokens. The seeds found 48 of 50 unique on GPT-2 small: almost no agreement. "
        f"The cosine between restarts' optimized vectors says whether they at least point the "
        f"same way in embedding space even when their nearest tokens differ; the cosine of their "
        f"*moves* (x − x₀) asks whether the gradient pushes every start in the same direction. "
        f"**{rep.same_as_start} of {n_total}** {decoded} are simply the "
        f"{'token the restart started with' if rc.tokens else 'nearest token of the random start'} "
        f"(the vectors moved {res.moved.mean():.0%} of their length). "
        + ("So most of what is decoded is the starting noise, not the target."
           if rep.same_as_start > n_total / 2 else
           "So the optimization did change what the vectors decode to.")
    )
    a, b = st.columns(2)
    with a:
        st.altair_chart(charts.unique_chart(rep.summary()), width="stretch")
        st.caption("Look for: the optimized bar well below the null bar (restarts agree) or "
                   "level with it (no more agreement than chance). Dashed line: all tokens unique.")
    with b:
        st.altair_chart(charts.frequency_chart(rep.optimized.frequencies), width="stretch")
        st.caption("Look for: tokens that occur more than once: those are what the restarts share.")

    st.subheader("Pairwise agreement between restarts")
    pairs = rep.pairs()
    j1, j2 = st.columns(2)
    j1.altair_chart(charts.matrix_chart(pairs[pairs.vectors == "optimized"], "jaccard",
                                        "Jaccard of token sets"), width="content")
    j1.caption("Jaccard = shared tokens / all tokens of two restarts (1 = the same set, 0 = "
               f"nothing shared). Mean off the diagonal: {opt.mean_jaccard:.2f}, null control "
               f"{null.mean_jaccard:.2f}.")
    j2.altair_chart(charts.matrix_chart(pairs[pairs.vectors == "optimized"], "cosine",
                                        "cosine of optimized vectors"), width="content")
    j2.caption("Cosine between two restarts' whole optimized inputs (all positions flattened; "
               "1 = same direction, 0 = unrelated, −1 = opposite). "
               f"Mean off the diagonal: {opt.mean_cosine:.2f}, null control {null.mean_cosine:.2f}.")

    with st.expander("Frequency table (numpy.unique over all restarts × positions)"):
        st.dataframe(rep.optimized.frequencies, hide_index=True, width="stretch")
    with st.expander("Every restart"):
        st.dataframe(res.per_restart(), hide_index=True, width="stretch")
    d1, d2 = st.columns(2)
    d1.download_button("History (CSV)", res.history.to_csv(index=False), "repro_history.csv",
                       "text/csv", icon=":material/download:", key="rp_dl_csv")
    d2.download_button("Result (JSON: config, model, seed, statistics)",
                       json.dumps(rep.to_record(), indent=2),
                       "repro_result.json", "application/json", icon=":material/download:",
                       key="rp_dl_json")
else:
    st.info("Press **Run** to optimize all restarts together. The chart shows every restart "
            "live; **Stop** keeps what was computed so far.", icon=":material/play_circle:")
