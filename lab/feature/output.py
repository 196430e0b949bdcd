"""The output effect: a latent's decoder direction read through the final norm and the
unembedding, as feature dashboards show it.

    r = the direction in the residual stream (an mlp.hook_post SAE's neuron-space direction
        goes through the MLP's output projection first), scaled to RMS 1
    effect = read_out(r) - read_out(0), centred over the vocabulary

read_out is the final norm then the unembedding (lab.arch.Arch.read_out); subtracting
read_out(0) removes the norm's bias, which every direction would share. The promoted
tokens are those the direction pushes up if it were the whole residual stream at the last
layer: the latent's *direct* effect. Blocks after the SAE's layer transform what it writes,
so for a middle layer this is a hint, and the causal check is the test.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from lab import hooks

NOTE = ("Direct effect only: the decoder direction read as if it were the last layer's "
        "residual stream (final norm, then unembedding), centred over the vocabulary. Later "
        "blocks transform what the latent writes, so for a middle layer this is a hint about "
        "its role; the ablation below measures what it actually changes.")


@torch.no_grad()
def residual_direction(lm, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """`direction` [d_in] at `hook` as a residual-stream vector [d_model]."""
    direction = direction.to(lm.device).float()
    point = hooks.parse_hook(lm, hook)
    if point.kind == "mlp_post":   # neuron space: what the MLP's output projection makes of it
        proj = lm.arch.mlp_out_proj_of(lm.model, point.layer)
        return proj(direction[None])[0] - proj(torch.zeros_like(direction)[None])[0]
    return direction


@torch.no_grad()
def output_effect(lm, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """[vocab] centred logit change the direction causes when read out directly."""
    r = residual_direction(lm, hook, direction)
    r = r * (math.sqrt(r.numel()) / r.norm().clamp_min(1e-12))       # RMS 1: the norm's eps is moot
    read = lm.arch.read_out
    effect = read(lm.model, r[None])[0] - read(lm.model, torch.zeros_like(r)[None])[0]
    return (effect - effect.mean()).float().cpu()


def effect_table(tokenizer, effect: torch.Tensor, target_ids: set[int], n: int = 15) -> pd.DataFrame:
    """The n most promoted and n most suppressed tokens: direction, rank, token, logit."""
    rows = []
    for name, sign in (("promoted", 1), ("suppressed", -1)):
        for rank, i in enumerate(torch.topk(sign * effect, n).indices.tolist(), start=1):
            rows.append({"direction": name, "rank": rank, "token_id": i,
                         "token": tokenizer.decode([i]), "logit": float(effect[i]),
                         "target": i in target_ids})
    return pd.DataFrame(rows)
