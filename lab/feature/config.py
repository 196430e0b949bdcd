"""What one feature view reads: the SAE, the latent, the causal text, the corpus, the edit.
Every input is a field, so (model, device, config) names a whole run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True)
class FeatureConfig:
    """One latent's evidence: top examples over a corpus, output effect, causal edit."""

    sae: str = param("", "The SAE: a folder in SAELens's format (cfg.json + sae_weights."
                         "safetensors) or this lab's (config.json + sae.safetensors), or a "
                         "Hugging Face hub id owner/repo/folder; empty: the seed's Palinka SAE "
                         "for this model (the SAE page's default settings on the bundled text), "
                         "trained here once and kept in the cache folder.")
    latent: int | None = param(None, "Which latent; empty: the one whose mean activation on the "
                                     "target words' tokens in the text exceeds its mean on the "
                                     "other tokens the most.", min=0)
    text: str = param("", "The text of the causal check (the edit is spliced into the forward "
                          "over it); empty: the bundled ~230-token text on pálinka.", file=True)
    corpus: str = param("", "More text for the max-activating examples, added to the bundled "
                            "texts and the articles fetched on the laminar page.", file=True)
    target: tuple[str, ...] = param(PLACES, "Target words (place names by default): how many "
                                    "top examples are one of them, how the edit changes the "
                                    "probability of their first tokens, and, with no latent "
                                    "given, which latent to show.")
    k: int = param(20, "Top examples: the k highest peaks, at most one per corpus window.",
                   min=1, max=200)
    radius: int = param(8, "Tokens of context each side of an example's peak.", min=0, max=32)
    mode: Literal["ablate", "steer"] = param(
        "ablate", "The causal edit: 'ablate' sets the latent to 0 wherever it fires; 'steer' "
                  "adds alpha to it at every position (alpha times its decoder direction).")
    alpha: float = param(10.0, "Steering strength in units of the latent's activation (compare "
                               "its top examples' values); steer only.")
    n_control: int = param(5, "Control latents: drawn at random among those of similar density "
                              "on the text, each edited the same way.", min=0, max=50)
    max_tokens: int = param(512, "The causal text is cut to this many tokens (and to the "
                                 "model's context).", min=2, max=4096)
    skip_first: bool = param(True, "Leave position 0 out: the attention sink, whose activations "
                                   "are tens of times the rest (the SAE page drops it from "
                                   "training); it is neither edited nor an example.")
    seed: int = param(0, "Seeds the draw of control latents, and the training of the default "
                         "SAE.", min=0)

    def __post_init__(self):
        if isinstance(self.target, str):
            object.__setattr__(self, "target", parse_words(self.target))
        object.__setattr__(self, "target", tuple(w.strip() for w in self.target if w.strip()))
        validate(self)
        if not self.target:
            raise ValueError("the target word list is empty: give at least one word")
        for name in ("text", "corpus"):
            value = getattr(self, name)
            if value and not value.strip():
                raise ValueError(f"the {name} is only whitespace: give some text, or leave it "
                                 "empty for the default")
            check_plain(value)
