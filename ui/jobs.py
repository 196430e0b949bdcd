"""Long jobs on a page: progress, a Stop button, and results that survive the stop.

Streamlit stops a running script when the user clicks any button (the script reruns).
So a job writes its partial result into `st.session_state` as it goes; after a Stop the
rerun finds the partial result there and shows it, marked as stopped.

    job = Job("actmax")
    if st.button("Run"):
        job.start(config)
        stop_button(job)
        result = lab_function(..., on_step=lambda partial: job.update(partial))
        job.finish(result)
    if job.result is not None:
        job.caption()   # "stopped after ..." when it did not finish
        draw(job.result)
"""
from __future__ import annotations

from typing import Any

import streamlit as st


class Job:
    def __init__(self, key: str):
        self.key = key

    @property
    def _state(self) -> dict:
        return st.session_state.setdefault(f"job:{self.key}", {"status": "idle", "result": None,
                                                               "config": None, "progress": ""})

    def start(self, config: Any = None) -> None:
        st.session_state[f"job:{self.key}"] = {"status": "running", "result": None,
                                               "config": config, "progress": ""}

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
