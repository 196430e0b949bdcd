"""Long jobs on a page: progress, a Stop button, and results that survive the stop.

Streamlit stops a running script when the user clicks any button (the script reruns). So a
run writes each `Progress.partial` into `st.session_state` as it goes; after a Stop the
rerun finds it there and shows it (through the experiment's `partial_result`), marked as
stopped.

    exp = registry.get("actmax")
    if st.button("Run"):
        run_live(lm, exp, cfg, draw=lambda partial: ...)   # progress bar, Stop, live chart
    result = job_result(lm, exp)        # finished, or what a stopped run computed
    if result is not None:
        Job(exp.name).caption()         # "stopped after ..." when it did not finish
        draw(result)
"""
from __future__ import annotations

import time
from typing import Any, Callable

import streamlit as st

from lab.registry import Experiment
from ui.common import first_line

REDRAW_S = 0.5   # redraw the bar and a live chart at most this often: each redraw costs


class Job:
    def __init__(self, key: str):
        self.key = key

    @property
    def _state(self) -> dict:
        return st.session_state.setdefault(f"job:{self.key}", {"status": "idle", "result": None,
                                                               "config": None, "progress": "",
                                                               "model": None})

    def start(self, config: Any = None, model: str | None = None) -> None:
        st.session_state[f"job:{self.key}"] = {"status": "running", "result": None,
                                               "config": config, "progress": "", "model": model}

    def update(self, partial: Any, progress: str = "") -> None:
        self._state["result"] = partial
        self._state["progress"] = progress

    def finish(self, result: Any) -> None:
        self._state.update(status="done", result=result)

    @property
    def result(self) -> Any:
        return self._state["result"]

    @property
    def config(self) -> Any:
        return self._state["config"]

    @property
    def model(self) -> str | None:
        return self._state["model"]

    @property
    def stopped(self) -> bool:
        """True when a run was interrupted (by Stop or any other click) before finishing."""
        return self._state["status"] == "running"

    def caption(self) -> None:
        if self.stopped:
            where = f" ({self._state['progress']})" if self._state["progress"] else ""
            st.warning(f"Stopped before the end{where}: showing what was computed so far.",
                       icon=":material/pause_circle:")


def stop_button(job: Job) -> None:
    """A Stop button; clicking it reruns the page, which ends the running job."""
    st.button("Stop", key=f"stop:{job.key}", icon=":material/stop_circle:")


def run_live(lm, exp: Experiment, cfg, draw: Callable[[Any], None] | None = None) -> Any:
    """Run `exp` with `cfg` on `lm`: a Stop button, a progress bar and, when given,
    `draw(partial)` redrawn live. Returns the result, or None after showing why it failed."""
    job = Job(exp.name)
    job.start(cfg, lm.name)
    stop_slot, bar_slot, live_slot = st.empty(), st.empty(), st.empty()
    with stop_slot:
        stop_button(job)
    bar = bar_slot.progress(0.0, text="Starting...")
    last = [0.0]

    def on_progress(p) -> None:
        job.update(p.partial, p.message)
        if time.monotonic() - last[0] < REDRAW_S and p.done < p.total:
            return
        last[0] = time.monotonic()
        bar.progress(p.fraction, text=p.message)
        if draw is not None and p.partial is not None:
            with live_slot.container():
                draw(p.partial)

    try:
        result = exp.run(lm, cfg, on_progress)
    except (ValueError, RuntimeError) as e:
        job.finish(None)
        st.error(f"The run failed: {first_line(e)}", icon=":material/error:")
        return None
    finally:
        for slot in (stop_slot, bar_slot, live_slot):
            slot.empty()
    job.finish(result)
    return result


def job_result(lm, exp: Experiment) -> Any:
    """This page's latest result for the model in use: the finished one, or what a stopped run
    computed (turned into a result once, then kept)."""
    job = Job(exp.name)
    if job.model != lm.name or job.result is None:
        return None
    if job.stopped and not job._state.get("converted"):
        job._state["result"] = exp.partial_result(lm, job.config, job.result)
        job._state["converted"] = True
    return job.result
