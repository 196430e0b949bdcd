"""Time before Run for every experiment: a cost model of its config, priced with rates
measured on this machine (the laminar page's approach, lab.laminar.cost, for all pages).

    rates = measure(lm)                  forward GFLOP/s of this model here (a short batched
                                         forward), measured once per model and device
    est = estimate(lm, "actmax", cfg)    Estimate(seconds, parts, basis)

The token methods of activation maximization (and pez) are priced by their own measured step:
`step_seconds` times short runs of the same config (1 and 4 steps) and takes the
difference, so the per-step cost includes every overhead the model leaves out (Python, the
KV-cache bookkeeping, bfloat16 ranking); it is cached per config (steps and seed aside).
Everything else is FLOPs / the measured forward rate (plus, for an SAE, training FLOPs at a
measured SAE rate), as lab.laminar.cost does.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import torch

from lab.models import LabModel

_LOCK = threading.Lock()
_RATES: dict[tuple, float] = {}
_STEPS: dict[tuple, tuple[float, float]] = {}


@dataclass(frozen=True)
class Estimate:
    """Seconds a run will take here, and what they are made of."""

    seconds: float
    parts: dict            # part -> seconds, e.g. {"steps": 12.1, "corpus bar": 3.0}
    basis: str             # in words: how the numbers were obtained

    def describe(self) -> str:
        from lab.experiment import format_duration
        parts = ", ".join(f"{k} {format_duration(v)}" for k, v in self.parts.items() if v >= 0.05)
        return f"about {format_duration(self.seconds)}" + (f" ({parts})" if parts else "")


# ---------------------------------------------------------------- rates

def block_flops(lm: LabModel) -> float:
    """FLOPs of one token through one block (2 per weight; attention over a few keys aside)."""
    body = lm.n_params - lm.W_E.numel()
    head = 0 if lm.model.config.tie_word_embeddings else lm.W_E.numel()
    return 2.0 * max(body - head, 1) / lm.n_layers


def head_flops(lm: LabModel) -> float:
    """FLOPs of the LM head for one position."""
    return 2.0 * lm.W_E.numel()


def forward_rate(lm: LabModel, batch: int = 64, tokens: int = 8) -> float:
    """GFLOP/s of a batched no-grad forward through the whole body (measured once per model
    and device; the second of two timings, the first warms up)."""
    key = (id(lm.model), lm.name, str(lm.device), batch, tokens, torch.get_num_threads())
    with _LOCK:
        if key in _RATES:
            return _RATES[key]
    ids = torch.randint(0, lm.vocab_size, (batch, tokens), generator=torch.Generator().manual_seed(0))
    base = getattr(lm.model, lm.model.base_model_prefix, lm.model)
    seconds = []
    with torch.no_grad():
        for _ in range(2):
            t0 = time.perf_counter()
            base(input_ids=ids.to(lm.device))
            seconds.append(time.perf_counter() - t0)
    rate = batch * tokens * lm.n_layers * block_flops(lm) / max(seconds[-1], 1e-6) / 1e9
    with _LOCK:
        _RATES[key] = rate
    return rate


def forward_seconds(lm: LabModel, tokens: float, blocks: float | None = None,
                    head_positions: float = 0.0) -> float:
    """Seconds of no-grad forwards over `tokens` tokens through `blocks` blocks (all by
    default) and the LM head on `head_positions` positions, at the measured rate."""
    blocks = lm.n_layers if blocks is None else blocks
    flops = tokens * blocks * block_flops(lm) + head_positions * head_flops(lm)
    return flops / 1e9 / forward_rate(lm)


# ---------------------------------------------------------------- activation maximization

def step_seconds(lm: LabModel, cfg) -> tuple[float, float]:
    """(seconds per step, fixed seconds) of an ActMaxConfig's run here, from short runs of
    the same config (1 and 4 steps, no corpus bar): the fixed part is everything but the
    steps (decoding, measuring the answer, the gap meter). Cached per config."""
    from lab.actmax.result import maximize
    probe = dataclasses.replace(cfg, steps=1, corpus_top=0, seed=0, patience=0)
    key = (id(lm.model), lm.name, str(lm.device), probe, torch.get_num_threads())
    with _LOCK:
        if key in _STEPS:
            return _STEPS[key]
    times = []
    for steps in (1, 1, 4, 1):                  # the first run warms up (allocators, tokens)
        t0 = time.perf_counter()
        maximize(lm, dataclasses.replace(probe, steps=steps))
        times.append(time.perf_counter() - t0)
    one = min(times[1], times[3])               # a neighbour's burst inflates one timing
    per, extra = max((times[2] - one) / 3, 1e-4), 3
    if times[2] - one < 0.2:                    # cheap steps: the difference is timing noise,
        extra = min(int(0.3 / per) + 3, 400)    # so time ~0.3 s of steps instead
        t0 = time.perf_counter()
        maximize(lm, dataclasses.replace(probe, steps=1 + extra))
        per = max((time.perf_counter() - t0 - one) / extra, 1e-5)
    out = (per, max(one - per, 0.0))
    with _LOCK:
        _STEPS[key] = out
    return out


def bar_seconds(lm: LabModel, cfg) -> float:
    """The corpus bar, measured at its own shapes: one batch of the corpus's distinct
    n_tokens windows (lab.actmax.bar.WINDOW_BATCH) and 16 of its 64-token windows (the
    context scan), each timed here and scaled to the whole corpus. 0 when cached."""
    from lab.actmax.bar import WINDOW_BATCH, cached_bar, short_windows
    from lab.actmax.target import evaluate, target_of
    from lab.scan import scan_corpus
    if cfg.corpus_top == 0 or cached_bar(lm, cfg) is not None:
        return 0.0
    key = (id(lm.model), lm.name, "bar", cfg.hook, cfg.index, cfg.n_tokens, cfg.sae,
           torch.get_num_threads())
    with _LOCK:
        if key in _RATES:
            return _RATES[key]
    corpus, goal = scan_corpus(lm), target_of(lm, cfg)
    ids, _ = short_windows(corpus, cfg.n_tokens)
    total = 0.0
    for part, batch in ((ids, WINDOW_BATCH), (corpus.ids, 16)):
        sample = part[:batch]
        evaluate(lm, goal, sample[:2], batch=batch)             # warm-up
        t0 = time.perf_counter()
        evaluate(lm, goal, sample, batch=batch)
        total += (time.perf_counter() - t0) * len(part) / max(len(sample), 1)
    with _LOCK:
        _RATES[key] = total
    return total


def actmax_estimate(lm: LabModel, cfg) -> Estimate:
    """An ActMaxConfig's run: its steps at the measured step cost, the fixed part (decoding,
    measuring the answer, the gap meter) as measured, and the corpus bar."""
    per, fixed = step_seconds(lm, cfg)
    parts = {"steps": cfg.steps * per, "measuring": fixed, "corpus bar": bar_seconds(lm, cfg)}
    return Estimate(sum(parts.values()), parts,
                    f"{cfg.steps} steps x {per * 1000:.0f} ms (measured here on short runs of this "
                    f"config), the corpus bar timed on a batch of its windows")


def repro_estimate(lm: LabModel, cfg) -> Estimate:
    """A ReproConfig: its activation-maximization run (the statistics cost ~nothing)."""
    return actmax_estimate(lm, cfg.actmax)


# ---------------------------------------------------------------- the other experiments

def _text_tokens(lm: LabModel, text: str, default_text, cap: int | None) -> int:
    n = len(lm.tokenizer(text or default_text(), add_special_tokens=False)["input_ids"])
    return min(n, cap) if cap else n


def text_estimate(lm: LabModel, cfg, default_text, cap: int | None) -> Estimate:
    """One forward of a page's text through the whole model (hidden states, lens)."""
    n = _text_tokens(lm, cfg.text, default_text, cap)
    s = forward_seconds(lm, n, None, n)
    return Estimate(s, {"forward": s}, f"{n} tokens at {forward_rate(lm):.0f} GFLOP/s")


