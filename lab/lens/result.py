"""What a layer-by-layer run returns: arrays over layers and positions, the tidy tables the
charts draw, a JSON record and a brief for the terminal.

Two indices, never mixed: `layer` L is hidden_states[L] (0 = embeddings, L >= 1 the raw
output of block L - 1), which is what the lens reads; `block` b is a transformer block,
whose attention pattern is kept. Block b's attention writes into layer b + 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lab.experiment import record
from lab.lens import tables
from lab.lens.config import LensConfig

NAME = "lens"


@dataclass(frozen=True, eq=False)
class LensResult:
    config: LensConfig
    model: str
    labels: tuple[str, ...]      # one per layer: "embed", "block 0", ..., "block n-1"
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]      # each token decoded on its own
    p_true: np.ndarray           # [layers done, pos - 1] probability of the next token
    rank: np.ndarray             # [layers done, pos - 1] its rank (1 = top-1)
    kl: np.ndarray               # [layers done, pos] KL(final || layer), nats
    top_ids: np.ndarray          # [layers done, pos, top_k]
    top_p: np.ndarray            # [layers done, pos, top_k]
    vocab: dict                  # token id -> its text, for every id in top_ids
    patterns: np.ndarray         # [block, head, query, key] float16 attention probabilities
    token0: np.ndarray           # [block, head] mean attention to token 0 over queries 1..
    tied: bool                   # unembedding = input embeddings
    n_text_tokens: int
    max_tokens: int
    forward_seconds: float
    lens_seconds: float

    # ------------------------------------------------------------ sizes
    @property
    def n_layers_done(self) -> int:
        return self.p_true.shape[0]

    @property
    def complete(self) -> bool:
        return self.n_layers_done == len(self.labels)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_blocks(self) -> int:
        return self.patterns.shape[0]

    @property
    def n_heads(self) -> int:
        return self.patterns.shape[1]

    @property
    def truncated(self) -> bool:
        return self.n_text_tokens > self.n_tokens

    def axis_labels(self) -> list[str]:
        return [tables.token_label(p, t) for p, t in enumerate(self.tokens)]

    # ------------------------------------------------------------ tables
    def cells(self) -> pd.DataFrame:
        return tables.cells(self)

    def layers(self) -> pd.DataFrame:
        return tables.layers(self)

    def top_tokens(self) -> pd.DataFrame:
        return tables.top_tokens(self)

    def top_table(self, pos: int) -> pd.DataFrame:
        return tables.top_table(self, pos)

    def attention_sink(self) -> pd.DataFrame:
        return tables.attention_sink(self)

    def attention_blocks(self) -> pd.DataFrame:
        return tables.attention_blocks(self)

    def pattern(self, block: int, head: int, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        return tables.pattern(self, block, [head], lo, hi)

    def heads(self, block: int, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        return tables.pattern(self, block, range(self.n_heads), lo, hi)

    def settle(self) -> dict:
        return tables.settle(self)

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables the charts draw (and the CLI's --out writes as CSV)."""
        return {"lens": self.cells(), "top_tokens": self.top_tokens(), "layers": self.layers(),
                "attention_sink": self.attention_sink(),
                "attention_blocks": self.attention_blocks()}

    # ------------------------------------------------------------ outputs
    def to_record(self) -> dict:
        return record(NAME, self.config, self.model,
                      tokens_used=self.n_tokens, tokens_in_text=self.n_text_tokens,
                      max_tokens=self.max_tokens, truncated=self.truncated, tied=self.tied,
                      complete=self.complete, layers_done=self.n_layers_done,
                      labels=list(self.labels), tokens=list(self.tokens),
                      token_ids=[int(i) for i in self.token_ids],
                      settle=self.settle(), layers=tables.records(self.layers()),
                      attention_blocks=tables.records(self.attention_blocks()),
                      token0_by_head=tables.plain(self.token0),
                      p_true=tables.plain(self.p_true), rank=tables.plain(self.rank),
                      forward_seconds=round(self.forward_seconds, 4),
                      lens_seconds=round(self.lens_seconds, 4))

    def brief(self) -> dict:
        """What the terminal shows: the settle layer, then a table per layer and per block."""
        s = self.settle()
        note = " (truncated)" if self.truncated else ""
        done = "" if self.complete else f" (stopped: {self.n_layers_done} of {len(self.labels)} layers)"
        fmt = lambda v: f"{v:.4g}"  # noqa: E731
        return {"model": self.model + (" (tied unembedding)" if self.tied else ""),
                "tokens": f"{self.n_tokens} used of {self.n_text_tokens}{note}{done}",
                "final layer top-1 correct": f"{s['correct']} of {s['positions']} positions",
                "true next token top-1 from layer": tables.settle_sentence(s),
                "per layer (hidden_states index)": "\n" + self.layers().to_string(
                    index=False, float_format=fmt),
                "attention to token 0 per block (queries 1..)": "\n" + self.attention_blocks()
                .to_string(index=False, float_format=fmt)}

    def export(self, folder: Path) -> None:
        """The CLI's --out: every head's attention pattern too (too large for CSV)."""
        np.save(Path(folder) / "attention_patterns.npy", self.patterns)
