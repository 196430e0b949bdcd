"""What one hidden-states run reads: the text, the token limit, and how the states become
statistics. The text is a config field, so (model, device, config) names a whole run."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from lab.experiment import param, validate
from lab.paths import read_text

DEFAULT_TEXT_FILE = "hidden_default.txt"
BinScale = Literal["symlog", "linear"]
BIN_SCALES: tuple[str, ...] = typing.get_args(BinScale)
EMPTY_TEXT = "The text is empty: paste some text or upload a .txt file."
_NUL = "This file looks binary (it contains NUL bytes): use a plain-text .txt file."
_BOM = "\ufeff"  # a UTF-8 file read as plain text may start with it


def default_text() -> str:
    """The paragraph written for this experiment (ordinary English prose, ~260 SmolLM2 tokens)."""
    return read_text(DEFAULT_TEXT_FILE)


def check_text(text: str) -> str:
    """The text, or a one-sentence ValueError when there is nothing to read."""
    if not text or not text.strip():
        raise ValueError(EMPTY_TEXT)
    return text


def check_plain(text: str) -> str:
    """The text, or a one-sentence ValueError when it looks like a binary file read as text."""
    if "\x00" in text:
        raise ValueError(_NUL)
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > max(2, len(text) // 100):  # text has almost none; binary formats many
        raise ValueError("This file looks binary (many control characters): use a plain-text .txt file.")
    return text


def decode_upload(data: bytes) -> str:
    """An uploaded file's bytes as text; one-sentence ValueError when it is not plain text."""
    if b"\x00" in data:  # before decoding: a binary file is rarely valid UTF-8 either
        raise ValueError(_NUL)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("This file is not UTF-8 text: save it as plain UTF-8 text (.txt) and try again.") from None
    return check_plain(text)


@dataclass(frozen=True)
class HiddenConfig:
    """One run: the text and token limit the forward pass reads, then the statistics' settings
    (which the forward does not depend on: a page can reuse one forward for all of them)."""

    text: str = param("", "The text the model reads, once; left empty, the paragraph bundled "
                          "with the lab.", file=True)
    max_tokens: int | None = param(None, "Longer texts are cut to this many tokens (default and "
                                         "upper bound: the model's context).", min=2)
    keep_first_token: bool = param(False, "The first token has no context and carries extreme "
                                          "values; it is left out of every statistic unless kept.")
    n_bins: int = param(80, "Histogram bins; the same edges for every state.", min=2)
    bin_scale: BinScale = param("symlog", "symlog: fine bins near zero and wide ones in the tails, "
                                          "so narrow and wide layers are both readable; linear: "
                                          "equal-width bins.")
    outlier_std: float = param(5.0, "A value is an outlier when |x - mean| is more than this many "
                                    "standard deviations of its state.", gt=0)
    top_dims: int = param(3, "Outlier dimensions listed per state (largest max |x| over tokens).",
                          min=1)
    points_per_state: int = param(60, "Scatter points per state sent to the browser (~1.9k for "
                                      "32 states).", min=0)
    extremes_per_state: int = param(6, "Of those, the largest |x| values, so outliers always show.",
                                    min=0)
    seed: int = param(0, "Picks the random part of the scatter sample.", min=0)

    def __post_init__(self):
        validate(self)
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a string, got {type(self.text).__name__}.")
        if self.text:  # "" is the bundled paragraph; whitespace alone is a mistake
            check_plain(check_text(self.text.removeprefix(_BOM)))
        if self.extremes_per_state > self.points_per_state:
            raise ValueError("extremes_per_state must be at most points_per_state "
                             f"(got {self.extremes_per_state} and {self.points_per_state}).")

    def input_text(self) -> str:
        """The text the forward reads: the given one (a leading BOM dropped), else the default."""
        return self.text.removeprefix(_BOM) or default_text()
