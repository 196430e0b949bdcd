"""What one steering run reads: the prompt, the hook, the vector (an SAE latent or a contrast
of prompts), the coefficient and its sweep, how to decode, the target words. Every input is a
field, so (model, device, config) names a whole run."""
from __future__ import annotations

import math
from dataclasses import dataclass

from lab import hooks
from lab.experiment import param, validate
from lab.hidden import check_plain

DEFAULT_SAE = "default"   # --sae default: the SAE page's default SAE for this model and seed
MAX_NEW_TOKENS = 256
MAX_ALPHA = 1000.0
LOVE = ("love", "loved", "loving", "lovely", "happy", "joy", "wonderful", "kind", "beautiful",
        "friend", "friends", "care", "sweet", "heart")


@dataclass(frozen=True)
class SteerConfig:
    """Continue a prompt unsteered, steered and with a random control, side by side."""

    prompt: str = param("I hate you because", "The text the model continues.")
    hook: str = param("", f"Where the vector is added, at every position: {hooks.SPELLED}; "
                          "empty: the SAE's own hook, or for a contrast "
                          "the residual stream after block n_layers // 5.")
    sae: str = param("", "An SAE folder (SAELens's or this lab's format, or a hub id), or "
                         f"'{DEFAULT_SAE}' for the SAE page's default SAE of this model and seed: "
                         "the vector is latent --latent's decoder direction, and the contrast "
                         "is not used; empty: steer with the contrast.")
    latent: int | None = param(None, "The SAE latent whose decoder direction is the vector "
                                     "(alpha is then in units of the latent's activation).",
                               min=0)
    contrast: str = param(" Love| Hate", "Two sides 'A|B': the vector is the mean activation "
                                         "at the hook over side A's tokens minus over side B's "
                                         "(ActAdd); a side may list several prompts separated "
                                         "by ';'. Spaces count (' Love' is one token).")
    alpha: float = param(2.0, "The coefficient: alpha times the vector is added at the hook.",
                         min=-MAX_ALPHA, max=MAX_ALPHA)
    sweep: tuple[float, ...] = param((0.0, 0.5, 1.0, 4.0), "More coefficients, each generated "
                                     "steered and with the random control, for the sweep chart "
                                     "(alpha is always among them); empty: alpha only.")
    max_new_tokens: int = param(24, "Tokens to generate per continuation (prompt plus these "
                                    "must fit the model's context).", min=1, max=MAX_NEW_TOKENS)
    sample: bool = param(False, "Sample (temperature, top-p, the seed) instead of the most likely "
                                "token; every continuation draws from its own generator seeded "
                                "the same, so coefficient 0 repeats the unsteered text.")
    temperature: float = param(1.0, "Sampling temperature (with --sample).", gt=0.0, max=10.0)
    top_p: float = param(0.95, "Nucleus sampling: draw from the smallest set of tokens whose "
                               "probability reaches this (with --sample; 1 = all).",
                         gt=0.0, max=1.0)
    target: tuple[str, ...] = param(LOVE, "Target words: the continuation's target mass is the "
                                          "probability, averaged over its tokens, that the next "
                                          "token starts one of them.")
    seed: int = param(0, "Seeds the random control direction, the sampling, and the training of "
                         "the default SAE.", min=0)

    def __post_init__(self):
        if isinstance(self.target, str):
            object.__setattr__(self, "target", tuple(self.target.split(",")))
        object.__setattr__(self, "target", tuple(w.strip() for w in self.target if w.strip()))
        if isinstance(self.sweep, (int, float)):
            object.__setattr__(self, "sweep", (float(self.sweep),))
        object.__setattr__(self, "sweep", tuple(self.sweep))
        validate(self)
        if not self.prompt.strip():
            raise ValueError("the prompt is empty: give some text for the model to continue")
        check_plain(self.prompt)
        if self.hook and hooks.hook_kind(self.hook) is None:   # the model's range: in the run
            raise ValueError(f"unknown hook point {self.hook!r}; valid: {hooks.SPELLED}")
        for a in self.sweep:
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) \
                    or abs(a) > MAX_ALPHA:
                raise ValueError(f"every sweep coefficient must be a finite number between "
                                 f"{-MAX_ALPHA:g} and {MAX_ALPHA:g}, got {a!r}")
        if not self.target:
            raise ValueError("the target word list is empty: give at least one word")
        if self.sae:
            if self.latent is None:
                raise ValueError("an SAE needs a latent: give --latent N")
        else:
            contrast_sides(self.contrast)

    @property
    def uses_sae(self) -> bool:
        return bool(self.sae)

    def alphas(self) -> tuple[float, ...]:
        """The coefficients generated steered and controlled: alpha and the sweep, sorted."""
        return tuple(sorted({float(self.alpha), *map(float, self.sweep)}))


def contrast_sides(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """'A|B' (each side 'p1;p2;...') -> (side A's prompts, side B's), or one sentence why not."""
    parts = text.split("|")
    if len(parts) != 2:
        raise ValueError(f"the contrast must be two sides 'A|B' (one '|'), got {text!r}")
    sides = []
    for name, part in zip("AB", parts):
        prompts = tuple(part.split(";"))
        for i, p in enumerate(prompts, 1):
            if not p.strip():
                where = f"prompt {i} of side {name}" if len(prompts) > 1 else f"side {name}"
                raise ValueError(f"the contrast's {where} is empty: give some text on both sides "
                                 "of the '|'")
            check_plain(p)
        sides.append(prompts)
    return sides[0], sides[1]
