"""Which text does what in a feature run, and the latent picked on the selection text.

    choose_texts(cfg, loaded)   the held-out corpus (the sources minus what the SAE trained
                                on), the selection text (the SAE's training text when the lab
                                can rebuild it from its hashes) and the causal text
    pick_latent(...)            the latent whose mean activation on the target words' tokens
                                of the selection text exceeds its mean on the others the most
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from lab import hooks
from lab.corpus.sources import Source, held_out, resolve
from lab.feature.config import FeatureConfig
from lab.sae.saelens import LoadedSAE
from lab.selectivity import word_mask

PICK_WINDOW = 512        # tokens per forward when coding the selection text


@dataclass
class Texts:
    """Which text does what, and where each came from (the page says it)."""

    kept: list[Source]              # the held-out corpus
    left: list[Source]              # left out: the SAE trained on them
    notes: list[str]                # one sentence per corpus decision
    select: str                     # the text the latent is picked on
    select_from: str                # where it came from, in words
    causal: str                     # the causal check's text
    causal_from: str
    independent: bool               # are the pick and the test on different texts?


def bos_token(lm, loaded: LoadedSAE) -> int | None:
    """The token to put first when the SAE was trained with one (its prepend_bos)."""
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    return int(bos) if loaded.prepend_bos and bos is not None else None


# ---------------------------------------------------------------- which text does what

def choose_texts(cfg: FeatureConfig, loaded: LoadedSAE) -> Texts:
    sources = [resolve(n) for n in cfg.sources]
    if cfg.corpus:
        sources.append(Source("extra text (config)", cfg.corpus))
    kept, left, notes = held_out(sources, loaded.training_data)
    if not kept:
        raise ValueError("every corpus source is text the SAE was trained on, so nothing is held "
                         "out: tick another source or add extra text")
    if cfg.text:
        causal_text, causal_from = cfg.text, "the text given"
    else:
        causal_text = "\n\n".join(s.text.strip() for s in _by_target_density(kept, cfg.target))
        causal_from = "the held-out corpus"
    training = _training_text(loaded)
    if cfg.select_text:
        select, select_from = cfg.select_text, "the selection text given"
    elif training is not None:
        select, select_from = training, "the SAE's training text"
    else:
        select, select_from = causal_text, "the causal text (the SAE's training text is unknown)"
    independent = select.strip() != causal_text.strip() and not _overlap(select, causal_text)
    return Texts(kept, left, notes, select, select_from, causal_text, causal_from, independent)


def _by_target_density(sources: list[Source], words) -> list[Source]:
    """Most target words per character first (stable): the causal check needs them."""
    def density(s: Source) -> float:
        hits = sum(len(re.findall(rf"(?<!\w){re.escape(w)}(?!\w)", s.text, re.IGNORECASE))
                   for w in words)
        return hits / max(len(s.text), 1)
    return sorted(sources, key=density, reverse=True)


def _training_text(loaded: LoadedSAE) -> str | None:
    """The SAE's training text, when every part of it is a source the lab can resolve to the
    recorded hash; else None."""
    if not loaded.training_data:
        return None
    parts = []
    for rec in loaded.training_data:
        try:
            src = resolve(str(rec.get("name", "")))
        except ValueError:
            return None
        if src.sha256 != rec.get("sha256"):
            return None
        parts.append(src.text.strip())
    return "\n\n".join(parts)


def _overlap(a: str, b: str, n: int = 80) -> bool:
    """Do two texts share a passage of `n` characters (one contains part of the other)?"""
    short, long_ = sorted((a.strip(), b.strip()), key=len)
    return any(short[i:i + n] in long_ for i in range(0, max(len(short) - n, 0) + 1, n))


@torch.no_grad()
def pick_latent(lm, loaded: LoadedSAE, texts: Texts, cfg: FeatureConfig, start: int,
                base) -> tuple[int, str]:
    """The latent whose mean activation on the target words' tokens of the selection text
    exceeds its mean on the other tokens the most."""
    if texts.select.strip() == texts.causal.strip():
        on, off, n_on, n_off = _means(base.z, _mask(texts.causal, base.spans, cfg.target, start))
    else:
        on, off, n_on, n_off = _select_means(lm, loaded, texts.select, cfg.target, start)
    if not n_on:
        raise ValueError(f"none of the target words occurs in {texts.select_from}, so no latent "
                         "can be picked for them: give a latent number or a selection text")
    latent = int(torch.argmax(on - off))
    return latent, (f"picked on {texts.select_from}: mean activation {on[latent]:.3g} on the "
                    f"target words' {n_on} tokens, {off[latent]:.3g} on the other {n_off}")


def _mask(text: str, spans, words, start: int) -> np.ndarray:
    mask, _ = word_mask(text, spans, words)
    valid = np.ones(len(spans), dtype=bool)
    valid[:start] = False
    return np.where(valid, mask, False), valid & ~mask


def _means(z: torch.Tensor, masks) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    on, off = (torch.as_tensor(m) for m in masks)
    z = z.cpu()
    return (z[on].sum(0) / max(int(on.sum()), 1), z[off].sum(0) / max(int(off.sum()), 1),
            int(on.sum()), int(off.sum()))


def _select_means(lm, loaded: LoadedSAE, text: str, words, start: int):
    """The selection text in windows of PICK_WINDOW tokens (each behind the BOS when the SAE
    takes one, its first position left out as the causal text's is): summed codes only."""
    bos = bos_token(lm, loaded)
    enc = lm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, spans = list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]
    target, _ = word_mask(text, spans, words)
    width = min(PICK_WINDOW, int(lm.n_ctx) - (bos is not None))
    sums = [torch.zeros(loaded.n_latents), torch.zeros(loaded.n_latents)]
    counts = [0, 0]
    for i in range(0, len(ids), width):
        chunk = ids[i:i + width]
        x = torch.tensor([([bos] if bos is not None else []) + chunk], device=lm.device)
        h = hooks.run_with_hooks(lm, [loaded.hook], input_ids=x, detach=True)[loaded.hook][0]
        z = loaded.sae.encode(h.float()).cpu()[(bos is not None):]
        on = torch.as_tensor(target[i:i + len(chunk)]).clone()
        keep = torch.ones(len(chunk), dtype=torch.bool)
        if start and bos is None:
            keep[0] = False           # each window's first token is a sink too
        for j, m in enumerate((on & keep, ~on & keep)):
            sums[j] += z[m].sum(0)
            counts[j] += int(m.sum())
    return sums[0] / max(counts[0], 1), sums[1] / max(counts[1], 1), counts[0], counts[1]
