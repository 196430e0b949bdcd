"""The result of an activation-maximization run, and the run itself:
optimize -> decode the vectors into tokens -> measure the gap to real text."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.decode import GapMeter, gap_meter, nearest_tokens
from lab.actmax.optimize import Recorder, initial_embeddings, optimize
from lab.experiment import OnProgress, record
from lab.models import LabModel


@dataclass(frozen=True)
class ActMaxResult:
    config: ActMaxConfig
    model: str
    embeds: torch.Tensor      # [restarts, n_tokens, d_model] optimized embeddings (cpu)
    start: torch.Tensor       # [restarts, n_tokens, d_model] where each restart began (cpu)
    history: pd.DataFrame     # step, restart, target, neighbours, loss
    nearest: pd.DataFrame     # restart, position, rank, token_id, token, cosine
    gap: GapMeter
    seconds: float            # wall time of the optimization loop
    steps_done: int           # == config.steps unless the run was stopped early
    token_norm: float         # mean L2 norm of the model's token embeddings, for scale

    @property
    def initial(self) -> np.ndarray:
        """[restarts] target activation at the start."""
        return self._at(self.history.step.min())

    @property
    def final(self) -> np.ndarray:
        """[restarts] target activation of the returned embeddings."""
        return self._at(self.history.step.max())

    def _at(self, step: int) -> np.ndarray:
        h = self.history[self.history.step == step].sort_values("restart")
        return h.target.to_numpy()

    @property
    def gain(self) -> np.ndarray:
        """[restarts] final / |initial|: the final activation in units of the starting size.

        |initial| rather than initial because random starts often sit slightly below 0, where
        a plain ratio flips sign; the seeds' "three orders of magnitude" is this ratio.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.final / np.abs(self.initial)

    @property
    def moved(self) -> np.ndarray:
        """[restarts] ||x - x0|| / ||x0||, averaged over positions: how far from the start.

        Small values mean the optimized vectors are still mostly their random start, so
        whatever they decode to says more about the start than about the target.
        """
        step = (self.embeds - self.start).norm(dim=-1) / self.start.norm(dim=-1)
        return step.mean(-1).numpy().astype(float)

    @property
    def best_cosine(self) -> float:
        return float(self.nearest.cosine.max())

    def per_restart(self) -> pd.DataFrame:
        """One row per restart: activations, gap meter, and the decoded text."""
        top = self.nearest[self.nearest["rank"] == 1].sort_values(["restart", "position"])
        text = top.groupby("restart").token.apply(lambda t: "|".join(t))
        cos = top.groupby("restart").cosine
        return pd.DataFrame({
            "restart": np.arange(self.config.restarts), "initial": self.initial,
            "final": self.final, "gain": self.gain, "nearest_tokens": text.to_numpy(),
            "vector_norm": self.embeds.norm(dim=-1).mean(-1).numpy().astype(float),
            "moved": self.moved,
            "snapped_activation": self.gap.snapped,
            "snapped_percentile": self.gap.snapped_percentile(),
            "mean_top1_cosine": cos.mean().to_numpy(), "best_cosine": cos.max().to_numpy()})

    def numbers(self) -> dict:
        """The run's numbers as plain JSON data (the body of `to_record`)."""
        return {"steps_done": self.steps_done, "seconds": round(self.seconds, 3),
                "restarts": self.per_restart().to_dict(orient="records"),
                "gap_meter": self.gap.summary(), "best_cosine": self.best_cosine,
                "token_norm": self.token_norm,
                "nearest": self.nearest.to_dict(orient="records")}

    def to_record(self) -> dict:
        """Everything needed to reproduce and read the run (no tensors)."""
        return record("actmax", self.config, self.model, **self.numbers())

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"history": self.history, "nearest": self.nearest, "restarts": self.per_restart(),
                "gap": self.gap.frame()}

    def brief(self) -> dict:
        """The run for people, one `key: value` line each (the CLI's default output)."""
        per = self.per_restart()
        return {"model": self.model, "hook": self.config.hook, "index": self.config.index,
                "seconds": round(self.seconds, 2), "best_cosine": round(self.best_cosine, 4),
                "initial": per.initial.round(4).tolist(), "final": per.final.round(4).tolist(),
                "gain": per.gain.round(2).tolist(), "nearest_tokens": per.nearest_tokens.tolist(),
                "gap_meter": {k: round(v, 4) for k, v in self.gap.summary().items()}}


def summarize(lm: LabModel, cfg: ActMaxConfig, embeds: torch.Tensor, history: pd.DataFrame,
              seconds: float = 0.0, start: torch.Tensor | None = None) -> ActMaxResult:
    """Decode and gap-meter optimized embeddings; also turns a stopped run into a result.

    `start`: the starting embeddings (recomputed from the config's seed when None).
    """
    if history.empty:
        raise ValueError("nothing was computed yet: no step has run")
    embeds = embeds.detach().cpu()
    start = (initial_embeddings(lm, cfg) if start is None else start).detach().cpu()
    last = history[history.step == history.step.max()].sort_values("restart")
    near = nearest_tokens(lm, embeds)
    top1 = near[near["rank"] == 1].sort_values(["restart", "position"]).token_id.to_numpy()
    gap = gap_meter(lm, cfg, embeds, last.target.to_numpy(),
                    snapped_ids=torch.tensor(top1).reshape(embeds.shape[:2]))
    token_norm = float(lm.W_E.detach().float().norm(dim=-1).mean())
    return ActMaxResult(cfg, lm.name, embeds, start, history.reset_index(drop=True), near, gap,
                        seconds, int(history.step.max()), token_norm)


def maximize(lm: LabModel, cfg: ActMaxConfig, on_progress: OnProgress | None = None,
             start: torch.Tensor | None = None) -> ActMaxResult:
    """Optimize, decode the result into tokens, and measure the gap to real text."""
    cfg.check(lm)
    t0 = time.perf_counter()
    x0 = initial_embeddings(lm, cfg) if start is None else start
    embeds, history = optimize(lm, cfg, on_progress, x0)
    return summarize(lm, cfg, embeds, history, time.perf_counter() - t0, x0)


def run(lm: LabModel, cfg: ActMaxConfig, on_progress: OnProgress | None = None) -> ActMaxResult:
    """The registry's entry point: `maximize` with the config's seeded starts."""
    return maximize(lm, cfg, on_progress)


def partial_result(lm: LabModel, cfg: ActMaxConfig, partial: Recorder) -> ActMaxResult:
    """What a stopped run computed (the Recorder of its last Progress), as a result."""
    embeds, history, seconds, start = partial.snapshot()
    return summarize(lm, cfg, embeds, history, seconds, start)
