"""run(lm, cfg, on_progress) -> FeatureResult, in three stages:

    1. the SAE (loaded, checked against the model) and the causal text's unedited forward;
       the latent (given, or picked for the target words) and its density-matched controls
    2. the causal check: the SAE's reconstruction alone, then the edit of the latent and of
       each control, one forward each
    3. the corpus scan (batched forwards stopping after the SAE's block)

Every progress event from stage 2 on carries the run's `State`; `partial_result` turns it
into a result (what a Stop keeps: the causal rows done and the windows scanned so far).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from lab.experiment import report
from lab.feature import causal
from lab.feature.config import FeatureConfig
from lab.feature.examples import Scan, examples, run_scan
from lab.feature.output import effect_table, output_effect
from lab.feature.result import FeatureResult
from lab.feature.splice import Edit, base_run, edited_logits
from lab.feature.store import default_sae
from lab.sae.saelens import LoadedSAE, check_fits, load_sae
from lab.scan import scan_corpus
from lab.selectivity import word_mask


@dataclass
class State:
    """A feature run so far."""

    cfg: FeatureConfig
    loaded: LoadedSAE
    latent: int
    picked: str
    base: causal.TextRun
    target_ids: list[int]
    controls: list[int]
    output: pd.DataFrame
    scan: Scan
    effects: list[dict] = field(default_factory=list)
    kl: list[pd.DataFrame] = field(default_factory=list)
    moved: pd.DataFrame | None = None
    recon_kl: float | None = None
    causal_seconds: float = 0.0
    scan_started: float | None = None
    scan_seconds: float | None = None


def run(lm, cfg: FeatureConfig, on_progress=None) -> FeatureResult:
    report(on_progress, 0, 1, "step", "Loading the SAE" + ("" if cfg.sae else
           " (the default Palinka SAE: trained on first use, then kept)") + "...")
    state = prepare(lm, cfg, load_sae(cfg.sae or default_sae(lm, cfg.seed)))
    n_causal = 2 + len(state.controls)
    total = 1 + n_causal + state.scan.corpus.ids.shape[0]
    step = lambda done, msg: report(on_progress, done, total, "step", msg, state)  # noqa: E731
    step(1, "Causal check: the SAE's reconstruction alone...")
    t0 = time.perf_counter()
    for i, (role, edit) in enumerate(_edits(state), start=1):
        _causal_step(lm, state, role, edit)
        state.causal_seconds = time.perf_counter() - t0
        step(1 + i, f"Causal check: {i} of {n_causal} edited forwards")
    state.scan_started = time.perf_counter()
    run_scan(lm, state.loaded, state.scan,
             lambda p: step(1 + n_causal + p.done, p.message))
    state.scan_seconds = time.perf_counter() - state.scan_started
    return partial_result(lm, cfg, state)


def prepare(lm, cfg: FeatureConfig, loaded: LoadedSAE) -> State:
    """Stage 1: every model-dependent check before the heavy work, then the unedited text."""
    check_fits(loaded, lm)
    if cfg.latent is not None and cfg.latent >= loaded.n_latents:
        raise ValueError(f"latent {cfg.latent} is out of range: the SAE has {loaded.n_latents} "
                         f"latents (0..{loaded.n_latents - 1})")
    loaded.sae.to(lm.device)
    start = int(cfg.skip_first)
    base = text_run(lm, loaded, cfg, start)
    target_ids = causal.target_token_ids(lm.tokenizer, cfg.target)
    latent, picked = (cfg.latent, "") if cfg.latent is not None else pick_latent(base, cfg, start)
    controls = causal.pick_controls(base.z, latent, cfg.n_control, cfg.seed, start)
    effect = output_effect(lm, loaded.hook, loaded.sae.decoder_weight[latent])
    corpus = scan_corpus(lm, {"extra text (config)": cfg.corpus} if cfg.corpus else None)
    return State(cfg, loaded, latent, picked, base, target_ids, controls,
                 effect_table(lm.tokenizer, effect, set(target_ids)),
                 Scan(corpus, [latent, *controls]))


@torch.no_grad()
def text_run(lm, loaded: LoadedSAE, cfg: FeatureConfig, start: int) -> causal.TextRun:
    text = _text(cfg)
    enc = lm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, spans = list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]
    n = min(len(ids), cfg.max_tokens, int(lm.n_ctx))
    if n < start + 2:
        raise ValueError(f"the text has {len(ids)} tokens; the causal check needs at least {start + 2}")
    ids_t = torch.tensor([ids[:n]], dtype=torch.long, device=lm.device)
    logits, acts = base_run(lm, loaded.hook, ids_t)
    return causal.TextRun(ids_t, tuple(lm.tokenizer.decode([i]) for i in ids[:n]),
                          tuple(spans[:n]), torch.log_softmax(logits, -1), acts,
                          loaded.sae.encode(acts), len(ids))


def pick_latent(base: causal.TextRun, cfg: FeatureConfig, start: int) -> tuple[int, str]:
    """The latent whose mean activation on the target words' tokens exceeds its mean on the
    other tokens the most."""
    mask, _ = word_mask(_text(cfg), base.spans, cfg.target)
    mask[:start] = False
    others = ~mask
    others[:start] = False
    if not mask.any():
        raise ValueError("none of the target words occurs in the text, so no latent can be "
                         "picked for them: give a latent number")
    z = base.z.cpu()
    on, off = z[torch.as_tensor(mask)].mean(0), z[torch.as_tensor(others)].mean(0)
    latent = int(torch.argmax(on - off))
    return latent, (f"picked for the target words: mean activation {on[latent]:.3g} on their "
                    f"{int(mask.sum())} tokens, {off[latent]:.3g} on the other {int(others.sum())}")


def _text(cfg: FeatureConfig) -> str:
    from lab.sae_text import default_text
    return cfg.text or default_text()


def _edits(state: State):
    cfg = state.cfg
    yield "reconstruct", Edit("reconstruct")
    yield "target", Edit(cfg.mode, state.latent, cfg.alpha)
    for c in state.controls:
        yield "control", Edit(cfg.mode, c, cfg.alpha)


def _causal_step(lm, state: State, role: str, edit: Edit) -> None:
    base, start = state.base, int(state.cfg.skip_first)
    out = edited_logits(lm, state.loaded, base.ids, edit, state.cfg.skip_first)
    e = causal.effect(base, out, state.target_ids, start)
    if role == "reconstruct":
        state.recon_kl = e["mean_kl"]
        return
    size = causal.edit_size(state.loaded.sae, base, edit, start)
    state.effects.append(causal.summary_row(edit.latent, role, e, size, base.z, start))
    state.kl.append(causal.kl_rows(edit.latent, role, e, base.tokens, base.z))
    if role == "target":
        state.moved = causal.moved_tokens(lm.tokenizer, e)


def partial_result(lm, cfg: FeatureConfig, state: State) -> FeatureResult:
    """The result of the run so far (all of it, or up to a Stop)."""
    corpus = state.scan.corpus
    scan_s = state.scan_seconds if state.scan_seconds is not None else (
        time.perf_counter() - state.scan_started if state.scan_started else 0.0)
    ex = examples(lm, state.scan, cfg.k, cfg.radius, cfg.skip_first, cfg.target)
    return FeatureResult(
        config=cfg, model=lm.name, sae_source=state.loaded.source,
        sae_info=state.loaded.describe(), hook=state.loaded.hook,
        n_latents=state.loaded.n_latents, latent=state.latent, picked=state.picked,
        output=state.output, effects=pd.DataFrame(list(state.effects)),
        kl=pd.concat(list(state.kl), ignore_index=True) if state.kl else pd.DataFrame(),
        moved=state.moved if state.moved is not None else pd.DataFrame(),
        recon_kl=state.recon_kl, text_tokens=int(state.base.ids.shape[1]),
        text_cut=state.base.n_text_tokens > state.base.ids.shape[1],
        corpus={"texts": len(corpus.names), "tokens": corpus.n_tokens,
                "windows": int(corpus.ids.shape[0]), "window_len": int(corpus.ids.shape[1]),
                "names": tuple(corpus.names)},
        examples=ex, scan_seconds=scan_s, causal_seconds=state.causal_seconds)
