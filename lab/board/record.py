"""What a result shares: its own `to_record()`, plus the few numbers the board needs that the
record leaves out (tensors): the optimized vectors of activation maximization, the decoder
directions of an SAE's top latents."""
from __future__ import annotations

DIGITS = 5          # significant digits of a shared vector: cosines stay exact to ~1e-5
TOP_DIRECTIONS = 10  # an SAE's top latents whose decoder directions travel with its share


def share_record(result) -> dict:
    """The record `result` shares to the board (what the board's validation expects)."""
    rec = result.to_record()
    name = rec.get("experiment")
    if name == "actmax" and "vectors" not in rec:
        rec["vectors"] = _rounded(result.embeds)
    elif name == "repro" and "vectors" not in rec:
        rec["vectors"] = _rounded(result.maximized.embeds)
    elif name == "sae" and "decoder" not in rec:
        rec["decoder"] = decoder_directions(result)
    return rec


def decoder_directions(result) -> dict[str, list[float]]:
    """latent (as text, a JSON key) -> its decoder row, for the best `TOP_DIRECTIONS` latents."""
    weight = result.sae.decoder_weight.detach().float().cpu()
    latents = result.selectivity.table["latent"].head(TOP_DIRECTIONS).astype(int).tolist()
    return {str(i): _rounded(weight[i]) for i in latents}


def _rounded(t) -> list:
    """A tensor as nested lists of floats with DIGITS significant digits (a compact JSON)."""
    return _round(t.detach().float().cpu().tolist())


def _round(x):
    if isinstance(x, list):
        return [_round(v) for v in x]
    return float(f"{x:.{DIGITS}g}")
