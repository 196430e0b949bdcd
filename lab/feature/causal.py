"""The causal check: edit one latent in the forward over a text and compare the model's
next-token distributions with the unedited ones; the same for control latents.

    kl[pos]      KL(unedited || edited) of the next-token distribution, nats
    d_target     change in the probability of the target words' first tokens, mean over
                 positions (what a geography latent should move)
    d_nll        change in the text's own next-token loss, nats per token
    edit_size    |x' - x| / |x| at the hook, mean over positions: how big the edit was

Controls: latents whose density on this text is closest to the target's (as many positions
edited), `n_control` of them drawn at random from the 4 n_control nearest (at least 20).
"""
from __future__ import annotations

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


def target_token_ids(tokenizer, words) -> list[int]:
    """First token of each word, with and without a leading space (how it starts a word)."""
    ids = set()
    for word in words:
        for form in (word, " " + word):
            enc = tokenizer(form, add_special_tokens=False)["input_ids"]
            if enc:
                ids.add(int(enc[0]))
    return sorted(ids)


def density(z: torch.Tensor, start: int) -> torch.Tensor:
    """[n_latents] fraction of positions start.. where each latent is > 0."""
    return (z[start:] > 0).float().mean(0)


def pick_controls(z: torch.Tensor, latent: int, n: int, seed: int, start: int) -> list[int]:
    """`n` latents of density on the text closest to `latent`'s, drawn at random."""
    if n == 0:
        return []
    d = density(z, start)
    gap = (d - d[latent]).abs()
    gap[latent] = float("inf")
    pool = torch.argsort(gap, stable=True)[:min(max(4 * n, 20), len(d) - 1)]
    gen = torch.Generator().manual_seed(seed)
    picked = pool[torch.randperm(len(pool), generator=gen)[:n]]
    return sorted(int(i) for i in picked)


def effect(base: TextRun, logits: torch.Tensor, target_ids: list[int], start: int) -> dict:
    """What one edited forward changed: per-position KL and the summary numbers."""
    logp = torch.log_softmax(logits, -1)
    p0 = base.logp.exp()
    kl = (p0 * (base.logp - logp)).sum(-1).clamp_min(0)                 # [pos]
    p1 = logp.exp()
    mass0, mass1 = p0[:, target_ids].sum(-1), p1[:, target_ids].sum(-1)
    nxt = base.ids[0, 1:].to(logp.device)
    nll0 = -base.logp[:-1].gather(1, nxt[:, None])[:, 0]
    nll1 = -logp[:-1].gather(1, nxt[:, None])[:, 0]
    s = slice(start, None)
    return {"kl": kl.cpu(), "mean_kl": float(kl[s].mean()), "max_kl": float(kl[s].max()),
            "max_kl_position": int(kl.argmax()), "target_p": float(mass0[s].mean()),
            "d_target": float((mass1 - mass0)[s].mean()),
            "d_nll": float((nll1 - nll0)[start:].mean()) if len(nll0) > start else 0.0,
            "dp": (p1 - p0)[s].mean(0).cpu(), "p0": p0[s].mean(0).cpu(), "p1": p1[s].mean(0).cpu()}


@torch.no_grad()
def edit_size(sae, base: TextRun, edit: Edit, start: int) -> float:
    """|x' - x| / |x| at the hook, mean over the edited positions (the hook's input is the
    same in the edited forward: nothing before it changed)."""
    x = base.acts[start:]
    dz = edit.code_change(base.z[start:, edit.latent:edit.latent + 1])
    delta = sae.out_delta(dz * sae.W_dec[edit.latent].to(x.device), x)
    return float((delta.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).mean())


def moved_tokens(tokenizer, e: dict, n: int = MOVED) -> pd.DataFrame:
    """The tokens whose mean probability over the text rose and fell most."""
    dp = e["dp"]
    up = torch.topk(dp, n).indices.tolist()
    down = torch.topk(-dp, n).indices.tolist()
    rows = [{"direction": name, "rank": r, "token_id": i, "token": tokenizer.decode([i]),
             "dp": float(dp[i]), "p_before": float(e["p0"][i]), "p_after": float(e["p1"][i])}
            for name, ids in (("up", up), ("down", down)) for r, i in enumerate(ids, start=1)]
    return pd.DataFrame(rows)


def summary_row(latent: int, role: str, e: dict, size: float, z: torch.Tensor, start: int) -> dict:
    fires = int((z[start:, latent] > 0).sum())
    return {"latent": latent, "role": role, "fires_on": fires,
            "text_density": fires / max(z.shape[0] - start, 1), "mean_kl": e["mean_kl"],
            "max_kl": e["max_kl"], "max_kl_position": e["max_kl_position"],
            "target_p": e["target_p"], "d_target": e["d_target"], "d_nll": e["d_nll"],
            "edit_size": size}


def kl_rows(latent: int, role: str, e: dict, tokens, z: torch.Tensor) -> pd.DataFrame:
    n = len(tokens)
    return pd.DataFrame({"latent": latent, "role": role, "position": np.arange(n),
                         "token": list(tokens), "kl": e["kl"].numpy(),
                         "activation": z[:, latent].cpu().numpy()})
