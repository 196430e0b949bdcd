"""The result of an activation-maximization run, and the run itself:
optimize (continuous, pez, discrete or epo) -> decode into tokens / measure the real-token
prompts -> the gap to real text, and the corpus's best windows as the bar to beat."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lab.actmax.bar import Bar, cached_bar, corpus_bar
from lab.actmax.config import ActMaxConfig
from lab.actmax.decode import GAP_SOURCES, GapMeter, gap_meter, nearest_tokens
from lab.actmax.optimize import Recorder, ascend, initial_embeddings
from lab.actmax.prompts import Prompts, measure
from lab.actmax.target import target_of
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
    # The token methods' answer, measured by feeding it (embeds/start are then pez's
    # continuous copy, or the prompts' own token embeddings for discrete and epo):
    prompts: Prompts | None = None    # one row per restart (epo: per population member)
    frontier: Prompts | None = None   # epo: the non-dominated prompts (activation vs ce)
    bar: Bar | None = None            # the corpus's best windows at the same target
    start_ids: np.ndarray | None = None   # [rows, T] the token methods' first prompts

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
        out = pd.DataFrame({
            "restart": np.arange(len(self.final)), "initial": self.initial,
            "final": self.final, "gain": self.gain, "nearest_tokens": text.to_numpy(),
            "vector_norm": self.embeds.norm(dim=-1).mean(-1).numpy().astype(float),
            "moved": self.moved,
            "snapped_activation": self.gap.snapped,
            "snapped_percentile": self.gap.snapped_percentile(),
            "mean_top1_cosine": cos.mean().to_numpy(), "best_cosine": cos.max().to_numpy()})
        if self.prompts is None:
            return out
        p = self.prompts.frame()
        return out.assign(restart=p.restart, lam=p.lam, prompt=p.text, activation=p.activation,
                          ce=p.ce, survives_retokenize=p.survives_retokenize)

    def gap_frame(self) -> pd.DataFrame:
        """The gap meter's dots (source, item, activation), with the token methods' prompts
        and the corpus's best windows; continuous keeps its optimum and nearest tokens."""
        f = self.gap.frame()
        parts = [f] if self.prompts is None else [f[f.source == GAP_SOURCES[4]]]
        extra = [(GAP_SOURCES[2], self.prompts), (GAP_SOURCES[3], self.bar.best if self.bar else None)]
        parts += [pd.DataFrame({"source": name, "item": np.arange(len(p)),
                                "activation": p.activation}) for name, p in extra if p is not None]
        return pd.concat(parts, ignore_index=True)

    def numbers(self) -> dict:
        """The run's numbers as plain JSON data (the body of `to_record`)."""
        out = {"steps_done": self.steps_done, "seconds": round(self.seconds, 3),
               "restarts": self.per_restart().to_dict(orient="records"),
               "gap_meter": self.gap.summary(), "best_cosine": self.best_cosine,
               "token_norm": self.token_norm,
               "nearest": self.nearest.to_dict(orient="records")}
        if self.prompts is not None:
            out["prompts"] = self.prompts.records()
        if self.frontier is not None:
            out["frontier"] = self.frontier.records()
        if self.bar is not None:
            out["bar"] = {**self.bar.summary(), "windows": self.bar.windows().to_dict(orient="records"),
                          "contexts": self.bar.contexts.to_dict(orient="records")}
        return out

    def to_record(self) -> dict:
        """Everything needed to reproduce and read the run (no tensors)."""
        return record("actmax", self.config, self.model, **self.numbers())

    def frames(self) -> dict[str, pd.DataFrame]:
        out = {"history": self.history, "nearest": self.nearest, "restarts": self.per_restart(),
               "gap": self.gap_frame()}
        for name, p in (("prompts", self.prompts), ("frontier", self.frontier)):
            if p is not None:
                out[name] = p.frame()
        if self.bar is not None:
            out |= {"bar_windows": self.bar.windows(), "bar_contexts": self.bar.contexts}
        return out

    def brief(self) -> dict:
        """The run for people, one `key: value` line each (the CLI's default output)."""
        per = self.per_restart()
        return {"model": self.model, "hook": self.config.hook, "index": self.config.index,
                "seconds": round(self.seconds, 2), "best_cosine": round(self.best_cosine, 4),
                "initial": per.initial.round(4).tolist(), "final": per.final.round(4).tolist(),
                "gain": per.gain.round(2).tolist(), "nearest_tokens": per.nearest_tokens.tolist(),
                "gap_meter": {k: round(v, 4) for k, v in self.gap.summary().items()},
                **self._brief_tokens()}

    def _brief_tokens(self) -> dict:
        out = {"method": self.config.method} if self.config.method != "continuous" else {}
        if self.prompts is not None:
            p = self.prompts
            out |= {"prompts": list(p.text), "prompt_activation": p.activation.round(4).tolist(),
                    "prompt_ce": p.ce.round(3).tolist(), "survives_retokenize": p.survives.tolist()}
        if self.frontier is not None:
            out["frontier"] = [(round(float(a), 3), round(float(c), 3), t) for a, c, t in
                               zip(self.frontier.activation, self.frontier.ce, self.frontier.text)]
        if self.bar is not None:
            b = self.bar.summary()
            out |= {"corpus_best": round(b["best"], 4), "corpus_best_text": b["best_text"],
                    "corpus": f"{b['n_windows']:,} windows of {self.config.n_tokens} tokens; "
                              f"{b['corpus']}"}
        return out


