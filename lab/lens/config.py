"""What one layer-by-layer run reads: the text, the token limit, how many top tokens to keep.
The text is a config field, so (model, device, config) names a whole run."""
from __future__ import annotations

from dataclasses import dataclass

from lab.experiment import param, validate
from lab.hidden import check_plain, check_text, default_text

MAX_TOKENS = 512   # every head's [query, key] pattern is kept: memory grows with its square
_BOM = "\ufeff"    # a UTF-8 file read as plain text may start with it


@dataclass(frozen=True)
class LensConfig:
    """One run: a single forward pass over the text, read through the lens at every layer."""

    text: str = param("", "The text the model reads, once; left empty, the paragraph of the "
                          "hidden-states page (bundled with the lab).", file=True)
    max_tokens: int = param(MAX_TOKENS, "Longer texts are cut to this many tokens (at most "
                                        f"{MAX_TOKENS}: every head's attention pattern is kept, "
                                        "and it grows with the square).", min=2, max=MAX_TOKENS)
    top_k: int = param(5, "Most likely tokens kept per layer and position.", min=1, max=20)
    seed: int = param(0, "Unused: the lens and the attention patterns involve no randomness. "
                         "Every experiment has one seed, so it is part of the run's name.", min=0)

    def __post_init__(self):
        validate(self)
        if self.text:  # "" is the bundled paragraph; whitespace alone is a mistake
            check_plain(check_text(self.text.removeprefix(_BOM)))

    def input_text(self) -> str:
        """The text the forward reads: the given one (a leading BOM dropped), else the default."""
        return self.text.removeprefix(_BOM) or default_text()
