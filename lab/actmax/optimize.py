"""Gradient ascent on input embeddings, restarts as one batch, recorded step by step.

    x  [restarts, n_tokens, d_model]   the optimized input embeddings (one row per restart)
    a  = activation at cfg.hook [r, :, cfg.index] reduced over positions (mean, or the last one)
    loss_r = -a_r + l2 * ||x_r||^2,  and Adam minimizes sum_r loss_r

The batch loss is a *sum* over restarts, so restart r's gradient depends on restart r alone,
and Adam works element by element: the batch follows exactly the trajectories the restarts
would follow one by one (tests check this). Restart r starts from a generator seeded with
(seed, r), so a restart's start does not depend on how many restarts run beside it.

The forward stops right after the target's block (lab.hooks stop_early), weights stay frozen
(only `x` has requires_grad), and the model adds its own position information exactly as it
does for real tokens: GPT-2 adds its learned position embeddings (wpe) to `inputs_embeds`;
Llama-family models add nothing to the residual stream and rotate queries and keys (rotary)
inside attention.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.target import (  # noqa: F401  (re-exported: lab.actmax and callers import them here)
    Target, neighbour_indices, reduce_positions, stream_seed,
    target_of)
from lab.experiment import OnProgress, report
from lab.hooks import capture, forward
from lab.models import LabModel

HISTORY_COLUMNS = ["step", "restart", "target", "neighbours", "loss"]


def activations(lm: LabModel, hook: str, input_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The activation at `hook` [batch, pos, width] from one forward that stops there.

    Raw residual: blocks.{last}.hook_resid_post is the last block's output *before* the final
    norm (HF's last hidden_states entry has the norm applied). Keeps the autograd graph.
    """
    with capture(lm, [hook], stop_early=True) as cache:
        forward(lm, input_ids=input_ids, inputs_embeds=inputs_embeds)
    return cache[hook]


def random_embeddings(lm: LabModel, seed: int, restarts: int, n_tokens: int,
                      stream: int = 0) -> torch.Tensor:
    """[restarts, n_tokens, d_model] Gaussian vectors scaled to the std of W_E.

    Row r comes from its own generator seeded with (seed, r, stream): row r is the same
    whatever `restarts` is. stream 0 = optimization starts, 1 = the null control.
    """
    std = lm.W_E.detach().float().std().item()
    rows = []
    for r in range(restarts):
        g = torch.Generator().manual_seed(stream_seed(seed, r, stream))
        rows.append(torch.randn(n_tokens, lm.d_model, generator=g))
    return (torch.stack(rows) * std).to(device=lm.device, dtype=lm.W_E.dtype)


def initial_embeddings(lm: LabModel, cfg: ActMaxConfig) -> torch.Tensor:
    """The starts of a run: [restarts, n_tokens, d_model]."""
    return random_embeddings(lm, cfg.seed, cfg.restarts, cfg.n_tokens, stream=0)


