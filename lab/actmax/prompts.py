"""Real token prompts and what they measure: the answers of pez, discrete and epo, epo's
frontier, and the corpus's best windows are all `Prompts`.

Nothing here is a stored number: `measure` feeds the ids through the model (the full body,
so the cross-entropy comes from the same forward as the activation) and decodes them; a
prompt whose decoded text re-tokenizes to other ids is flagged (`survives` False): its text
would not reproduce its activation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lab.actmax.decode import token_texts
from lab.actmax.target import Target, evaluate
from lab.models import LabModel

COLUMNS = ["row", "restart", "lam", "activation", "ce", "text", "tokens", "survives_retokenize"]


@dataclass(frozen=True)
class Prompts:
    ids: np.ndarray           # [N, T] token ids
    restart: np.ndarray       # [N] the restart a row belongs to (-1: not an optimized prompt)
    lam: np.ndarray           # [N] the fluency weight the row was optimized for (nan: none)
    activation: np.ndarray    # [N] the target, from feeding `ids` through the model
    neighbours: np.ndarray    # [N] the neighbouring units' mean, same forward
    ce: np.ndarray            # [N] cross-entropy of tokens 1..T-1, nats per token
    text: tuple[str, ...]     # [N] decoded
    tokens: tuple[str, ...]   # [N] the tokens one by one, "a|b|c"
    survives: np.ndarray      # [N] decode -> re-tokenize gives back `ids`

    def __len__(self) -> int:
        return len(self.ids)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"row": np.arange(len(self)), "restart": self.restart, "lam": self.lam,
                             "activation": self.activation, "ce": self.ce, "text": list(self.text),
                             "tokens": list(self.tokens), "survives_retokenize": self.survives},
                            columns=COLUMNS)

    @property
    def best(self) -> int:
        """The row of the highest activation."""
        return int(np.argmax(self.activation))

    def records(self) -> list[dict]:
        """Plain JSON rows (ids included, so a prompt can be fed again)."""
        out = self.frame().to_dict(orient="records")
        for row, ids in zip(out, self.ids.tolist()):
            row.update(ids=ids, survives_retokenize=bool(row["survives_retokenize"]),
                       lam=None if np.isnan(row["lam"]) else row["lam"])
        return out


def survives(lm: LabModel, ids: np.ndarray, texts: list[str]) -> np.ndarray:
    """[N] bool: does each decoded text tokenize back to exactly its ids?"""
    again = lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return np.array([list(a) == list(b) for a, b in zip(again, ids.tolist())], dtype=bool)


def measure(lm: LabModel, target: Target, ids: torch.Tensor | np.ndarray,
            restart=None, lam=None) -> Prompts:
    """Feed prompts [N, T] through the model and decode them."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    N = ids.shape[0]
    s = evaluate(lm, target, ids, fluent=True)
    arr = ids.numpy()
    texts = lm.tokenizer.batch_decode(arr.tolist())
    pieces = token_texts(lm, arr)
    T = arr.shape[1] if arr.ndim == 2 else 0
    joined = tuple("|".join(pieces[i * T:(i + 1) * T]) for i in range(N))
    return Prompts(arr, np.full(N, -1) if restart is None else np.asarray(restart),
                   np.full(N, np.nan) if lam is None else np.asarray(lam, dtype=float),
                   s.target.numpy().astype(float), s.neighbours.numpy().astype(float),
                   s.ce.numpy().astype(float), tuple(texts), joined, survives(lm, arr, texts))
