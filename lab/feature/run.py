"""run(lm, cfg, on_progress) -> FeatureResult, in four stages:

    1. the SAE (loaded, checked against the model); the corpus: the config's sources minus
       what the SAE was trained on (lab.corpus.sources.held_out); the selection text (the
       SAE's training text when known) and the causal text (held-out by default); the latent,
       given or picked on the selection text
    2. the held-out corpus scan (batched forwards stopping after the SAE's block): the
       latent's values per window and every latent's density and mean firing activation
    3. controls matched to the target on those two numbers; the causal check: the SAE's
       reconstruction alone, then the edit of the latent and of each control, one forward each
    4. with include_training, the left-out training text scanned for a separate table

Every progress event from stage 2 on carries the run's `State`; `partial_result` turns it
into a result (what a Stop keeps: the windows scanned and the causal rows done so far).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from lab import hooks
from lab.corpus.sources import Source
from lab.experiment import report
from lab.feature import causal
from lab.feature.config import FeatureConfig
from lab.feature.examples import WINDOW_LEN, Scan, examples, run_scan
from lab.feature.output import effect_table, output_effect
from lab.feature.result import FeatureResult
from lab.feature.splice import Edit, logits, patch_for, splice
from lab.feature.store import sae_folder
from lab.feature.texts import Texts, bos_token, choose_texts, pick_latent
from lab.sae.load import load_sae
from lab.sae.saelens import LoadedSAE, check_fits
from lab.sae.stats import data_warning
from lab.scan import Corpus, scan_corpus

@dataclass
class State:
    """A feature run so far."""

    cfg: FeatureConfig
    loaded: LoadedSAE
    texts: Texts
    latent: int
    picked: str
    base: causal.TextRun
    target_ids: list[int]
    at: np.ndarray                  # [pos]: the next token begins a target word
    output: pd.DataFrame
    scan: Scan
    train_scan: Scan | None = None
    controls: list[int] = field(default_factory=list)
    effects: list[dict] = field(default_factory=list)
    kl: list[pd.DataFrame] = field(default_factory=list)
    moved: pd.DataFrame | None = None
    recon_kl: float | None = None
    causal_seconds: float = 0.0
    scan_started: float | None = None
    scan_seconds: float | None = None


def run(lm, cfg: FeatureConfig, on_progress=None) -> FeatureResult:
    report(on_progress, 0, 1, "step", "Loading the SAE" + ("" if cfg.sae not in ("", ":palinka")
           else " (a built-in SAE: trained on first use, then kept)") + "...")
    loaded = load_sae(sae_folder(lm, cfg.sae, cfg.seed, on_progress))
    state = prepare(lm, cfg, loaded)
    n_causal = 2 + cfg.n_control
    n_win = state.scan.corpus.ids.shape[0]
    n_train = state.train_scan.corpus.ids.shape[0] if state.train_scan else 0
    total = 1 + n_win + n_causal + n_train
    step = lambda done, msg: report(on_progress, done, total, "step", msg, state)  # noqa: E731
    bos = bos_token(lm, loaded)
    state.scan_started = time.perf_counter()
    run_scan(lm, loaded, state.scan, lambda p: step(1 + p.done, p.message), bos)
    state.scan_seconds = time.perf_counter() - state.scan_started
    density, mean_active = state.scan.latent_stats()
    state.controls = causal.match_controls(density, mean_active, state.latent, cfg.n_control, cfg.seed)
    step(1 + n_win, "Causal check: the SAE's reconstruction alone...")
    t0 = time.perf_counter()
    for i, (role, edit) in enumerate(_edits(state), start=1):
        _causal_step(lm, state, role, edit, density, mean_active)
        state.causal_seconds = time.perf_counter() - t0
        step(1 + n_win + i, f"Causal check: {i} of {1 + len(state.controls)} edited forwards")
    if state.train_scan is not None:
        run_scan(lm, loaded, state.train_scan,
                 lambda p: step(1 + n_win + n_causal + p.done, "Training text: " + p.message), bos)
    return partial_result(lm, cfg, state)


def prepare(lm, cfg: FeatureConfig, loaded: LoadedSAE) -> State:
    """Stage 1: every model-dependent check before the heavy work, the texts, the latent."""
    check_fits(loaded, lm)
    if cfg.latent is not None and cfg.latent >= loaded.n_latents:
        raise ValueError(f"latent {cfg.latent} is out of range: the SAE has {loaded.n_latents} "
                         f"latents (0..{loaded.n_latents - 1})")
    loaded.sae.to(lm.device)
    start = _start(lm, cfg, loaded)
    texts = choose_texts(cfg, loaded)
    base = text_run(lm, loaded, texts.causal, cfg.max_tokens, start)
    nxt = causal.word_starts(texts.causal, base.spans, cfg.target)
    occurring = base.ids[0].cpu().numpy()[nxt].tolist()
    at = np.zeros(len(nxt), dtype=bool)
    at[:-1] = nxt[1:]                       # position p predicts token p + 1
    target_ids = causal.target_token_ids(lm.tokenizer, cfg.target, occurring)
    if cfg.latent is not None:
        latent, picked = cfg.latent, ""
    else:
        latent, picked = pick_latent(lm, loaded, texts, cfg, start, base)
    corpus = _corpus(lm, texts.kept, "held-out")
    train = _corpus(lm, texts.left, "training") if cfg.include_training and texts.left else None
    effect = output_effect(lm, loaded.hook, loaded.sae.decoder_weight[latent])
    return State(cfg, loaded, texts, latent, picked, base, target_ids, at,
                 effect_table(lm.tokenizer, effect, set(target_ids)),
                 Scan(corpus, latent, loaded.n_latents, start > 0),
                 Scan(train, latent, loaded.n_latents, start > 0) if train is not None else None)


def _start(lm, cfg: FeatureConfig, loaded: LoadedSAE) -> int:
    """The first position edited and counted: 1 after a BOS or with skip_first."""
    return int(cfg.skip_first or bos_token(lm, loaded) is not None)


def _corpus(lm, sources: list[Source], what: str) -> Corpus:
    try:
        return scan_corpus(lm, texts={s.name: s.text for s in sources}, window_len=WINDOW_LEN)
    except ValueError:
        raise ValueError(f"the {what} corpus has no text of {WINDOW_LEN} tokens or more: tick "
                         "more corpus sources or add extra text") from None


# ---------------------------------------------------------------- forwards over the texts

@torch.no_grad()
def text_run(lm, loaded: LoadedSAE, text: str, max_tokens: int, start: int) -> causal.TextRun:
    bos = bos_token(lm, loaded)
    enc = lm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, spans = list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]
    if bos is not None:
        ids, spans = [bos, *ids], [(0, 0), *spans]
    n = min(len(ids), max_tokens, int(lm.n_ctx))
    if n < start + 2:
        raise ValueError(f"the causal text has {len(ids)} tokens; the check needs at least "
                         f"{start + 2}: give a longer text")
    ids_t = torch.tensor([ids[:n]], dtype=torch.long, device=lm.device)
    point = resid_hook(lm, loaded.hook)
    with hooks.capture(lm, list(dict.fromkeys([loaded.hook, point])), detach=True) as cache:
        out = logits(lm, ids_t)
    acts = cache[loaded.hook][0].float()
    return causal.TextRun(ids_t, tuple(lm.tokenizer.decode([i]) for i in ids[:n]),
                          tuple(spans[:n]), torch.log_softmax(out, -1), acts,
                          loaded.sae.encode(acts), len(ids), cache[point][0].float())


def resid_hook(lm, hook: str) -> str:
    """The residual stream an edit at `hook` joins: the output of the hook's block."""
    point = hooks.parse_hook(lm, hook)
    return hooks.EMBED if point.kind == "embed" else hooks.resid_post(point.layer)