def summarize(lm: LabModel, cfg: ActMaxConfig, embeds: torch.Tensor, history: pd.DataFrame,
              seconds: float = 0.0, start: torch.Tensor | None = None,
              bar: Bar | None = None) -> ActMaxResult:
    """Decode and gap-meter optimized embeddings (continuous); also a stopped run's result.

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
    return ActMaxResult(cfg, lm.name, embeds, start, history.reset_index(drop=True), near, gap,
                        seconds, int(history.step.max()), _token_norm(lm), bar=bar)


def _token_norm(lm: LabModel) -> float:
    return float(lm.W_E.detach().float().norm(dim=-1).mean())


def summarize_tokens(lm: LabModel, cfg: ActMaxConfig, rec: Recorder,
                     bar: Bar | None = None) -> ActMaxResult:
    """A token method's Recorder as a result: its prompts fed through the model again."""
    from lab.actmax.epo import row_lams, row_restarts
    st = rec.state()
    if st["history"].empty:
        raise ValueError("nothing was computed yet: no step has run")
    goal = target_of(lm, cfg)
    prompts = measure(lm, goal, st["ids"], row_restarts(cfg), row_lams(cfg))
    W = lm.W_E.detach().cpu()
    embeds, start = ((st["embeds"], st["start"]) if cfg.method == "pez"
                     else (W[st["ids"]], W[st["start_ids"]]))
    embeds, start = embeds.detach().cpu(), start.detach().cpu()
    gap = gap_meter(lm, cfg, embeds, prompts.activation, snapped_ids=torch.as_tensor(prompts.ids))
    frontier = None if st["frontier"] is None else measure(lm, goal, st["frontier"])
    return ActMaxResult(cfg, lm.name, embeds, start, st["history"], nearest_tokens(lm, embeds),
                        gap, st["seconds"], st["steps_done"], _token_norm(lm), prompts, frontier, bar,
                        np.asarray(st["start_ids"]))


def result_of(lm: LabModel, cfg: ActMaxConfig, rec: Recorder, bar: Bar | None = None) -> ActMaxResult:
    """Any method's Recorder (finished or stopped) as a result."""
    if cfg.tokens:
        return summarize_tokens(lm, cfg, rec, bar)
    st = rec.state()
    if st["embeds"] is None:
        raise ValueError("nothing was computed yet: no step has run")
    return summarize(lm, cfg, st["embeds"], st["history"], st["seconds"], st["start"], bar)


