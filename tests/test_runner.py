"""The job runner: dedup, cancel, detach, fair order, cache eviction by bytes, isolation.

The experiment here is a fake one (this module is its `lab` module): a run that takes
`steps` steps, each waiting on a gate the test opens, so the order of events is decided by
the test, never by timing.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from lab.experiment import param, report, validate
from lab.registry import Experiment
from lab.runner import ResultCache, Runner
from lab.sizes import nbytes

GATES: dict = {}
STARTED: list[int] = []
RUNS: list[int] = []
NICE: list[int] = []      # the niceness each run saw on its worker thread


@dataclass(frozen=True)
class FakeConfig:
    steps: int = param(3, "steps", min=1)
    seed: int = param(0, "which run")
    fail: bool = param(False, "raise in the middle")
    gated: bool = param(True, "wait for the test's gate at every step")

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class FakeResult:
    seed: int
    values: np.ndarray

    def to_record(self):
        return {"seed": self.seed}

    def frames(self):
        return {}


def run(lm, cfg: FakeConfig, on_progress=None):
    STARTED.append(cfg.seed)
    if sys.platform == "linux":
        NICE.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    for step in range(cfg.steps):
        if cfg.gated:
            assert gate(cfg.seed).acquire(timeout=10), "gate never opened"
        if cfg.fail and step == 1:
            raise ValueError("the fake run broke on purpose\nsecond line")
        report(on_progress, step + 1, cfg.steps, "step", partial=FakeResult(cfg.seed, np.zeros(step + 1)))
    RUNS.append(cfg.seed)
    return FakeResult(cfg.seed, np.zeros(1000))


CONVERTED: list[int] = []   # the step of every partial turned into a result


@dataclass(frozen=True)
class FakeStopped:
    """What a stopped fake run shows: a result type of its own, so a test sees the conversion."""
    seed: int
    steps_done: int


def partial_result(lm, cfg: FakeConfig, partial: FakeResult) -> FakeStopped:
    CONVERTED.append(len(partial.values))
    return FakeStopped(partial.seed, len(partial.values))


FAKE = Experiment("fake", "Fake", "", "a fake experiment", __name__, "FakeConfig", "views/none.py")


@pytest.fixture
def runner():
    GATES.clear(), STARTED.clear(), RUNS.clear(), NICE.clear(), CONVERTED.clear()
    return Runner(load=lambda model, device: model, workers=1, threads_per_job=None,
                  resolve=lambda cfg: FAKE)


class _Gate:
    """Steps a run may take: `step(n)` lets n more through, `set()` all of them."""

    def __init__(self):
        self.sem = threading.Semaphore(0)

    def acquire(self, timeout):
        return self.sem.acquire(timeout=timeout)

    def step(self, n: int = 1):
        self.sem.release(n)

    def set(self):
        self.sem.release(10_000)


def gate(seed: int) -> _Gate:
    return GATES.setdefault(seed, _Gate())


def wait_until(cond, timeout=5.0):
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        ev.wait(0.01)
    return False


def test_identical_jobs_run_once_and_share_progress(runner):
    a = runner.submit("m", "cpu", FakeConfig(seed=1), "alice")
    b = runner.submit("m", "cpu", FakeConfig(seed=1), "bob")
    assert a.job is b.job and a.shared_with == 1 and b.shared_with == 1
    gate(1).set()
    assert a.wait(5) and b.wait(5)
    assert RUNS == [1] and a.result is b.result
    c = runner.submit("m", "cpu", FakeConfig(seed=1), "carol")   # served from the cache
    assert c.status == "done" and c.result is a.result and RUNS == [1]
    d = runner.submit("other-model", "cpu", FakeConfig(seed=1), "dave")  # a different key
    assert d.job is not a.job
    assert d.wait(5) and RUNS == [1, 1]   # and it ends here, not inside the next test's RUNS


def test_detach_keeps_a_shared_job_and_cancel_stops_an_unshared_one(runner):
    a = runner.submit("m", "cpu", FakeConfig(seed=1), "alice")
    b = runner.submit("m", "cpu", FakeConfig(seed=1), "bob")
    assert wait_until(lambda: a.status == "running")
    a.detach()                                   # alice stops: bob still waits
    gate(1).set()
    assert b.wait(5) and b.status == "done" and RUNS == [1]

    c = runner.submit("m", "cpu", FakeConfig(seed=2, steps=50), "carol")
    assert wait_until(lambda: c.status == "running")
    gate(2).step(2)
    assert wait_until(lambda: c.progress is not None and c.progress.done == 2)
    c.detach()
    gate(2).set()                                   # nobody else waits: cancelled at a callback
    assert c.wait(5) and c.status == "cancelled" and 2 not in RUNS
    assert c.result == FakeStopped(2, 3)        # a result made from the last partial (step 3:
    assert c.result is c.result and CONVERTED == [3]   # where it noticed), once, in the worker
    assert ("m", "cpu", "fake", FakeConfig(seed=2, steps=50)) not in runner.cache


def test_a_queued_job_nobody_waits_for_never_starts(runner):
    first = runner.submit("m", "cpu", FakeConfig(seed=1), "alice")
    queued = runner.submit("m", "cpu", FakeConfig(seed=2), "bob")
    assert wait_until(lambda: first.status == "running")
    assert queued.position == 0 and queued.status == "queued"
    queued.detach()
    assert queued.status == "cancelled"
    gate(1).set(), gate(2).set()
    assert first.wait(5) and STARTED == [1]


def test_one_job_per_session_a_new_run_replaces_the_queued_one(runner):
    runner.submit("m", "cpu", FakeConfig(seed=1), "alice")
    old = runner.submit("m", "cpu", FakeConfig(seed=2), "bob")
    new = runner.submit("m", "cpu", FakeConfig(seed=3), "bob")
    assert old.status == "cancelled" and new.status == "queued"
    for s in (1, 2, 3):
        gate(s).set()
    assert new.wait(5) and STARTED == [1, 3]


def test_round_robin_least_recently_served_session_first(runner):
    a1 = runner.submit("m", "cpu", FakeConfig(seed=1), "alice")
    assert wait_until(lambda: a1.status == "running")
    b = runner.submit("m", "cpu", FakeConfig(seed=2), "bob")
    c = runner.submit("m", "cpu", FakeConfig(seed=3), "carol")
    gate(1).set()
    assert a1.wait(5)
    a2 = runner.submit("m", "cpu", FakeConfig(seed=4), "alice")   # alice again, after a run
    assert wait_until(lambda: b.status == "running")
    assert (c.position, a2.position) == (0, 1)        # carol (never served) before alice
    for s in (2, 3, 4):
        gate(s).set()
    assert a2.wait(5) and STARTED == [1, 2, 3, 4]


def test_a_failure_reaches_its_waiters_only(runner):
    bad = runner.submit("m", "cpu", FakeConfig(seed=1, fail=True), "alice")
    good = runner.submit("m", "cpu", FakeConfig(seed=2), "bob")
    gate(1).set(), gate(2).set()
    assert bad.wait(5) and bad.status == "failed"
    assert bad.error == "the fake run broke on purpose"          # one sentence
    assert good.wait(5) and good.status == "done" and good.error is None
    again = runner.submit("m", "cpu", FakeConfig(seed=1, fail=True), "carol")  # not cached
    assert again.status == "queued" or again.status == "running"


def test_eta_from_measured_durations(runner):
    a = runner.submit("m", "cpu", FakeConfig(seed=1, gated=False), "alice")
    assert a.wait(5)
    running = runner.submit("m", "cpu", FakeConfig(seed=2), "bob")
    queued = runner.submit("m", "cpu", FakeConfig(seed=3), "carol")
    assert wait_until(lambda: running.status == "running")
    assert queued.position == 0 and queued.starts_in is not None and queued.starts_in >= 0
    gate(2).set(), gate(3).set()
    assert queued.wait(5)


def test_cache_evicts_least_recently_used_by_bytes():
    one = np.zeros(1000, dtype=np.float64)            # 8000 bytes each
    cache = ResultCache(max_bytes=20_000)
    cache.put("a", one.copy())
    cache.put("b", one.copy())
    assert cache.get("a") is not None                  # a is now the most recent
    cache.put("c", one.copy())                         # over budget: b goes, not a
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.bytes == 16_000 and cache.bytes <= cache.max_bytes
    cache.put("huge", np.zeros(10_000))                # larger than the cache: not kept
    assert "huge" not in cache and len(cache) == 2


def test_nbytes_counts_buffers_once():
    import torch
    t = torch.zeros(100, 10)
    assert nbytes(t) == 4000
    assert nbytes({"x": t, "y": t}) - nbytes({"x": 0, "y": 0}) == 4000 - 28


def test_disk_cache_serves_what_warm_wrote(tmp_path):
    from lab.cache import DiskCache
    disk = DiskCache(tmp_path)
    key = ("m", "cpu", "fake", FakeConfig(seed=5))
    disk.put(key, FakeResult(5, np.arange(3)))
    assert disk.get(("m", "cpu", "fake", FakeConfig(seed=6))) is None
    GATES.clear(), STARTED.clear(), RUNS.clear(), NICE.clear(), CONVERTED.clear()
    warm = Runner(load=lambda m, d: m, workers=1, threads_per_job=None,
                  resolve=lambda cfg: FAKE, disk=disk)
    h = warm.submit("m", "cpu", FakeConfig(seed=5), "alice")
    assert h.status == "done" and h.result.values.tolist() == [0, 1, 2] and STARTED == []
    (tmp_path / next(p.name for p in tmp_path.iterdir())).write_bytes(b"garbage")
    assert disk.get(key) is None                       # unreadable: recomputed, no crash


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_jobs_run_at_a_lower_priority_than_the_pages(runner):
    from lab.runner import WORKER_NICE
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    a = runner.submit("m", "cpu", FakeConfig(seed=1, gated=False), "alice")
    assert a.wait(5) and a.status == "done"
    assert NICE == [max(mine, WORKER_NICE)] and WORKER_NICE > 0
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine   # pages keep theirs


def test_followers_counts_the_sessions_waiting_for_jobs(runner):
    a = runner.submit("m", "cpu", FakeConfig(seed=1), "alice")
    runner.submit("m", "cpu", FakeConfig(seed=1), "bob")        # shares alice's job
    c = runner.submit("m", "cpu", FakeConfig(seed=2), "carol")   # queued behind it
    assert runner.followers == 3
    c.detach()
    assert runner.followers == 2
    gate(1).set()
    assert a.wait(5) and runner.followers == 0


def test_warm_computes_at_the_servers_thread_count(tmp_path, monkeypatch):
    """The disk cache holds what a server job would compute: a thread count changes the sums."""
    import torch
    from types import SimpleNamespace
    from lab.cli import warm
    from lab.registry import get
    from lab.runner import THREADS_PER_JOB
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    seen = []
    fake = SimpleNamespace(name="hidden", config_class=get("hidden").config_class,
                           run=lambda lm, cfg, on_progress=None: seen.append(torch.get_num_threads()) or "result")
    monkeypatch.setattr(warm, "get", lambda name: fake)
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS_PER_JOB + 1)
    try:
        assert warm._warm(SimpleNamespace(only="hidden", model="tiny-gpt2", device="cpu")) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [THREADS_PER_JOB]
    assert any(tmp_path.rglob("*.pkl"))


def test_a_session_that_stops_a_shared_job_gets_the_result_of_what_it_saw(runner):
    a = runner.submit("m", "cpu", FakeConfig(seed=3, steps=5), "alice")
    b = runner.submit("m", "cpu", FakeConfig(seed=3, steps=5), "bob")
    gate(3).step(2)
    assert wait_until(lambda: a.progress is not None and a.progress.done == 2)
    a.detach()                                   # alice stops after step 2; bob waits on
    gate(3).set()
    assert b.wait(5) and b.status == "done" and len(b.result.values) == 1000
    assert a.stopped and not b.stopped
    assert a.result == FakeStopped(3, 2)         # her snapshot, not bob's final result
