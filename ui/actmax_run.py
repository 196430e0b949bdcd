"""The live run shared by the two activation-maximization pages: Stop button, progress bar,
a chart redrawn every few steps, and a stopped run turned back into a result."""
from __future__ import annotations

from typing import Callable

import altair as alt
import pandas as pd
import streamlit as st

from lab import actmax
from ui.jobs import Job, stop_button

REDRAWS = 40   # live chart redraws per run: each redraw re-sends the chart, so not every step
LR_OPTIONS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]   # the sliders' learning rates
L2_OPTIONS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]           # and L2 penalty weights


def target_defaults(lm, prefix: str, layer: int, dim: int) -> None:
    """Seed the page's layer/dim/lr/l2 widgets (keys `{prefix}_layer`, ...) and keep a stored
    layer and dim inside this model's range (e.g. after switching to a smaller model)."""
    for key, hi, default in ((f"{prefix}_layer", lm.n_layers, layer),
                             (f"{prefix}_dim", lm.d_model - 1, dim)):
        st.session_state[key] = min(max(st.session_state.get(key, default), 0), hi)
    st.session_state.setdefault(f"{prefix}_lr", 1e-3)
    st.session_state.setdefault(f"{prefix}_l2", actmax.DEFAULT_L2)


def run_live(lm, job: Job, cfg: actmax.ActMaxConfig,
             chart: Callable[[pd.DataFrame, int, int], alt.Chart],
             label: Callable[[actmax.StepInfo, actmax.Recorder], str]) -> None:
    """Run `cfg` on `lm`, drawing `chart(history, dim, steps)` and `label(info, recorder)`
    live; every step's partial result goes into `job`, so a Stop keeps it."""
    stop_slot, progress_slot, chart_slot = st.empty(), st.empty(), st.empty()
    job.start(cfg)
    with stop_slot:
        stop_button(job)
    rec = actmax.Recorder(cfg, lm.name)
    bar = progress_slot.progress(0.0, text="Starting...")
    every = max(1, cfg.steps // REDRAWS)

    def on_step(info: actmax.StepInfo) -> None:
        rec.add(info)
        job.update(rec, progress=f"step {info.step} of {info.steps}")
        if info.step % every == 0 or info.step == info.steps:   # redrawing costs: every few steps
            bar.progress(info.step / info.steps, text=label(info, rec))
            if info.step > 0:   # a line needs two points
                chart_slot.altair_chart(chart(rec.history, cfg.dim, cfg.steps), width="stretch")

    job.finish(actmax.maximize(lm, cfg, on_step=on_step))
    for slot in (stop_slot, progress_slot, chart_slot):
        slot.empty()


def current_result(lm, job: Job) -> actmax.ActMaxResult | None:
    """The job's result for this model; a run stopped mid-way is summarized from its steps."""
    state = job.result
    if isinstance(state, actmax.Recorder):
        if not (state.steps and state.model == lm.name):
            return None
        state = actmax.summarize(lm, state.cfg, state.embeds, state.history, state.seconds,
                                 state.start)
        job.update(state, progress=f"{state.steps_done} of {state.config.steps} steps")
    if isinstance(state, actmax.ActMaxResult) and state.model == lm.name:
        return state
    return None