def sae_text_estimate(lm: LabModel, cfg) -> Estimate:
    """SAE on a text: one forward of the text, then the SAE's training FLOPs
    (lab.laminar.cost.sae_flops) at the laminar page's measured SAE rate."""
    from lab.laminar.config import LaminarConfig
    from lab.laminar.cost import measure_rates, sae_flops
    from lab.sae_text import default_text
    n = _text_tokens(lm, cfg.text, default_text, None)
    _, s_rate = _sae_rate(lm, cfg.sae, LaminarConfig, measure_rates)
    latents = cfg.sae.latents_for(lm.d_model)
    train = sae_flops(n, lm.d_model, latents, cfg.sae.epochs, cfg.sae.val_fraction) / 1e9 / s_rate
    parts = {"forward": forward_seconds(lm, n), "SAE training": train}
    return Estimate(sum(parts.values()), parts, f"{n} tokens; SAE at {s_rate:.0f} GFLOP/s")


def _sae_rate(lm, sae, LaminarConfig, measure_rates):
    key = (id(lm.model), "sae", sae, torch.get_num_threads())
    with _LOCK:
        if key in _RATES:
            return _RATES[key]
    rates = measure_rates(lm, LaminarConfig(sae=sae))
    with _LOCK:
        _RATES[key] = rates
    return rates


def laminar_estimate(lm: LabModel, cfg) -> Estimate:
    """The laminar page's own model (lab.laminar.cost)."""
    from lab.laminar.cost import estimate as laminar
    e = laminar(lm, cfg)
    parts = {"forward passes": e.capture_seconds, "SAEs": e.n_layers * e.layer_seconds}
    return Estimate(e.total_seconds, parts, f"lab.laminar.cost: {e.n_layers} layers")


def feature_estimate(lm: LabModel, cfg) -> Estimate:
    """One latent's evidence: the corpus scan (every source's tokens through the model), the
    causal text's clean and edited forwards for the latent and its controls."""
    from lab.scan import scan_corpus
    corpus = scan_corpus(lm)
    causal = min(cfg.max_tokens, 512) * (2 + cfg.n_control)
    parts = {"corpus scan": forward_seconds(lm, corpus.n_tokens),
             "causal check": forward_seconds(lm, causal, None, causal)}
    return Estimate(sum(parts.values()), parts, f"{corpus.n_tokens:,} corpus tokens")


def estimate(lm: LabModel, experiment: str, cfg) -> Estimate:
    """Time before Run of registry experiment `experiment` with config `cfg`, on this machine."""
    if experiment == "actmax":
        return actmax_estimate(lm, cfg)
    if experiment == "repro":
        return repro_estimate(lm, cfg)
    if experiment == "laminar":
        return laminar_estimate(lm, cfg)
    if experiment in ("sae", "sae_text"):
        return sae_text_estimate(lm, cfg)
    if experiment == "feature":
        return feature_estimate(lm, cfg)
    if experiment in ("hidden", "hidden_states", "lens"):
        from lab.hidden import default_text
        return text_estimate(lm, cfg, default_text, min(cfg.max_tokens or lm.n_ctx, lm.n_ctx))
    raise ValueError(f"no cost model for experiment {experiment!r}")