class Recorder:
    """A run so far, one entry per forward: what `Progress.partial` carries, and what
    `partial_result` turns into a full result after a Stop.

    Keeps every step's [rows] numbers, the start and only the newest embeddings (500 copies
    would add up); the token methods also keep their newest prompt ids [rows, n_tokens] (and
    epo its frontier). The job runner optimizes in its own thread while a page may read the
    partial: `snapshot` and `tokens` read what belongs to the same step, under a lock.
    """

    def __init__(self, columns: list[str] = HISTORY_COLUMNS):
        self.columns = list(columns)          # HISTORY_COLUMNS, + "ce" for the token methods
        self._rows: list[tuple[torch.Tensor, ...]] = []   # per step: one [rows] tensor per column
        self.start: torch.Tensor | None = None    # step 0's embeddings: where each restart began
        self.embeds: torch.Tensor | None = None   # [R, T, D] the newest, their numbers last
        self.ids: torch.Tensor | None = None      # [R, T] the token methods' prompts so far
        self.start_ids: torch.Tensor | None = None
        self.frontier: torch.Tensor | None = None  # [F, T] epo: the non-dominated prompts so far
        self.started = time.perf_counter()
        self.seconds = 0.0
        self.stopped = ""      # why a search ended before cfg.steps (discrete/epo's patience)
        self._lock = threading.Lock()

    def add(self, target: torch.Tensor, neighbours: torch.Tensor, loss: torch.Tensor,
            embeds: torch.Tensor | None, ce: torch.Tensor | None = None,
            ids: torch.Tensor | None = None, frontier: torch.Tensor | None = None) -> None:
        row = (target, neighbours, loss) + ((ce,) if "ce" in self.columns else ())
        with self._lock:
            self._rows.append(row)
            if len(self._rows) == 1:
                self.start, self.start_ids = embeds, ids
            self.embeds, self.ids = embeds, ids
            self.frontier = frontier if frontier is not None else self.frontier
            self.seconds = time.perf_counter() - self.started

    def snapshot(self) -> tuple[torch.Tensor | None, pd.DataFrame, float, torch.Tensor | None]:
        """(embeds, history, seconds, start), all of the same step."""
        with self._lock:
            rows, embeds, seconds, start = list(self._rows), self.embeds, self.seconds, self.start
        return embeds, _history(rows, self.columns), seconds, start

    def state(self) -> dict:
        """Everything of the newest step at once: embeds, start, ids, start_ids, frontier,
        history, seconds, steps_done."""
        with self._lock:
            rows = list(self._rows)
            out = {k: getattr(self, k) for k in ("embeds", "start", "ids", "start_ids",
                                                 "frontier", "seconds")}
        return {**out, "history": _history(rows, self.columns), "steps_done": len(rows) - 1}

    @property
    def step(self) -> int:
        """The newest step: that many updates have been applied to `embeds`."""
        return len(self._rows) - 1

    @property
    def target(self) -> np.ndarray:
        """[restarts] the newest target activation."""
        return self._rows[-1][0].cpu().numpy()

    @property
    def history(self) -> pd.DataFrame:
        """Tidy history: one row per (step, restart)."""
        return self.snapshot()[1]

    def __getstate__(self) -> dict:   # a lock does not pickle (e.g. into a result cache)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def message(self, cfg: ActMaxConfig) -> str:
        """One progress line: where the run is and how high the target got."""
        mean = f" (mean of {len(self.target)} {'rows' if cfg.method == 'epo' else 'restarts'})" \
            if len(self.target) > 1 else ""
        return (f"Step {self.step} of {cfg.steps} · {cfg.target} = {self.target.mean():.3f}{mean}"
                f" · {self.seconds:.0f} s")


def _history(rows: list[tuple[torch.Tensor, ...]], columns: list[str]) -> pd.DataFrame:
    """Per-step [restarts] values, one per column after step and restart -> one row per
    (step, restart)."""
    if not rows:
        return pd.DataFrame(columns=columns)
    cols = [torch.stack(c).float().cpu().numpy().astype(float) for c in zip(*rows)]
    S, R = cols[0].shape
    return pd.DataFrame({"step": np.repeat(np.arange(S), R), "restart": np.tile(np.arange(R), S),
                         **{name: c.ravel() for name, c in zip(columns[2:], cols)}})


def starts(lm: LabModel, cfg: ActMaxConfig, start: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of `start`, or of the seeded starts, checked to be [restarts, n_tokens, d_model]."""
    x = (initial_embeddings(lm, cfg) if start is None else start).detach().clone()
    if x.shape != (cfg.restarts, cfg.n_tokens, lm.d_model):
        raise ValueError(f"start must have shape {(cfg.restarts, cfg.n_tokens, lm.d_model)}, "
                         f"got {tuple(x.shape)}")
    return x


def ascend(lm: LabModel, cfg: ActMaxConfig, goal: Target, on_progress: OnProgress | None = None,
           start: torch.Tensor | None = None) -> Recorder:
    """The continuous method: Adam on the embeddings, recorded step by step (steps 0..cfg.steps;
    row `steps` is measured after the last update). `on_progress` gets a Progress per forward
    (unit "step") whose partial is the Recorder."""
    x = starts(lm, cfg, start).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    rec = Recorder()
    with capture(lm, [cfg.hook], stop_early=True) as cache:
        for step in range(cfg.steps + 1):
            last = step == cfg.steps
            with torch.set_grad_enabled(not last):   # the final forward only measures
                forward(lm, inputs_embeds=x)
                target, neigh = goal.read(cache[cfg.hook])                   # [R], [R] (nan if none)
                loss = -target + cfg.l2 * x.pow(2).sum((1, 2))               # [R]
            if not last:
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()   # a sum: each restart's gradient is its own
            rec.add(target.detach(), neigh, loss.detach(), x.detach().clone())
            report(on_progress, step, cfg.steps, "step", rec.message(cfg), rec)
            if not last:
                opt.step()
    return rec


def optimize(lm: LabModel, cfg: ActMaxConfig, on_progress: OnProgress | None = None,
             start: torch.Tensor | None = None) -> tuple[torch.Tensor, pd.DataFrame]:
    """Run Adam on the embeddings; return (final embeds [R, T, D], tidy history).

    `start` overrides the seeded starts (same shape): used to run restarts one by one.
    """
    rec = ascend(lm, cfg, target_of(lm, cfg), on_progress, start)
    return rec.embeds, rec.history
