"""`run(lm, cfg)`: the corpus, its windows (or what fits), the sweep, and the result."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import pandas as pd
import torch

from lab.corpus import CorpusTooShort, article_for, fit_windows, tokenize
from lab.experiment import OnProgress, Progress, record, report
from lab.laminar.capture import check_context
from lab.laminar.config import LaminarConfig
from lab.laminar.shape import describe_shape, shape_summary
from lab.laminar.store import RunFolder
from lab.laminar.train import sweep
from lab.models import LabModel


@dataclass(eq=False)
class LaminarResult:
    """One model's profile; a stopped run's has the finished layers only."""

    model: str
    config: LaminarConfig     # as run: with `fit`, the windows that fitted
    rows: pd.DataFrame        # one row per finished layer (lab.laminar.COLUMNS)
    corpus: dict              # the article's metadata (lab.corpus.Article.meta) and its tokens
    n_layers: int             # the model's layers, whether or not all were profiled
    wall_seconds: float       # the sweep: forward passes and SAE training
    threads: int              # torch CPU threads during the run
    fitted: bool = False      # the corpus was too short and `fit` shrank the windows
    finished: bool = True
    resumed: tuple[int, ...] = ()   # layers read back from the run folder, not trained here

    @property
    def shape(self) -> pd.DataFrame:
        return shape_summary(self.rows)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"layers": self.rows, "shape": self.shape}

    def to_record(self) -> dict:
        """Rows plus everything needed to reproduce them (config with its seed, corpus)."""
        rec = record("laminar", self.config, self.model, corpus=self.corpus,
                     n_layers=self.n_layers, fitted=self.fitted, finished=self.finished,
                     wall_seconds=round(self.wall_seconds, 2), threads=self.threads,
                     resumed_layers=list(self.resumed), rows=_plain(self.rows),
                     shape=_plain(self.shape))
        return json.loads(json.dumps(rec))   # tuples as lists: the record equals its JSON

    def brief(self) -> dict:
        cfg, c = self.config, self.corpus
        out = {"model": self.model,
               "corpus": f"{c['title']} ({c['source']}), {c['tokens']:,} tokens",
               "windows": f"{cfg.n_windows} x {cfg.window_len}" + (" (what fits)" if self.fitted else ""),
               "sae": f"{cfg.sae.activation}, {cfg.sae.expansion}x latents, {cfg.sae.epochs} epochs"}
        for r in self.rows.to_dict(orient="records"):
            out[f"layer {r['layer']}"] = (f"density {r['density']:.4f}, nmse {r['nmse']:.4f}, "
                                          f"held-out {r['val_nmse']:.4f}, dead {r['dead_fraction']:.1%}, "
                                          f"{r['seconds']:.1f} s")
        for s in self.shape.to_dict(orient="records"):
            out["shape"] = describe_shape(s)
        if cfg.folder:
            out["run folder"] = cfg.folder + (f" ({len(self.resumed)} layers resumed)"
                                              if self.resumed else "")
        return out | {"layers": f"{len(self.rows)} of {self.n_layers}",
                      "wall_seconds": round(self.wall_seconds, 2), "threads": self.threads}


def _plain(frame: pd.DataFrame) -> list[dict]:
    """Records of plain Python values, NaN as None (JSON without special cases)."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def corpus_windows(token_ids: torch.Tensor, cfg: LaminarConfig) -> tuple[LaminarConfig, torch.Tensor]:
    """The windows `cfg` asks for; with `cfg.fit` and a corpus too short for them, the first
    shape that fits, with `cfg` changed to it. Else CorpusTooShort, which lists what fits."""
    n, T, windows = fit_windows(token_ids, cfg.n_windows, cfg.window_len, cfg.seed, cfg.fit)
    return replace(cfg, n_windows=n, window_len=T), windows


def _prepare(lm: LabModel, cfg: LaminarConfig) -> tuple[LaminarConfig, torch.Tensor, dict]:
    """The model-dependent checks, then the corpus and its windows: (config as run, windows
    [n_windows, window_len], the corpus' metadata)."""
    check_context(lm, cfg.window_len)
    cfg.layers_of(lm)
    cfg.sae.latents_for(lm.d_model)   # k <= latents
    if not cfg.ray:
        cfg.device_of(lm)             # a Ray cluster is checked when the sweep joins it
    article = article_for(cfg.url, cfg.text)
    ids = tokenize(lm.tokenizer, article.text)
    try:
        ran, windows = corpus_windows(ids, cfg)
    except CorpusTooShort as e:
        hint = "; fit (--fit) takes the first" if e.offers and not cfg.fit else ""
        raise CorpusTooShort(f"{str(e).rstrip('.')}{hint}.", e.offers) from None
    # a text not fetched has no download time: its loading time would make two records differ
    meta = {k: v for k, v in article.meta().items() if article.url or k != "fetched_at"}
    return ran, windows, meta | {"tokens": int(ids.numel())}


def run(lm: LabModel, cfg: LaminarConfig, on_progress: OnProgress | None = None) -> LaminarResult:
    """The profile of `lm` under `cfg`; Progress in layers, its partial a LaminarResult of the
    layers finished so far (what a Stop keeps)."""
    ran, windows, corpus = _prepare(lm, cfg)
    store = RunFolder.open(ran, lm.name, corpus, lm.n_layers)
    resumed = tuple(r["layer"] for r in store.rows()) if store else ()
    t0 = time.perf_counter()

    def result(rows: pd.DataFrame, finished: bool) -> LaminarResult:
        return LaminarResult(lm.name, ran, rows, corpus, lm.n_layers, time.perf_counter() - t0,
                             torch.get_num_threads(), fitted=ran != cfg, finished=finished,
                             resumed=resumed)

    def relay(p: Progress) -> None:
        report(on_progress, p.done, p.total, p.unit, p.message, result(p.partial, finished=False))

    return result(sweep(lm, windows, ran, relay if on_progress else None, store), finished=True)
