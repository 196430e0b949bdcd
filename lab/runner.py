"""One job runner per process: a class of students on one server shares it.

    runner = Runner(load)                        load(model, device) -> LabModel (cached)
    h = runner.submit("smollm2-135m", "cpu", cfg, session="abc")
    h.status, h.position, h.starts_in, h.progress, h.shared_with, h.result, h.error
    h.wait(timeout)   h.detach()   (Stop: cancels the job when nobody else waits for it)

- Identical jobs run once: key = (model, device, experiment, config incl. seed). A second
  session submitting a running or queued key attaches to it; a finished result is served from
  a shared LRU cache bounded in bytes (CACHE_BYTES).
- Fair queue: `workers` threads; each session has at most one queued-or-running job (a new
  submit detaches it from the old one); the next job to start is the one whose session was
  served least recently, so a student who already ran waits behind one who has not.
- A job stops at its next progress callback once no session waits for it (it raises
  `Cancelled`); what it computed so far stays available to the sessions that detached.
- A failing job gives its waiters one sentence; the runner keeps serving.
- Workers run at a lower CPU priority (WORKER_NICE, Linux): when the cores are busy with
  jobs, pages (a Stop, a rerun, the next student's queue note) still get the CPU at once.
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from lab.experiment import Cancelled, Progress
from lab.registry import Experiment, for_config
from lab.cache import DiskCache, ResultCache

CACHE_BYTES = 1 << 30          # shared result cache: 1 GiB (the one place this is set)
WORKER_NICE = 10               # workers' niceness (0 = as the pages; 19 = lowest priority)
STOPPING_WAIT_S = 30.0         # a Stop's result: how long a page waits for the worker to make it
THREADS_PER_JOB = 1            # torch threads per running job (bench/class_load.py measures)


@dataclass(eq=False)
class Job:
    """One unit of work; sessions hold `Handle`s on it."""

    key: tuple
    exp: Experiment
    cfg: Any
    model: str
    device: str
    order: int                              # submission order (ties in the queue)
    status: str = "queued"                  # queued | running | done | failed | cancelled
    progress: Progress | None = None
    result: Any = None
    error: str | None = None
    waiters: set = field(default_factory=set)
    started: float | None = None
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    reuse: dict = field(default_factory=dict)     # passed to the run, not in the key
    stopped: dict = field(default_factory=dict)   # id(progress) -> (progress, its result): see stopped_result

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


class Handle:
    """A session's view of a job."""

    def __init__(self, runner: "Runner", job: Job, session: str):
        self._runner, self.job, self.session = runner, job, session
        self._stopped_at: Progress | None = None     # the newest progress when this session left

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def progress(self) -> Progress | None:
        return self.job.progress

    @property
    def error(self) -> str | None:
        return self.job.error

    @property
    def shared_with(self) -> int:
        """Other sessions waiting for the same job."""
        return max(len(self.job.waiters - {self.session}), 0)

    @property
    def position(self) -> int:
        """Jobs that will start before this one (0 once it runs)."""
        return self._runner.position(self.job)

    @property
    def starts_in(self) -> float | None:
        """Seconds until this job starts, from the measured durations; None when unknown."""
        return self._runner.wait_estimate(self.job)

    @property
    def result(self) -> Any:
        """Always a result, never a partial: the final one, or, for a session that left before
        the end (Stop), the experiment's result of the newest partial it saw, made here once
        (the module's `partial_result`). None when the job stopped before any progress."""
        if self.job.status == "done" and self._stopped_at is None:
            return self.job.result
        if self.job.active and not self.job.waiters:
            self.job.done.wait(STOPPING_WAIT_S)    # the worker is making the result: see _run
        # cancelled: nobody ran on, so its last progress is the most there is; done (others
        # waited on): what this session saw when it left, not the others' final result
        last = self.job.status == "cancelled" or self._stopped_at is None
        return self._runner.stopped_result(self.job, self.job.progress if last else self._stopped_at)

    @property
    def stopped(self) -> bool:
        """This session left the job before it finished: `result` is what was computed by then."""
        return self._stopped_at is not None

    def wait(self, timeout: float | None = None) -> bool:
        return self.job.done.wait(timeout)

    def detach(self) -> None:
        """This session stops waiting; the job is cancelled when no one else waits."""
        if self.job.active:
            self._stopped_at = self.job.progress
        self._runner.detach(self.job, self.session)


