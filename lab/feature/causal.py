"""The causal check: edit one latent in the forward over a text and compare the model's
next-token distributions with the unedited ones; the same for control latents.

    kl[pos]      KL(unedited || edited) of the next-token distribution, nats
    d_target     change in the probability of the tokens that begin the target words, mean
                 over all positions
    d_target_at  the same, at the positions whose next token begins a target word (where a
                 geography latent should matter)
    d_nll        change in the text's own next-token loss, nats per token
    edit_size    |r' - r| / |r| of the residual stream r after the SAE's block, mean over the
                 positions edited: how big the edit was where it joins the stream

Controls (`match_controls`): the latents closest to the target in corpus density and in mean
activation when firing (both as log ratios), so a control fires as often and as strongly as
the target on the same held-out text. `ranks` places the target among them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lab.feature.splice import Edit

MOVED = 10          # tokens shown per direction in the "moved most" table


@dataclass(frozen=True)
class TextRun:
    """The unedited forward over the causal text."""

    ids: torch.Tensor            # [1, pos]
    tokens: tuple[str, ...]      # each token decoded alone
    spans: tuple[tuple[int, int], ...]
    logp: torch.Tensor           # [pos, vocab] log-probabilities, unedited
    acts: torch.Tensor           # [pos, d_in] the hook's activation
    z: torch.Tensor              # [pos, n_latents] the SAE's code
    n_text_tokens: int           # before the cut to max_tokens
    resid: torch.Tensor          # [pos, d_model] the residual stream after the SAE's block


def word_starts(text: str, spans, words) -> np.ndarray:
    """[tokens] bool: the token that begins each occurrence of a word (case-insensitive,
    whole words), the first token overlapping it."""
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    mask = np.zeros(len(spans), dtype=bool)
    for word in words:
        for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE):
            on = np.flatnonzero((starts < m.end()) & (ends > m.start()))
            if len(on):
                mask[on[0]] = True
    return mask


def target_token_ids(tokenizer, words, occurring: list[int] = ()) -> list[int]:
    """The tokens that begin the target words in running text: each word's first token after
    a space, and `occurring` (the tokens that begin an occurrence in the texts read). A
    single letter is left out unless a target word is one: it begins too many other words."""
    ids = set(int(i) for i in occurring)
    for word in words:
        enc = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if enc:
            ids.add(int(enc[0]))
    letters = {w.lower() for w in words if len(w) == 1}
    def keep(i: int) -> bool:
        t = tokenizer.decode([i]).strip()
        return bool(t) and (len(t) > 1 or t.lower() in letters)
    return sorted(i for i in ids if keep(i))


def match_controls(density: torch.Tensor, mean_active: torch.Tensor, latent: int, n: int,
                   seed: int) -> list[int]:
    """The `n` latents closest to `latent` in corpus density and mean firing activation:
    smallest max(|log d/d_t|, |log m/m_t|), among latents that fire; ties broken by `seed`."""
    if n == 0:
        return []
    fires = density > 0
    if not bool(fires[latent]):
        raise ValueError(f"latent {latent} never fires on the held-out corpus, so no control "
                         "can be matched to it: pick another latent or add corpus text")
    log_d = (density.clamp_min(1e-12) / density[latent]).log().abs()
    log_m = (mean_active.clamp_min(1e-12) / mean_active[latent]).log().abs()
    gap = torch.maximum(log_d, log_m)
    gap[~fires] = float("inf")
    gap[latent] = float("inf")
    gen = torch.Generator().manual_seed(seed)
    jitter = torch.rand(len(gap), generator=gen) * 1e-9        # seeded tie-break
    order = torch.argsort(gap + jitter)
    return sorted(int(i) for i in order[:n] if torch.isfinite(gap[i]))


def effect(base: TextRun, logits: torch.Tensor, target_ids: list[int], start: int,
           at: np.ndarray | None = None) -> dict:
    """What one edited forward changed: per-position KL and the summary numbers. `at`
    [pos] marks the positions whose next token begins a target word."""
    logp = torch.log_softmax(logits, -1)
    p0 = base.logp.exp()
    kl = (p0 * (base.logp - logp)).sum(-1).clamp_min(0)                 # [pos]
    p1 = logp.exp()
    mass0, mass1 = p0[:, target_ids].sum(-1), p1[:, target_ids].sum(-1)
    nxt = base.ids[0, 1:].to(logp.device)
    nll0 = -base.logp[:-1].gather(1, nxt[:, None])[:, 0]
    nll1 = -logp[:-1].gather(1, nxt[:, None])[:, 0]
    s = slice(start, None)
    where = torch.as_tensor(at if at is not None else np.zeros(len(kl), bool))
    where[:start] = False
    dm = (mass1 - mass0).cpu()
    if not target_ids:          # no token begins a target word here: nothing to follow
        where[:] = False
    none = not target_ids
    return {"kl": kl.cpu(), "mean_kl": float(kl[s].mean()), "max_kl": float(kl[s].max()),
            "max_kl_position": int(kl.argmax()),
            "target_p": None if none else float(mass0[s].mean()),
            "d_target": None if none else float(dm[s].mean()), "target_positions": int(where.sum()),
            "target_p_at": float(mass0.cpu()[where].mean()) if where.any() else None,
            "d_target_at": float(dm[where].mean()) if where.any() else None,
            "d_nll": float((nll1 - nll0)[start:].mean()) if len(nll0) > start else 0.0,
            "dp": (p1 - p0)[s].mean(0).cpu(), "p0": p0[s].mean(0).cpu(), "p1": p1[s].mean(0).cpu()}


def edited_positions(z: torch.Tensor, edit: Edit, start: int) -> torch.Tensor:
    """[pos] bool: where the edit changes the code (ablate: where the latent fires)."""
    on = z[:, edit.latent] > 0 if edit.kind == "ablate" else torch.ones(z.shape[0], dtype=torch.bool)
    on = on.cpu().clone()
    on[:start] = False
    return on


def edit_size(resid: torch.Tensor, resid_edited: torch.Tensor, where: torch.Tensor) -> float:
    """|r' - r| / |r| of the residual stream after the SAE's block, mean over `where`."""
    if not bool(where.any()):
        return 0.0
    r, r1 = resid.cpu()[where], resid_edited.cpu()[where]
    return float(((r1 - r).norm(dim=-1) / r.norm(dim=-1).clamp_min(1e-12)).mean())


# ---------------------------------------------------------------- the target among controls

STRONG = 0.95     # beating this share of the controls counts as stronger than controls

def toward(row: dict, mode: str) -> float | None:
    """The target-word effect in the direction the edit should push: ablating a latent for
    the words should lower their probability, steering it should raise it."""
    d = row.get("d_target_at")
    if d is None:
        d = row.get("d_target")
    return None if d is None else (-d if mode == "ablate" else d)


def ranks(effects: pd.DataFrame, mode: str) -> dict:
    """Where the target falls among the controls, per measure: how many it beats, of how
    many, its rank (1 = strongest of all) and percentile among the controls."""
    t = effects[effects["role"] == "target"]
    c = effects[effects["role"] == "control"]
    if not len(t) or not len(c):
        return {}
    measures = {"mean_kl": lambda r: r["mean_kl"], "target_effect": lambda r: toward(r, mode),
                "edit_size": lambda r: r["edit_size"]}
    out = {}
    for name, value in measures.items():
        tv = value(t.iloc[0].to_dict())
        cv = [value(r) for r in c.to_dict(orient="records")]
        if tv is None or any(v is None for v in cv):
            continue
        beaten = sum(v < tv for v in cv)
        out[name] = {"target": float(tv), "beats": int(beaten), "of": len(cv),
                     "rank": len(cv) - beaten + 1, "percentile": 100.0 * beaten / len(cv)}
    return out


def verdict(r: dict, n_control: int) -> str:
    """One sentence a class can compare: is the target's effect stronger than its controls'?"""
    if not r:
        return "No control latents were edited, so there is nothing to compare the effect with."
    spec, kl = r.get("target_effect"), r.get("mean_kl")
    if spec and spec["beats"] >= STRONG * spec["of"]:
        return (f"Stronger than {spec['beats']} of {spec['of']} controls on the target words "
                f"(and than {kl['beats']} of {kl['of']} on the whole distribution): a specific effect.")
    if kl and kl["beats"] >= STRONG * kl["of"]:
        words = f"{spec['beats']} of {spec['of']}" if spec else "an unknown share"
        return (f"Stronger than {kl['beats']} of {kl['of']} controls on the whole distribution, "
                f"but on the target words than only {words}: a large effect, not a specific one.")
    return (f"Indistinguishable from controls: on the target words it beats "
            f"{spec['beats'] if spec else '?'} of {n_control}, on the whole distribution "
            f"{kl['beats'] if kl else '?'} of {n_control}.")


def moved_tokens(tokenizer, e: dict, n: int = MOVED) -> pd.DataFrame:
    """The tokens whose mean probability over the text rose and fell most."""
    dp = e["dp"]
    up = torch.topk(dp, n).indices.tolist()
    down = torch.topk(-dp, n).indices.tolist()
    rows = [{"direction": name, "rank": r, "token_id": i, "token": tokenizer.decode([i]),
             "dp": float(dp[i]), "p_before": float(e["p0"][i]), "p_after": float(e["p1"][i])}
            for name, ids in (("up", up), ("down", down)) for r, i in enumerate(ids, start=1)]
    return pd.DataFrame(rows)


def summary_row(latent: int, role: str, e: dict, size: float, z: torch.Tensor, start: int,
                corpus: dict) -> dict:
    """One edited latent's numbers; `corpus` its held-out density and mean firing activation."""
    fires = int((z[start:, latent] > 0).sum())
    return {"latent": latent, "role": role, "corpus_density": corpus["density"],
            "corpus_mean_active": corpus["mean_active"], "fires_on": fires,
            "text_density": fires / max(z.shape[0] - start, 1), "mean_kl": e["mean_kl"],
            "max_kl": e["max_kl"], "max_kl_position": e["max_kl_position"],
            "target_p": e["target_p"], "d_target": e["d_target"],
            "target_p_at": e["target_p_at"], "d_target_at": e["d_target_at"],
            "d_nll": e["d_nll"], "edit_size": size}


def kl_rows(latent: int, role: str, e: dict, tokens, z: torch.Tensor) -> pd.DataFrame:
    n = len(tokens)
    return pd.DataFrame({"latent": latent, "role": role, "position": np.arange(n),
                         "token": list(tokens), "kl": e["kl"].numpy(),
                         "activation": z[:, latent].cpu().numpy()})
