"""What an SAE's latents do over a set of rows: density, peak and mean, and their class
(dead / always-on / selective)."""
from __future__ import annotations

import pandas as pd
import torch

from lab.sae.model import EVAL_CHUNK, SparseAutoencoder, as_rows


@torch.no_grad()
def encode_rows(sae: SparseAutoencoder, acts: torch.Tensor) -> torch.Tensor:
    """Dense code [n, latents] of raw activations, in chunks (no autograd)."""
    acts = as_rows(acts)
    return torch.cat([sae.encode(c) for c in acts.split(EVAL_CHUNK)]) if len(acts) else \
        torch.zeros(0, sae.n_latents)


@torch.no_grad()
def latent_stats(sae: SparseAutoencoder, acts: torch.Tensor) -> pd.DataFrame:
    """One row per latent: density (fraction of tokens where it is > 0), max and mean
    activation (mean over all tokens; mean_active over the tokens where it fires), and
    its class: dead (never active), always-on (active on every token), selective."""
    acts = as_rows(acts)
    count = torch.zeros(sae.n_latents)
    total = torch.zeros(sae.n_latents)
    peak = torch.zeros(sae.n_latents)
    for chunk in acts.split(EVAL_CHUNK):
        z = sae.encode(chunk)
        count += (z > 0).sum(0)
        total += z.sum(0)
        peak = torch.maximum(peak, z.max(0).values)
    n = max(acts.shape[0], 1)
    density = count / n
    cls = ["dead" if c == 0 else "always-on" if c == n else "selective" for c in count.tolist()]
    return pd.DataFrame({"latent": range(sae.n_latents), "density": density.numpy(),
                         "max": peak.numpy(), "mean": (total / n).numpy(),
                         "mean_active": (total / count.clamp_min(1)).numpy(), "cls": cls})


def class_counts(stats: pd.DataFrame) -> dict[str, int]:
    """{dead, always-on, selective: number of latents}."""
    counts = stats["cls"].value_counts()
    return {c: int(counts.get(c, 0)) for c in ("dead", "always-on", "selective")}


def data_warning(n_tokens: int, n_latents: int) -> str | None:
    """A plain sentence when there are far too few tokens per latent for a meaningful SAE."""
    ratio = n_tokens / max(n_latents, 1)
    if ratio >= 10:
        return None
    return (f"{n_tokens} tokens for {n_latents} latents is {ratio:.2g} tokens per latent. "
            "SAEs that find real features are trained on millions of tokens, thousands per "
            "latent; here most latents never fire and any single latent's score rests on a "
            "handful of tokens, so expect artefacts.")