class Runner:
    def __init__(self, load: Callable[[str, str], Any], workers: int = 1,
                 threads_per_job: int | None = THREADS_PER_JOB, cache_bytes: int = CACHE_BYTES,
                 resolve: Callable[[Any], Experiment] = for_config, disk: DiskCache | None = None):
        self._load, self._resolve, self.threads_per_job = load, resolve, threads_per_job
        self.cache, self.disk = ResultCache(cache_bytes), disk
        self._lock = threading.Condition()
        self._jobs: dict[tuple, Job] = {}          # active jobs by key
        self._of_session: dict[str, Job] = {}      # each session's one active job
        self._served: dict[str, float] = {}        # when each session last had a job start
        self._durations: dict[tuple, float] = {}   # (experiment, model) -> last run seconds
        self._counter = itertools.count()
        self._workers = [threading.Thread(target=self._work, daemon=True, name=f"lab-runner-{i}")
                         for i in range(workers)]
        for w in self._workers:
            w.start()

    # ---------------------------------------------------------------- sessions' side

    def submit(self, model: str, device: str, cfg, session: str, reuse: dict | None = None) -> Handle:
        """`reuse`: work already done that the run accepts (an experiment's `**reuse`), never
        part of the key: `cfg` must name everything the result depends on."""
        exp = self._resolve(cfg)
        key = (model, device, exp.name, cfg)
        writes = getattr(cfg, "writes_files", False)   # it must run: its folder is the point
        if writes:
            key += (cfg.folder,)
        with self._lock:
            old = self._of_session.get(session)
            if old is not None and old.key != key:
                self._detach_locked(old, session)
            cached = None if writes else self.cache.get(key)
            if cached is None and not writes and self.disk is not None:
                cached = self.disk.get(key)
                if cached is not None:
                    self.cache.put(key, cached)
            if cached is not None:
                job = Job(key, exp, cfg, model, device, next(self._counter), status="done",
                          result=cached)
                job.done.set()
                return Handle(self, job, session)
            job = self._jobs.get(key)
            if job is None:
                job = Job(key, exp, cfg, model, device, next(self._counter), reuse=reuse or {})
                self._jobs[key] = job
            job.waiters.add(session)
            self._of_session[session] = job
            self._lock.notify_all()
            return Handle(self, job, session)

    def stopped_result(self, job: Job, progress: Progress | None) -> Any:
        """The result of a stopped run: the experiment's `partial_result` of `progress`,
        computed once per progress step, whichever sessions ask."""
        if progress is None or progress.partial is None:
            return None
        with self._lock:
            done = job.stopped.get(id(progress))
        if done is not None and done[0] is progress:
            return done[1]
        result = job.exp.partial_result(self._load(job.model, job.device), job.cfg, progress.partial)
        with self._lock:
            job.stopped[id(progress)] = (progress, result)
        return result

    def detach(self, job: Job, session: str) -> None:
        with self._lock:
            self._detach_locked(job, session)

    def _detach_locked(self, job: Job, session: str) -> None:
        job.waiters.discard(session)
        if self._of_session.get(session) is job:
            del self._of_session[session]
        if not job.waiters and job.status == "queued":
            self._end_locked(job, "cancelled")
        # a running job with no waiters stops at its next progress callback

    # ---------------------------------------------------------------- queue

    def _queued(self) -> list[Job]:
        """Queued jobs in start order: least recently served session first."""
        def rank(job: Job):
            last = min((self._served.get(s, 0.0) for s in job.waiters), default=0.0)
            return (last, job.order)
        return sorted((j for j in self._jobs.values() if j.status == "queued"), key=rank)

    @property
    def followers(self) -> int:
        """Sessions waiting for a queued or running job (the pages that poll and redraw)."""
        with self._lock:
            return len(self._of_session)

    def position(self, job: Job) -> int:
        with self._lock:
            queued = self._queued()
            return queued.index(job) if job in queued else 0

    def wait_estimate(self, job: Job) -> float | None:
        """Seconds until `job` starts: running jobs' remaining time plus the queued ahead."""
        with self._lock:
            if job.status != "queued":
                return 0.0
            ahead = self._queued()
            ahead = ahead[:ahead.index(job)] if job in ahead else ahead
            running = [j for j in self._jobs.values() if j.status == "running"]
            times = [self._remaining(j) for j in running] + [self._duration(j) for j in ahead]
            if any(t is None for t in times):
                return None
            slots = max(len(self._workers), 1)
            return (sum(times) / slots) if times else 0.0

    def _duration(self, job: Job) -> float | None:
        return self._durations.get((job.exp.name, job.model))

    def _remaining(self, job: Job) -> float | None:
        p = job.progress
        if p is not None and p.fraction > 0.02 and job.started is not None:
            elapsed = time.perf_counter() - job.started
            return elapsed * (1 - p.fraction) / p.fraction
        full = self._duration(job)
        return None if full is None else max(full - (time.perf_counter() - (job.started or 0)), 0.0)

    # ---------------------------------------------------------------- workers

    def _work(self) -> None:
        _lower_priority(WORKER_NICE)
        if self.threads_per_job:
            import torch
            torch.set_num_threads(self.threads_per_job)
        while True:
            with self._lock:
                while not self._queued():
                    self._lock.wait()
                job = self._queued()[0]
                job.status, job.started = "running", time.perf_counter()
                for s in job.waiters:
                    self._served[s] = time.monotonic()
            self._run(job)

    def _run(self, job: Job) -> None:
        def on_progress(p: Progress) -> None:
            job.progress = p
            if not job.waiters:
                raise Cancelled
        try:
            lm = self._load(job.model, job.device)
            result = job.exp.run(lm, job.cfg, on_progress, **job.reuse)
            job.reuse = {}      # let go of what it was given
        except Cancelled:   # the result of what was computed is made here, before the end is signalled
            try:
                self.stopped_result(job, job.progress)
            except Exception:   # a failed summary is the asking page's sentence (Handle.result)
                pass
            with self._lock:
                self._end_locked(job, "cancelled")
            return
        except Exception as e:   # one job's failure is its waiters' news, not the server's
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            with self._lock:
                job.error = text
                self._end_locked(job, "failed")
            return
        with self._lock:
            job.result = result
            self._durations[(job.exp.name, job.model)] = time.perf_counter() - job.started
            if not getattr(job.cfg, "writes_files", False):   # its folder is the point: runs again
                self.cache.put(job.key, result)
            self._end_locked(job, "done")

    def _end_locked(self, job: Job, status: str) -> None:
        job.status, job.finished = status, time.perf_counter()
        self._jobs.pop(job.key, None)
        for s in list(job.waiters):
            if self._of_session.get(s) is job:
                del self._of_session[s]
        job.done.set()
        self._lock.notify_all()


def _lower_priority(nice: int) -> None:
    """Make the calling thread (and the threads it starts) yield the CPU to the server's
    others. Linux gives each thread its own nice value; elsewhere it would renice the whole
    process, pages included, so it is left alone there."""
    if sys.platform == "linux" and nice > 0:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(current, nice))