def search(lm: LabModel, cfg: ActMaxConfig, goal, on_progress: OnProgress | None = None,
           start: torch.Tensor | None = None) -> Recorder:
    """Run `cfg.method` on target `goal`; its Recorder (history, embeddings, prompts)."""
    from lab.actmax.discrete import discrete
    from lab.actmax.epo import epo
    from lab.actmax.pez import pez
    if cfg.method in ("continuous", "pez"):
        return (ascend if cfg.method == "continuous" else pez)(lm, cfg, goal, on_progress, start)
    if start is not None:
        raise ValueError(f"a start of embeddings is for continuous and pez, not {cfg.method}")
    return (discrete if cfg.method == "discrete" else epo)(lm, cfg, goal, on_progress)


def maximize(lm: LabModel, cfg: ActMaxConfig, on_progress: OnProgress | None = None,
             start: torch.Tensor | None = None) -> ActMaxResult:
    """Optimize by `cfg.method`, turn the answer into real tokens and measure them, then the
    corpus's bar. `start` [R, T, D] overrides the seeded starts of continuous and pez."""
    goal = target_of(lm, cfg)
    rec = search(lm, cfg, goal, on_progress, start)
    check_finite(cfg, rec.history)
    res = result_of(lm, cfg, rec, corpus_bar(lm, cfg, goal, on_progress, partial=rec))
    check_finite(cfg, res.history, res.prompts, res.best_cosine)
    return res


def blame(cfg: ActMaxConfig) -> str:
    """The settings that can make a run's numbers overflow, in words with their values."""
    if cfg.method == "continuous":
        return f"the learning rate lr ({cfg.lr:g}) or the L2 weight l2 ({cfg.l2:g})"
    if cfg.method == "pez":
        return f"the learning rate lr ({cfg.lr:g}) or the fluency weight lam ({cfg.lam:g})"
    if cfg.method == "discrete":
        return f"the fluency weight lam ({cfg.lam:g})"
    return "the fluency weights epo_lams (" + ", ".join(f"{v:g}" for v in cfg.epo_lams) + ")"


def check_finite(cfg: ActMaxConfig, history: pd.DataFrame, prompts: Prompts | None = None,
                 best_cosine: float = 0.0) -> None:
    """Raise ValueError (one sentence naming the setting) when a number of the run is nan or
    infinite: a NaN result is never returned as if it were one."""
    cols = [c for c in ("target", "loss", "ce") if c in history]
    values = history[cols].to_numpy(dtype=float)
    if cfg.method != "continuous" and "ce" in cols and not cfg.fluent:
        values = history[[c for c in cols if c != "ce"]].to_numpy(dtype=float)   # ce: nan = not computed
    bad = ~np.isfinite(values).all(1) if len(values) else np.zeros(0, bool)
    if prompts is not None and not np.isfinite(prompts.activation).all():
        bad = np.append(bad, True)
    if bad.any() or not np.isfinite(best_cosine):
        first = history.step.to_numpy()[bad.argmax()] if bad[:len(history)].any() else "the end"
        raise ValueError(f"the run's numbers went non-finite (nan or infinity) at step {first}: "
                         f"lower {blame(cfg)}")


def run(lm: LabModel, cfg: ActMaxConfig, on_progress: OnProgress | None = None) -> ActMaxResult:
    """The registry's entry point: `maximize` with the config's seeded starts."""
    return maximize(lm, cfg, on_progress)


def partial_result(lm: LabModel, cfg: ActMaxConfig, partial: Recorder) -> ActMaxResult:
    """What a stopped run computed (the Recorder of its last Progress), as a result; the bar
    when it was computed before (a Stop does not start a corpus scan)."""
    return result_of(lm, cfg, partial, cached_bar(lm, cfg))
