"""What a hidden-states run returns: tidy tables, a JSON record, a brief for the terminal."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from lab.experiment import record
from lab.hidden.config import HiddenConfig

NAME = "hidden"
_TABLE = ["label", "tokens", "mean", "std", "min", "max", "excess_kurtosis", "outlier_frac", "top_dims"]
_FRAMES = ("summary", "outlier_dims", "histogram", "pairs", "points")


@dataclass(frozen=True)
class HiddenResult:
    """Tidy tables of one analysis. Every table has `state` (0 = embed) and `label`."""

    config: HiddenConfig
    model: str
    summary: pd.DataFrame       # one row per state: tokens, values, mean, std, min, max, excess_kurtosis, outlier_frac, top_dims
    outlier_dims: pd.DataFrame  # state, label, rank, dim, max_abs: dimensions with the largest |x|
    histogram: pd.DataFrame     # state, label, bin, lo, hi, count: shared edges, counts per state
    pairs: pd.DataFrame         # state_a, label_a, state_b, label_b, cov, r2: every ordered pair
    points: pd.DataFrame        # state, label, token, token_text, dim, value: scatter sample
    n_tokens: int               # tokens the statistics used (token 0 dropped unless kept)
    n_text_tokens: int          # tokens in the whole text
    max_tokens: int             # the truncation limit that applied
    d_model: int
    forward_seconds: float      # wall time of the forward pass that produced the states
    bin_constant: float         # the symlog constant of the histogram edges (charts reuse it)
    tokens: tuple[str, ...]     # every token that was run, decoded on its own (token 0 included)
    used_text: str              # what the model read: the text after truncation

    @property
    def truncated(self) -> bool:
        return self.n_text_tokens > self.max_tokens

    @property
    def labels(self) -> list[str]:
        return list(self.summary["label"])

    def matrix(self, value: str = "r2") -> pd.DataFrame:
        """`value` ("r2" or "cov") as a square state x state table labelled both ways."""
        square = self.pairs.pivot(index="state_a", columns="state_b", values=value)
        names = dict(zip(self.summary["state"], self.summary["label"]))
        return square.rename(index=names, columns=names).rename_axis(index=None, columns=None)

    def only(self, states: Sequence[int]) -> "HiddenResult":
        """The same result restricted to some states (for display; nothing is recomputed)."""
        keep = set(states)
        pick = lambda df: df[df["state"].isin(keep)].reset_index(drop=True)  # noqa: E731
        pairs = self.pairs[self.pairs["state_a"].isin(keep) & self.pairs["state_b"].isin(keep)]
        return dataclasses.replace(self, summary=pick(self.summary), outlier_dims=pick(self.outlier_dims),
                                   histogram=pick(self.histogram), pairs=pairs.reset_index(drop=True),
                                   points=pick(self.points))

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables the charts draw (and the CLI's --out writes as CSV)."""
        return {name: getattr(self, name) for name in _FRAMES}

    def to_record(self) -> dict:
        """Everything needed to reproduce and read the result, as plain JSON data (the
        covariance matrix included: the page's download always had it)."""
        return record(NAME, self.config, self.model,
                      tokens_used=self.n_tokens, tokens_in_text=self.n_text_tokens,
                      max_tokens=self.max_tokens, truncated=self.truncated, d_model=self.d_model,
                      labels=self.labels, summary=_records(self.summary),
                      r2=_square(self.matrix("r2")), cov=_square(self.matrix("cov")))

    def brief(self) -> dict:
        """What the terminal shows: tokens read, the summary table and the R^2 matrix."""
        note = " (truncated)" if self.truncated else ""
        kept = "kept" if self.config.keep_first_token else "excluded"
        table = self.summary[_TABLE].to_string(index=False, float_format=lambda v: f"{v:.4g}")
        r2 = self.matrix("r2").to_string(float_format=lambda v: f"{v:.2f}")
        return {"model": self.model,
                "tokens": f"{self.n_tokens} used of {self.n_text_tokens}{note}, token 0 {kept}",
                "summary per state": "\n" + table,
                "R^2 (squared Pearson correlation over tokens x d_model)": "\n" + r2}


def _plain(v):
    """A table cell as JSON data: NaN (a constant state's kurtosis) becomes null."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _square(m: pd.DataFrame) -> list[list[float]]:
    return [[_plain(float(v)) for v in row] for row in m.to_numpy().round(6)]
