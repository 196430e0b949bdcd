"""Which latents are "selective" for a word list, and how many would look so by chance.

The original notes' score for latent j is

    score_j = mean activation on target tokens / (mean activation on control tokens + eps)

With a few hundred tokens and thousands of latents, some latents score high by accident.
The permutation control answers "how high would the best latents score if the target tokens
were any other tokens of the text?": it redraws which tokens are "target" (>= 1000 times, in
one batched matmul), rescoring every latent each time. From the null scores come

    p        per-latent permutation p-value: (1 + #{null score_j >= observed score_j}) / (1 + S)
    p_fwer   family-wise p-value over all latents (max statistic): the chance that the BEST of
             all latents scores this high on shuffled labels; "survives" means p_fwer < alpha
    n_chance expected number of latents that score at least this high on shuffled labels
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from lab.experiment import param, validate


@dataclass(frozen=True)
class SelectivityConfig:
    target: tuple[str, ...] = param(("Romania", "Hungary", "Greece"),
                                    "Words whose tokens are the targets (every sub-token of a "
                                    "word counts).")
    control: tuple[str, ...] = param(("fruit", "alcohol"), "Words whose tokens are the controls.")
    eps: float = param(1e-3, "Added to the control mean (latent units: the inputs have unit "
                             "variance).", gt=0)
    n_shuffles: int = param(1000, "Permutation draws; p-values go down to 1/(shuffles+1).", min=1)
    pool: Literal["text", "labelled"] = param(
        "text", "Where shuffled targets come from: 'text' draws them from any non-control token "
                "(do the targets stand out from the rest of the text?); 'labelled' only swaps "
                "the labels of the target and control tokens.")
    alpha: float = param(0.05, "Family-wise level at which a latent survives the control "
                               "(below 1).", gt=0, max=1)
    top: int = param(20, "Rows in the table of top-scoring latents.", min=1)
    seed: int = param(0, "Seeds the shuffles.", min=0)

    def __post_init__(self):
        object.__setattr__(self, "target", _words(self.target, "target"))
        object.__setattr__(self, "control", _words(self.control, "control"))
        validate(self)
        if self.alpha >= 1:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")


def parse_words(text: str) -> tuple[str, ...]:
    """"Romania, Hungary; Czech Republic" -> ("Romania", "Hungary", "Czech Republic")."""
    return tuple(w.strip() for w in re.split(r"[,;\n]", text or "") if w.strip())


def _words(words, name: str) -> tuple[str, ...]:
    words = parse_words(words) if isinstance(words, str) else tuple(w.strip() for w in words if w.strip())
    if not words:
        raise ValueError(f"the {name} word list is empty: give at least one word")
    return words


# ---------------------------------------------------------------- which tokens

def word_mask(text: str, spans, words) -> tuple[np.ndarray, list[str]]:
    """(mask over tokens, words not found). A token counts when its characters overlap an
    occurrence of a word (case-insensitive, whole words): every sub-token of a multi-token
    word counts, and "Czech Republic" marks both of its tokens."""
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    mask = np.zeros(len(spans), dtype=bool)
    missing = []
    for word in words:
        hit = False
        for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE):
            on = (starts < m.end()) & (ends > m.start())
            hit |= bool(on.any())
            mask |= on
        if not hit:
            missing.append(word)
    return mask, missing


def label_tokens(text: str, spans, cfg: SelectivityConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(target mask, control mask, missing words); a clear ValueError when a list matches no
    token or the two lists share tokens."""
    target, miss_t = word_mask(text, spans, cfg.target)
    control, miss_c = word_mask(text, spans, cfg.control)
    for name, mask, words in (("target", target, cfg.target), ("control", control, cfg.control)):
        if not mask.any():
            raise ValueError(f"none of the {name} words ({', '.join(words)}) occurs in the text")
    if (target & control).any():
        raise ValueError("the target and control lists mark the same tokens: make them disjoint")
    return target, control, miss_t + miss_c


# ---------------------------------------------------------------- scores and the control

def scores(z: torch.Tensor, target: torch.Tensor, control: torch.Tensor, eps: float) -> torch.Tensor:
    """z [n, L]; boolean masks [n] -> score per latent [L]."""
    return z[target].mean(0) / (z[control].mean(0) + eps)


def null_scores(z: torch.Tensor, target: np.ndarray, control: np.ndarray,
                cfg: SelectivityConfig) -> torch.Tensor:
    """[n_shuffles, L] scores with the target labels redrawn; all shuffles in one matmul."""
    n_t = int(target.sum())
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.pool == "text":
        pool = np.flatnonzero(~control)
        ctrl_mean = z[torch.as_tensor(control)].mean(0)                    # fixed
    else:
        pool = np.flatnonzero(target | control)
    zp = z[torch.as_tensor(pool)]                                          # [P, L]
    keys = torch.rand(cfg.n_shuffles, len(pool), generator=gen)
    picked = keys.argsort(dim=1)[:, :n_t]                                  # n_t distinct rows
    m = torch.zeros(cfg.n_shuffles, len(pool)).scatter_(1, picked, 1.0)    # [S, P] 0/1
    tgt_mean = m @ zp / n_t                                                # [S, L]
    if cfg.pool == "labelled":
        ctrl_mean = (1 - m) @ zp / (len(pool) - n_t)
    return tgt_mean / (ctrl_mean + cfg.eps)