# ---------------------------------------------------------------- the causal check

def _edits(state: State):
    cfg = state.cfg
    yield "reconstruct", Edit("reconstruct")
    yield "target", Edit(cfg.mode, state.latent, cfg.alpha)
    for c in state.controls:
        yield "control", Edit(cfg.mode, c, cfg.alpha)


@torch.no_grad()
def _edited(lm, state: State, edit: Edit) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, residual stream after the SAE's block) with the edit spliced in."""
    point = resid_hook(lm, state.loaded.hook)
    start = _start(lm, state.cfg, state.loaded)
    with splice(lm, state.loaded.hook, patch_for(state.loaded, edit, start > 0)):
        with hooks.capture(lm, [point], detach=True) as cache:
            out = logits(lm, state.base.ids)
    return out, cache[point][0].float()


def _causal_step(lm, state: State, role: str, edit: Edit, density, mean_active) -> None:
    base, start = state.base, _start(lm, state.cfg, state.loaded)
    out, resid = _edited(lm, state, edit)
    e = causal.effect(base, out, state.target_ids, start, state.at)
    if role == "reconstruct":
        state.recon_kl = e["mean_kl"]
        return
    size = causal.edit_size(base.resid, resid, causal.edited_positions(base.z, edit, start))
    corpus = {"density": float(density[edit.latent]), "mean_active": float(mean_active[edit.latent])}
    state.effects.append(causal.summary_row(edit.latent, role, e, size, base.z, start, corpus))
    state.kl.append(causal.kl_rows(edit.latent, role, e, base.tokens, base.z))
    if role == "target":
        state.moved = causal.moved_tokens(lm.tokenizer, e)


