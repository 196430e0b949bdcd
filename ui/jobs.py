"""Long jobs on a page: the shared runner's queue, progress, a Stop button, and results that
survive the stop.

Runs go to the process's one `lab.runner.Runner` (identical settings run once for the whole
class; a fair queue). The page follows its job; Streamlit ends a waiting script when the user
clicks any button (the script reruns) or leaves, and the page then detaches from the job.
The page keeps its runner `Handle`; after a Stop the rerun asks it for its result, which the
runner makes from the newest partial (the experiment's `partial_result`): a page only ever
sees results, marked as stopped when the run did not finish.

    exp = registry.get("actmax")
    if st.button("Run"):
        run_live(lm, exp, cfg, draw=lambda partial: ...)   # progress bar, Stop, live chart
    result = job_result(lm, exp)        # finished, or the result of what a stopped run computed
    if result is not None:
        PageRun(exp.name).caption()         # "stopped after ..." when it did not finish
        draw(result)
"""
from __future__ import annotations

import sys
import time
import uuid
from typing import Any, Callable

import streamlit as st

from streamlit.runtime.scriptrunner import get_script_run_ctx

from lab.cache import DiskCache
from lab.registry import Experiment
from lab.experiment import format_duration
from lab.runner import THREADS_PER_JOB, Runner
from lab.sizes import nbytes
from ui.common import load_shared

REDRAW_S = 0.5      # a page redraws its bar (and live chart) at most this often, and
REDRAWS_PER_S = 2.0  # all following pages their live charts at most this often together: each
                     # chart is built on the server (8 pages at 0.5 s each slowed a shared job ~2x)
POLL_S = 0.1        # how often a waiting page looks at its job (a Stop lands within this)
WORKERS = 2         # on 2 cores: two jobs of THREADS_PER_JOB (one) thread (bench/runner_split.py)
SESSION_BYTES = 128 << 20   # one session's kept results, all pages together (the defaults on
                            # smollm2: 54 MB, the lens 37 of it); the server's bound is
                            # runner.CACHE_BYTES + sessions x SESSION_BYTES


class PageRun:
    """A page's slot for its run in this session (state under `job:NAME`): the config, the
    runner's handle while it runs, the result it keeps. The runner's queued work is
    `lab.runner.Job`."""

    def __init__(self, key: str):
        self.key = key

    @property
    def _state(self) -> dict:
        return st.session_state.setdefault(f"job:{self.key}", {"status": "idle", "result": None,
                                                               "config": None, "progress": "",
                                                               "model": None})

    def start(self, config: Any = None, model: str | None = None, handle=None) -> None:
        """A run begins; `handle` (the runner's) makes its result if the page stops following."""
        st.session_state[f"job:{self.key}"] = {"status": "running", "result": None,
                                               "config": config, "progress": "", "model": model,
                                               "handle": handle}

    def touch(self) -> None:
        """Read this job's state: Streamlit checks for a pending rerun (a Stop) on every
        session-state access, so a cheap read is a point where a click can end the script."""
        self._state

    def finish(self, result: Any) -> None:
        self._state["status"] = "done"
        self._state.pop("handle", None)
        self.keep(result)

    def keep(self, result: Any, **extra) -> None:
        """Hold `result` for this page, within the session's budget (see `trim`)."""
        self._state.update(result=result, bytes=nbytes(result), at=time.monotonic(), **extra)
        trim(st.session_state, keep=f"job:{self.key}")

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


def trim(states, keep: str, budget: int = SESSION_BYTES) -> list[str]:
    """Let a session's oldest kept results go until they fit `budget` bytes: every page's
    latest result (`job:*`) and its past runs (`runs:*`, see `remember`) count. The one under
    `keep` (just finished) and each page's newest past run stay. Returns what was let go
    ("job:NAME", or "runs:NAME/ID"). A page let go shows its start screen again; pressing Run
    on the same settings is served from the shared cache."""
    items = []   # (at, bytes, key, run id or None)
    for k in list(states.keys()):
        k = str(k)
        if k.startswith("job:") and states[k].get("result") is not None:
            items.append((states[k].get("at", 0.0), states[k].get("bytes", 0), k, None))
        elif k.startswith("runs:"):
            items += [(r["at"], r["bytes"], k, r["id"]) for r in states[k][:-1]]
            if states[k]:
                newest = states[k][-1]
                items.append((float("inf"), newest["bytes"], k, "newest"))
    total = sum(b for _, b, _, _ in items)
    dropped = []
    for at, size, k, rid in sorted(items, key=lambda i: i[0]):
        if total <= budget:
            break
        if k == keep or rid == "newest":
            continue
        total -= size
        if rid is None:
            states[k].update(status="released", result=None, bytes=0)
            dropped.append(k)
        else:
            states[k][:] = [r for r in states[k] if r["id"] != rid]
            dropped.append(f"{k}/{rid}")
    return dropped


def remember(page: str, result: Any, max_runs: int) -> str | None:
    """Add `result` to `page`'s past runs in this session (at most `max_runs`, oldest let go;
    `trim` counts them in the session's budget). Returns its id; None when already there."""
    runs = st.session_state.setdefault(f"runs:{page}", [])
    if result is None or any(r["result"] is result for r in runs):
        return None
    run = {"id": uuid.uuid4().hex[:8], "result": result, "bytes": nbytes(result),
           "at": time.monotonic()}
    runs.append(run)
    del runs[:-max_runs]
    trim(st.session_state, keep=f"runs:{page}")
    return run["id"]


