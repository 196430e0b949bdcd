"""From optimized vectors back to real tokens: nearest tokens by cosine, and the gap meter
(do those tokens, fed back as real input, reach the optimum?)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lab.actmax.config import ActMaxConfig
from lab.actmax.optimize import activations
from lab.actmax.target import stream_seed, target_of
from lab.models import LabModel

TOP_K = 5                  # nearest vocabulary tokens reported per optimized vector
N_RANDOM = 100             # random real-token sequences in the gap meter
# the gap meter's rows (ActMaxResult.gap_frame), in the order its chart lists them
GAP_SOURCES = ("optimized embeddings", "nearest tokens", "optimized prompts (real tokens)",
               "corpus's best windows", "random tokens")


def nearest(lm: LabModel, vectors: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k vocabulary tokens by cosine similarity: vectors [N, D] -> (ids [N, k], cos [N, k])."""
    W = torch.nn.functional.normalize(lm.W_E.detach().float(), dim=-1)          # [V, D]
    v = torch.nn.functional.normalize(vectors.detach().float().to(W.device), dim=-1)  # [N, D]
    cos, ids = (v @ W.T).topk(min(k, W.shape[0]), dim=-1)
    return ids.cpu(), cos.cpu()


def top1(lm: LabModel, vectors: torch.Tensor) -> np.ndarray:
    """[R, T, D] -> [R, T] the nearest token of every vector."""
    R, T, D = vectors.shape
    return nearest(lm, vectors.reshape(R * T, D), 1)[0].reshape(R, T).numpy()


def token_texts(lm: LabModel, ids) -> list[str]:
    """Readable text of each token id (decoded, so a leading space shows as a space)."""
    tok = lm.tokenizer
    out = []
    for i in np.asarray(ids).ravel().tolist():
        text = tok.decode([i]) if tok is not None and i < len(tok) else None
        if text and "\ufffd" in text:   # a piece of a multi-byte character: show the raw token
            text = tok.convert_ids_to_tokens(i)
        out.append(text if text else f"<{i}>")
    return out


def nearest_tokens(lm: LabModel, embeds: torch.Tensor, k: int = TOP_K) -> pd.DataFrame:
    """Tidy: restart, position, rank (1 = nearest), token_id, token, cosine."""
    R, T, D = embeds.shape
    ids, cos = nearest(lm, embeds.reshape(R * T, D), k)
    kk = ids.shape[1]
    grid = np.indices((R, T, kk)).reshape(3, -1)
    return pd.DataFrame({"restart": grid[0], "position": grid[1], "rank": grid[2] + 1,
                         "token_id": ids.reshape(-1).numpy(),
                         "token": token_texts(lm, ids.reshape(-1)),
                         "cosine": cos.reshape(-1).numpy().astype(float)})


def nearest_wide(nearest: pd.DataFrame, restart: int = 0) -> pd.DataFrame:
    """One restart's nearest tokens as a table: one row per position, "token (cosine)" by rank."""
    d = nearest[nearest.restart == restart]
    cells = d.assign(cell=[f"{t!r}  ({c:.3f})" for t, c in zip(d.token, d.cosine)])
    wide = cells.pivot(index="position", columns="rank", values="cell")
    wide.columns = [f"nearest {r}" for r in wide.columns]
    return wide.reset_index()


@dataclass(frozen=True)
class GapMeter:
    """How far the optimum is from anything real tokens reach."""

    optimum: np.ndarray       # [restarts] activation of the optimized embeddings
    snapped: np.ndarray       # [restarts] activation of their nearest real tokens, fed back
    snapped_ids: np.ndarray   # [restarts, n_tokens] those tokens
    random: np.ndarray        # [N_RANDOM] activation of random real-token sequences

    def frame(self) -> pd.DataFrame:
        """Tidy: source ("optimized embeddings" | "nearest tokens" | "random tokens"), item, activation."""
        parts = [("optimized embeddings", self.optimum), ("nearest tokens", self.snapped),
                 ("random tokens", self.random)]
        return pd.DataFrame([(src, i, float(v)) for src, vals in parts for i, v in enumerate(vals)],
                            columns=["source", "item", "activation"])

    def snapped_percentile(self) -> np.ndarray:
        """[restarts] share (0..100) of random sequences below each snapped activation."""
        return np.array([100.0 * (self.random < s).mean() for s in self.snapped])

    def summary(self) -> dict:
        return {"optimum_mean": float(self.optimum.mean()), "snapped_mean": float(self.snapped.mean()),
                "random_mean": float(self.random.mean()), "random_std": float(self.random.std()),
                "random_max": float(self.random.max()),
                "snapped_percentile_mean": float(self.snapped_percentile().mean())}


@torch.no_grad()
def gap_meter(lm: LabModel, cfg: ActMaxConfig, embeds: torch.Tensor, optimum: np.ndarray,
              n_random: int = N_RANDOM, snapped_ids: torch.Tensor | None = None) -> GapMeter:
    """Feed the nearest tokens back as real input; compare with random real-token sequences.

    `snapped_ids` [R, T]: the nearest tokens when already decoded (saves a vocabulary pass).
    """
    R, T, D = embeds.shape
    snapped_ids = torch.as_tensor(top1(lm, embeds) if snapped_ids is None else snapped_ids,
                                  dtype=torch.long)
    g = torch.Generator().manual_seed(stream_seed(cfg.seed, 2))
    random_ids = torch.randint(0, lm.vocab_size, (n_random, T), generator=g)
    ids = torch.cat([snapped_ids, random_ids]).to(lm.device)       # one forward for both
    acts = target_of(lm, cfg).read(activations(lm, cfg.hook, input_ids=ids))[0]
    acts = acts.float().cpu().numpy()
    return GapMeter(np.asarray(optimum, dtype=float), acts[:R].astype(float),
                    snapped_ids.numpy(), acts[R:].astype(float))