# ---------------------------------------------------------------- the result

def partial_result(lm, cfg: FeatureConfig, state: State) -> FeatureResult:
    """The result of the run so far (all of it, or up to a Stop)."""
    corpus = state.scan.corpus
    scan_s = state.scan_seconds if state.scan_seconds is not None else (
        time.perf_counter() - state.scan_started if state.scan_started else 0.0)
    start = _start(lm, cfg, state.loaded)
    ex = examples(lm, state.scan, cfg.k, cfg.radius, start > 0, cfg.target)
    train_top = None
    if state.train_scan is not None and state.train_scan.windows_done:
        train_top = examples(lm, state.train_scan, cfg.k, cfg.radius, start > 0, cfg.target)["top"]
    effects = pd.DataFrame(list(state.effects))
    r = causal.ranks(effects, cfg.mode) if len(effects) else {}
    return FeatureResult(
        config=cfg, model=lm.name, sae_source=state.loaded.source,
        sae_info=state.loaded.describe(), hook=state.loaded.hook,
        n_latents=state.loaded.n_latents, latent=state.latent, picked=state.picked,
        output=state.output, effects=effects,
        kl=pd.concat(list(state.kl), ignore_index=True) if state.kl else pd.DataFrame(),
        moved=state.moved if state.moved is not None else pd.DataFrame(),
        recon_kl=state.recon_kl, text_tokens=int(state.base.ids.shape[1]),
        text_cut=state.base.n_text_tokens > state.base.ids.shape[1],
        corpus={"texts": len(corpus.names), "tokens": corpus.n_tokens,
                "windows": int(corpus.ids.shape[0]), "window_len": int(corpus.ids.shape[1]),
                "names": tuple(corpus.names), "sources": _source_rows(lm, state.texts),
                "notes": tuple(state.texts.notes)},
        texts={"select_from": state.texts.select_from, "causal_from": state.texts.causal_from,
               "independent": state.texts.independent},
        target_tokens=tuple(lm.tokenizer.decode([i]) for i in state.target_ids),
        controls=_matching(state, effects), ranks=r,
        verdict=causal.verdict(r, len(state.controls)) if len(effects) else "",
        warnings=tuple(_warnings(state.loaded, ex.get("nmse"))),
        examples=ex, train_examples=train_top, scan_seconds=scan_s,
        causal_seconds=state.causal_seconds)


def _source_rows(lm, texts: Texts) -> tuple[dict, ...]:
    rows = [{**s.record(lm.tokenizer), "role": "held out"} for s in texts.kept]
    rows += [{**s.record(lm.tokenizer), "role": "left out: the SAE was trained on it"} for s in texts.left]
    return tuple(rows)


def _matching(state: State, effects: pd.DataFrame) -> dict:
    """How alike the controls are to the target: the medians of their corpus numbers."""
    if not len(effects) or not (effects["role"] == "control").any():
        return {"n": 0}
    t = effects[effects["role"] == "target"].iloc[0]
    c = effects[effects["role"] == "control"]
    return {"n": int(len(c)), "target_density": float(t["corpus_density"]),
            "median_density": float(c["corpus_density"].median()),
            "target_mean_active": float(t["corpus_mean_active"]),
            "median_mean_active": float(c["corpus_mean_active"].median()),
            "max_density_ratio": float((c["corpus_density"] / t["corpus_density"]).apply(
                lambda v: max(v, 1 / v)).max()),
            "max_activation_ratio": float((c["corpus_mean_active"] / t["corpus_mean_active"]).apply(
                lambda v: max(v, 1 / v)).max())}


def _warnings(loaded: LoadedSAE, nmse: float | None) -> list[str]:
    out = []
    if loaded.n_train_tokens:
        w = data_warning(loaded.n_train_tokens, loaded.n_latents)
        if w:
            out.append(w)
    if loaded.training_data is None:
        out.append("The SAE's training data is unknown, so the lab cannot keep it out of the "
                   "corpus: its top examples may include text it was trained on.")
    if nmse is not None and nmse > 0.5:
        out.append(f"On the held-out corpus the SAE misses {nmse:.0%} of the activation's "
                   "variance (nMSE): its latents describe this text poorly.")
    return out