@dataclass(frozen=True)
class Selectivity:
    table: pd.DataFrame      # one row per latent: latent, score, target_mean, control_mean,
                             # p, p_fwer, n_chance, rank, survives (sorted by score)
    null_max: np.ndarray     # [n_shuffles] best score among all latents on each shuffle
    n_target: int            # target tokens
    n_control: int           # control tokens
    missing: tuple[str, ...] # words of either list that were not found
    config: SelectivityConfig

    def top(self, n: int | None = None) -> pd.DataFrame:
        return self.table.head(n or self.config.top)

    def survivors_in_top(self, n: int | None = None) -> int:
        return int(self.top(n)["survives"].sum())

    def summary(self) -> dict:
        top = self.top()
        best = self.table.iloc[0]
        return {"n_target_tokens": self.n_target, "n_control_tokens": self.n_control,
                "n_shuffles": self.config.n_shuffles, "pool": self.config.pool,
                "top": len(top), "survivors_in_top": self.survivors_in_top(),
                "survivors_total": int(self.table["survives"].sum()),
                "best_latent": int(best["latent"]), "best_score": float(best["score"]),
                "best_p": float(best["p"]), "best_p_fwer": float(best["p_fwer"]),
                "null_max_median": float(np.median(self.null_max)),
                "null_max_95": float(np.quantile(self.null_max, 0.95)),
                "missing_words": list(self.missing)}

    def sentence(self) -> str:
        """What the control says, in one plain sentence."""
        s, n = self.survivors_in_top(), len(self.top())
        best = self.table.iloc[0]
        return (f"{s} of the top {n} latents survive the permutation control (family-wise "
                f"p < {self.config.alpha}); on shuffled labels the best latent already scores "
                f"{np.median(self.null_max):.3g} (median of {self.config.n_shuffles} shuffles), "
                f"and {best['n_chance']:.3g} latents are expected to score at least as high "
                f"as the top one ({best['score']:.3g}) by chance.")


    def empty_control_note(self) -> str:
        """A sentence when top latents never fire on a control token ("" otherwise)."""
        top = self.top()
        n_zero = int((top["control_mean"] == 0).sum())
        if not n_zero:
            return ""
        return (f"{n_zero} of the top {len(top)} never fire on a control token, so their "
                f"score is just their target mean / {self.config.eps:g}: the ratio explodes "
                "whenever the denominator is empty.")


def selectivity_from_masks(z: torch.Tensor, target: np.ndarray, control: np.ndarray,
                           cfg: SelectivityConfig, missing=()) -> Selectivity:
    """Score every latent of the code z [n_tokens, L] against boolean token masks (from
    `label_tokens`) and run the permutation control."""
    z = torch.as_tensor(z).float()
    t, c = torch.as_tensor(target), torch.as_tensor(control)
    obs = scores(z, t, c, cfg.eps)                                         # [L]
    null = null_scores(z, target, control, cfg)                            # [S, L]
    S = null.shape[0]
    p = ((null >= obs).sum(0) + 1).double() / (S + 1)
    null_max = null.max(1).values                                          # [S]
    srt_max = null_max.sort().values
    p_fwer = (S - torch.searchsorted(srt_max, obs, side="left") + 1).double() / (S + 1)
    flat = null.flatten().sort().values
    n_chance = (flat.numel() - torch.searchsorted(flat, obs, side="left")).double() / S
    table = pd.DataFrame({
        "latent": np.arange(z.shape[1]), "score": obs.numpy(),
        "target_mean": z[t].mean(0).numpy(), "control_mean": z[c].mean(0).numpy(),
        "p": p.numpy(), "p_fwer": p_fwer.numpy(), "n_chance": n_chance.numpy()})
    table = table.sort_values(["score", "latent"], ascending=[False, True], kind="stable")
    table = table.reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["survives"] = table["p_fwer"] < cfg.alpha
    return Selectivity(table=table, null_max=null_max.numpy(), n_target=int(target.sum()),
                       n_control=int(control.sum()), missing=tuple(missing), config=cfg)


# ---------------------------------------------------------------- the heatmap's data

def token_latent_frame(z: torch.Tensor, tokens, latents, target=None, control=None) -> pd.DataFrame:
    """Tidy [token x latent] activations for a heatmap: position (0.. in text order), token,
    label (unique "position token" text), role (target/control/other), latent, activation."""
    latents = [int(j) for j in latents]
    sub = torch.as_tensor(z)[:, latents].float().numpy()                  # [n, len(latents)]
    n = sub.shape[0]
    role = np.full(n, "other", dtype=object)
    if target is not None:
        role[np.asarray(target, dtype=bool)] = "target"
    if control is not None:
        role[np.asarray(control, dtype=bool)] = "control"
    labels = [f"{i:03d} {tok.strip() or repr(tok)}" for i, tok in enumerate(tokens)]
    return pd.DataFrame({"position": np.repeat(np.arange(n), len(latents)),
                         "token": np.repeat(np.asarray(tokens, dtype=object), len(latents)),
                         "label": np.repeat(np.asarray(labels, dtype=object), len(latents)),
                         "role": np.repeat(role, len(latents)),
                         "latent": np.tile(latents, n), "activation": sub.reshape(-1)})