def past_runs(page: str) -> list[dict]:
    """`page`'s past runs in this session, oldest first: [{"id", "result", ...}]."""
    return st.session_state.get(f"runs:{page}", [])


def forget(page: str, run_id: str | None = None) -> None:
    """Drop one past run of `page` (or all of them with no id)."""
    runs = st.session_state.get(f"runs:{page}", [])
    runs[:] = [] if run_id is None else [r for r in runs if r["id"] != run_id]


def compute(lm, cfg, what: str, **reuse) -> Any:
    """A small job a page needs (a rescore, a speed probe: a registry task) through the shared
    runner, queued, prioritized and cached like any run, behind a spinner saying `what`. It
    does not replace the session's own run (its queue slot is its own). Raises ValueError with
    the job's sentence when it fails."""
    handle = runner().submit(lm.name, str(lm.device), cfg, session_id() + ":task", reuse=reuse)
    try:
        if not handle.wait(0):
            with st.spinner(what):
                while not handle.wait(POLL_S):
                    pass
    finally:
        if handle.status in ("queued", "running"):
            handle.detach()
    if handle.status == "failed":
        raise ValueError(handle.error)
    return handle.result


def stop_button(job: PageRun) -> None:
    """A Stop button; clicking it reruns the page, which ends the running job."""
    st.button("Stop", key=f"stop:{job.key}", icon=":material/stop_circle:")


GIL_SWITCH_S = 0.001   # Python's default 5 ms: see runner()


@st.cache_resource(show_spinner=False)
def runner() -> Runner:
    """The process's one job runner, shared by every browser session.

    Pages and jobs share one interpreter lock. A page's script re-takes it after each torch
    call, and at Python's default switch interval (5 ms) it waits that long behind a job's
    Python loop every time: a 20 ms stopped-run summary took 0.6 s beside two jobs. A 1 ms
    interval keeps pages responsive."""
    sys.setswitchinterval(GIL_SWITCH_S)
    return Runner(load=load_shared, workers=WORKERS, threads_per_job=THREADS_PER_JOB,
                  disk=DiskCache())


def session_id() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def run_live(lm, exp: Experiment, cfg, draw: Callable[[Any], None] | None = None) -> Any:
    """Submit `cfg` to the shared runner and follow it: queue position and wait, then a
    progress bar and, when given, `draw(partial)` redrawn live; a Stop button. A Stop (or
    any click, or the browser going away) detaches this session: the job is cancelled when
    no other session waits for it. Returns the result, or None (after saying why)."""
    job = PageRun(exp.name)
    handle = runner().submit(lm.name, str(lm.device), cfg, session_id())
    job.start(cfg, lm.name, handle)
    stop_slot, note_slot, bar_slot, live_slot = st.empty(), st.empty(), st.empty(), st.empty()
    with stop_slot:
        stop_button(job)
    try:
        _follow(handle, job, note_slot, bar_slot, live_slot, draw)
    finally:   # also on Stop: stop waiting (job_result asks the handle for the result)
        if handle.status in ("queued", "running"):
            handle.detach()
    for slot in (stop_slot, note_slot, bar_slot, live_slot):
        slot.empty()
    if handle.status == "failed":
        job.finish(None)
        st.error(f"The run failed: {handle.error}", icon=":material/error:")
        return None
    if handle.status != "done":      # cancelled: the job stays "stopped" and keeps its partial
        return None
    job.finish(handle.result)
    return handle.result


def redraw_interval(followers: int) -> float:
    """Seconds between one page's redraws when `followers` pages follow jobs."""
    return max(REDRAW_S, followers / REDRAWS_PER_S)


def _follow(handle, job: PageRun, note_slot, bar_slot, live_slot, draw) -> None:
    last_bar = last_chart = 0.0
    said = None
    while not handle.wait(POLL_S):
        job.touch()     # a yield point: a Stop click interrupts the script here, not at the next redraw
        if handle.status == "queued":
            eta = handle.starts_in
            about = f", about {format_duration(eta)}" if eta is not None else ""
            note = f"Queued: {handle.position} run(s) ahead of you{about}."
            if note != said:          # only a changed note goes to the browser
                note_slot.info(note, icon=":material/hourglass_top:")
                said = note
            continue
        p = handle.progress
        if p is None or time.monotonic() - last_bar < REDRAW_S:
            continue
        last_bar = time.monotonic()
        shared = handle.shared_with
        note = (f"Shared with {shared} other session(s): the same settings run once."
                if shared else "")
        if note != said:
            note_slot.caption(note)
            said = note
        bar_slot.progress(p.fraction, text=p.message)          # small: every REDRAW_S
        if draw is not None and p.partial is not None and \
                time.monotonic() - last_chart >= redraw_interval(runner().followers):
            last_chart = time.monotonic()
            with live_slot.container():
                draw(p.partial)


def job_result(lm, exp: Experiment) -> Any:
    """This page's latest result for the model in use: the finished one, or the runner's result
    of what a stopped run computed (asked for once, then kept)."""
    job = PageRun(exp.name)
    if job._state["status"] == "released":
        st.caption("This page's last result was let go to keep the server's memory bounded (newer "
                   "results on other pages came after it). Press Run again: finished runs stay in "
                   "the server's shared cache while it has room, so it is often instant.")
    if job.model != lm.name:
        return None
    handle = job._state.pop("handle", None) if job.stopped else None
    if handle is not None:
        # The script that followed the run is gone (a Stop or any click reruns the page, and
        # Streamlit may start this run before that one has unwound): detach for it.
        handle.detach()
        job.keep(handle.result, progress=handle.progress.message if handle.progress else "")
    return job.result
