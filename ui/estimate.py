"""The time before Run, beside the Run button: lab.estimate's cost model priced with this
machine's measured rates, plus, in a class, the wait behind the shared runner's queue.

A page calls `show(lm, exp, cfg)` right before (or beside) its Run button."""
from __future__ import annotations

from types import SimpleNamespace

import streamlit as st

from lab import estimate as cost
from lab.experiment import format_duration


def queue_wait() -> tuple[int, float | None]:
    """(runs queued or running now, seconds until a run submitted now would start; None when
    one of them has no known duration yet), from the shared runner (ui.jobs.runner)."""
    from ui.jobs import runner
    r = runner()
    newcomer = SimpleNamespace(status="queued")      # not in the queue: every queued job is ahead
    ahead = len(r._queued()) + sum(j.status == "running" for j in list(r._jobs.values()))
    return ahead, r.wait_estimate(newcomer)


@st.cache_data(show_spinner="Measuring this machine's speed…", max_entries=64)
def _estimate(model_name: str, device: str, experiment: str, cfg_key: str, _lm, _cfg):
    return cost.estimate(_lm, experiment, _cfg)


def show(lm, exp, cfg, where=None) -> cost.Estimate | None:
    """One caption: the run's estimated time here and, when others are queued, the wait.
    `where` is a container (e.g. the column beside Run); default: the page. Never raises: a
    cost model that cannot price a config shows nothing."""
    where = st if where is None else where
    try:
        est = _estimate(lm.name, str(lm.device), exp.name, repr(cfg), lm, cfg)
    except Exception:                                # an estimate must never break a page
        return None
    text = f"Estimated time: **{est.describe()}** on this machine"
    try:
        ahead, wait = queue_wait()
    except Exception:
        ahead, wait = 0, 0.0
    if ahead:
        about = f"about {format_duration(wait)}" if wait is not None else "an unknown time"
        text += (f"; {ahead} run(s) queued or running before yours: {about} of waiting, "
                 f"{format_duration(est.seconds + wait) if wait is not None else '?'} in all")
    where.caption(text + ".", help=est.basis)
    return est
