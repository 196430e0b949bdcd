"""What one feature view reads: the SAE, the latent, the corpus sources, the selection and
causal texts, the edit.
Every input is a field, so (model, device, config) names a whole run."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lab.corpus.sources import default_sources
from lab.experiment import param, validate
from lab.hidden import check_plain
from lab.selectivity import parse_words

# Countries and regions: the bundled text's, then common others (what a geography latent
# should fire on in a corpus it was not trained on).
PLACES = ("Hungary", "Romania", "Greece", "Austria", "Slovakia", "Czech Republic",
          "Transylvania", "Europe", "Serbia", "Croatia", "Bulgaria", "Poland", "Ukraine",
          "Germany", "France", "Italy", "Spain", "Portugal", "Switzerland", "Netherlands",
          "Belgium", "Sweden", "Norway", "Finland", "Denmark", "Russia", "Turkey", "Britain",
          "England", "Scotland", "Ireland", "China", "Japan", "India", "Korea", "Egypt",
          "Africa", "Asia", "America", "Canada", "Mexico", "Brazil", "Australia")


MAX_ALPHA = 1000.0      # a steer far beyond any latent's activation is a typo, not an experiment
MAX_CORPUS_CHARS = 2_000_000    # extra corpus text: ~500k tokens, minutes to scan on a CPU


@dataclass(frozen=True)
class FeatureConfig:
    """One latent's evidence: top examples over held-out text, output effect, causal edit
    against matched controls."""

    sae: str = param("", "The SAE: a folder in SAELens's format (cfg.json + sae_weights."
                         "safetensors) or this lab's (config.json + sae.safetensors), or a "
                         "Hugging Face hub id owner/repo/folder; empty: the lab's corpus SAE "
                         "(trained here once on the bundled texts' train parts, their last fifth "
                         "held out); ':palinka': the original notes' Palinka SAE (the SAE page's "
                         "default run on the ~230-token pálinka text).")
    latent: int | None = param(None, "Which latent; empty: the one whose mean activation on the "
                                     "target words' tokens in the selection text exceeds its "
                                     "mean on the other tokens the most.", min=0)
    sources: tuple[str, ...] = param(default_sources(), "Corpus sources scanned for top "
                                     "examples: bundled texts (leds.txt, or a part: leds.txt:train, "
                                     "leds.txt:held-out) and fetched articles (article:TITLE). "
                                     "Whatever the SAE was trained on is left out.")
    corpus: str = param("", "Extra corpus text, added to the sources.", file=True)
    select_text: str = param("", "The text the latent is picked on (when no latent is given); "
                                 "empty: the SAE's training text when the lab knows it, else the "
                                 "causal text (then the pick and the test are not independent).",
                             file=True)
    text: str = param("", "The text of the causal check (the edit is spliced into the forward "
                          "over it); empty: the held-out corpus, the text with most target "
                          "words first, cut to max_tokens.", file=True)
    include_training: bool = param(False, "Also scan the left-out training text, shown as a "
                                          "separate, labelled table (never mixed with the "
                                          "held-out examples).")
    target: tuple[str, ...] = param(PLACES, "Target words (place names by default): how many "
                                    "top examples are one of them, how the edit changes the "
                                    "probability of the tokens that begin them, and, with no "
                                    "latent given, which latent to show.")
    k: int = param(20, "Top examples: the k highest peaks, at most one per corpus window.",
                   min=1, max=200)
    radius: int = param(8, "Tokens of context each side of an example's peak.", min=0, max=32)
    mode: Literal["ablate", "steer"] = param(
        "ablate", "The causal edit: 'ablate' sets the latent to 0 wherever it fires; 'steer' "
                  "adds alpha to it at every position (alpha times its decoder direction).")
    alpha: float = param(10.0, "Steering strength in units of the latent's activation (compare "
                               f"its top examples' values); steer only; |alpha| <= {MAX_ALPHA:g}.",
                         min=-MAX_ALPHA, max=MAX_ALPHA)
    n_control: int = param(20, "Control latents: the ones closest to the target in corpus "
                               "density and in mean activation when firing, each edited the "
                               "same way.", min=0, max=100)
    max_tokens: int = param(512, "The causal text is cut to this many tokens (and to the "
                                 "model's context).", min=3, max=4096)
    skip_first: bool = param(True, "Leave position 0 out: the attention sink, whose activations "
                                   "are tens of times the rest (the SAE page drops it from "
                                   "training); it is neither edited nor an example.")
    seed: int = param(0, "Seeds the training of the built-in SAEs and breaks ties among equally "
                         "close controls.", min=0)

    def __post_init__(self):
        for name in ("target", "sources"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = parse_words(value)
            object.__setattr__(self, name, tuple(w.strip() for w in value if w.strip()))
        if isinstance(self.alpha, (int, float)) and not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number, got {self.alpha}")
        if self.mode == "ablate" and self.alpha != FeatureConfig.alpha:
            raise ValueError(f"alpha ({self.alpha:g}) is for steering only: leave it out with "
                             "mode ablate, or choose mode steer")
        validate(self)
        if not self.target:
            raise ValueError("the target word list is empty: give at least one word")
        if not self.sources and not self.corpus.strip():
            raise ValueError("the corpus is empty: tick at least one source or give extra text")
        if len(self.corpus) > MAX_CORPUS_CHARS:
            raise ValueError(f"the extra corpus text has {len(self.corpus):,} characters; at most "
                             f"{MAX_CORPUS_CHARS:,} (about 500,000 tokens) can be scanned here")
        for name in ("text", "corpus", "select_text"):
            value = getattr(self, name)
            if value and not value.strip():
                raise ValueError(f"the {name.replace('_', ' ')} is only whitespace: give some "
                                 "text, or leave it empty for the default")
            check_plain(value)
