"""Sparse autoencoders on activations: Top-K or ReLU + L1, tied or untied, fast on a CPU.

    x  [n, d_in]       activations (e.g. `blocks.L.hook_mlp_out`)
    z  [n, n_latents]  the sparse code: encode(x) = act(W_enc (x/scale - b_dec) + b_enc)
    x' [n, d_in]       decode(z) = (z W_dec + b_dec) * scale

Weights are stored [n_latents, d_in]: row i is what latent i reads (encoder) and writes
(decoder). With `tied` the decoder IS the encoder's transpose: one parameter, not a copy.
`b_dec` is subtracted before encoding (pre-encoder centring, as in Top-K SAEs).
`scale` is a scalar fixed from the training data so that the inputs have unit mean variance
per dimension: the L1 weight and the latent values then mean the same on every layer.
Losses are small pure functions: `loss_terms` (mean squared error per element of the
normalized input, + l1 * the code's sum per row, averaged over rows, for ReLU) and
`dense_forward` (the plain-autograd reference the sparse kernels are tested against).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lab.sae.config import SAEConfig
from lab.sae.kernels import SPARSE_CUTOFF, _SparseCode
from lab.sae.select import LowPrecision, fast_select, topk_bf16

EVAL_CHUNK = 2048   # rows per chunk when encoding many rows without autograd


class SparseCode(NamedTuple):
    """A batch's active code entries in CSR layout (rows = batch rows)."""
    crow: torch.Tensor   # [B + 1] int64: row b's entries are crow[b]:crow[b + 1]
    cols: torch.Tensor   # [nnz] int64: the latent of each entry, ascending within a row
    pre: torch.Tensor    # [nnz] pre-activation of each entry (the code is its ReLU)


class SparseAutoencoder(nn.Module):
    def __init__(self, d_in: int, n_latents: int, k: int = 32, activation: str = "topk",
                 tied: bool = True):
        super().__init__()
        if d_in < 1:
            raise ValueError(f"d_in must be at least 1, got {d_in}")
        # the config's own checks (activation, n_latents >= 1, 1 <= k <= n_latents)
        SAEConfig(n_latents=n_latents, k=k, activation=activation, tied=tied)
        self.d_in, self.n_latents, self.k = d_in, n_latents, k
        self.activation, self.tied = activation, tied
        self.W_enc = nn.Parameter(torch.empty(n_latents, d_in))        # [latents, d_in]
        if tied:
            self.register_parameter("W_dec", None)
        else:
            self.W_dec = nn.Parameter(torch.empty(n_latents, d_in))    # [latents, d_in]
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(()))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random atoms; an untied encoder starts as the decoder's transpose."""
        with torch.no_grad():
            w = torch.randn(self.n_latents, self.d_in, generator=generator)
            w /= w.norm(dim=1, keepdim=True)
            self.W_enc.copy_(w)
            if not self.tied:
                self.W_dec.copy_(w)

    @property
    def decoder_weight(self) -> torch.Tensor:
        """[latents, d_in]: row i is latent i's atom (the encoder weight itself when tied)."""
        return self.W_enc if self.tied else self.W_dec

    def config_dict(self) -> dict:
        return {"d_in": self.d_in, "n_latents": self.n_latents, "k": self.k,
                "activation": self.activation, "tied": self.tied}

    # --- dense reference path (any shape [..., d_in]) ---
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x / self.scale - self.b_dec, self.W_enc, self.b_enc)

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        z = F.relu(pre)
        if self.activation == "topk":
            vals, idx = z.topk(self.k, dim=-1)
            z = torch.zeros_like(z).scatter(-1, idx, vals)
        return z

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., n_latents], in units of the normalized input."""
        return self._activate(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[..., n_latents] -> [..., d_in], in the input's own units."""
        return (z @ self.decoder_weight + self.b_dec) * self.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction [..., d_in], code [..., n_latents])."""
        z = self.encode(x)
        return self.decode(z), z

    # --- sparse path on normalized rows xs [B, d_in] ---
    def active_code(self, xs: torch.Tensor, pre: torch.Tensor | None = None,
                    low: LowPrecision | None = None) -> SparseCode | None:
        """The entries of the code that may be non-zero, row by row (CSR), from one dense
        matmul without autograd (or the given pre-activations [B, latents]; or, for Top-K
        with `low`, the bfloat16 ranking of lab.sae.select); None when a ReLU code is too
        dense for the sparse step to pay off."""
        with torch.no_grad():
            if low is not None and self.activation == "topk":
                idx, vals = topk_bf16(xs - self.b_dec, self.W_enc, self.b_enc, self.k, low)
                crow = torch.arange(0, idx.numel() + 1, self.k, device=xs.device)
                return SparseCode(crow, idx.reshape(-1), vals.reshape(-1))
            if pre is None:
                pre = F.linear(xs - self.b_dec, self.W_enc, self.b_enc)  # [B, latents]
            B = pre.shape[0]
            if self.activation == "topk":   # k per row, latents ascending within a row
                idx = pre.topk(self.k, dim=1, sorted=False).indices.sort(dim=1).values
                crow = torch.arange(0, B * self.k + 1, self.k, device=pre.device)
                return SparseCode(crow, idx.reshape(-1), pre.gather(1, idx).reshape(-1))
            on = pre > 0
            counts = on.sum(1)
            if int(counts.sum()) > SPARSE_CUTOFF * B * self.n_latents:
                return None
            rows, cols = on.nonzero(as_tuple=True)                       # row-major order
            crow = torch.zeros(B + 1, dtype=torch.int64, device=pre.device)
            crow[1:] = counts.cumsum(0)
            return SparseCode(crow, cols, pre[rows, cols])

    def sparse_forward(self, xs: torch.Tensor, code: SparseCode) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized rows xs [B, d_in] and their `active_code` -> (normalized reconstruction
        [B, d_in], code values [nnz], aligned with code.cols). Differentiable in the weights
        and biases, with exactly dense autograd's gradients."""
        return _SparseCode.apply(xs, self.b_dec, self.W_enc, self.b_enc, self.W_dec,
                                 code.crow, code.cols, code.pre)

    # --- persistence (lab.sae.persist) ---
    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """`sae.safetensors` (weights + scale) and `config.json` in `folder`."""
        from lab.sae.persist import save
        return save(self, folder, metadata)

    @classmethod
    def load(cls, folder: str | Path) -> "SparseAutoencoder":
        from lab.sae.persist import load
        return load(folder, cls)


def init_sae(acts: torch.Tensor, cfg: SAEConfig) -> SparseAutoencoder:
    """A fresh SAE for `acts` [n, d_in]: seeded atoms, scale and b_dec from the data."""
    acts = as_rows(acts)
    d_in = acts.shape[1]
    gen = torch.Generator().manual_seed(cfg.seed)
    sae = SparseAutoencoder(d_in, cfg.latents_for(d_in), cfg.k, cfg.activation, cfg.tied)
    sae.reset_parameters(gen)
    with torch.no_grad():
        sae.scale.fill_(_rms_deviation(acts).clamp_min(1e-8))
        sae.b_dec.copy_(acts.mean(0) / sae.scale)
        _fit_init_gain(sae, acts[:4096] / sae.scale)
    return sae


@torch.no_grad()
def _fit_init_gain(sae: SparseAutoencoder, xs: torch.Tensor) -> None:
    """Scale the random encoder so the first reconstruction has the data's size.

    Unit atoms with k (or, for ReLU, about half of all) latents active add up to a vector far
    longer than the input (nMSE >> 1 at step 0, e.g. k=32 on 64-wide inputs). The least-squares
    gain a = <r, x> / <r, r> of the initial reconstruction r fixes that; Top-K picks the same
    latents after a positive rescale, so only magnitudes change.
    """
    xc = xs - sae.b_dec
    code = sae.active_code(xs, low=low_precision(sae, xs.shape[0])) \
        if sae.activation == "topk" else None
    if code is None:   # ReLU: about half the code is on at init, the dense pass is cheaper
        r = sae._activate(F.linear(xc, sae.W_enc, sae.b_enc)) @ sae.decoder_weight
    else:              # k atoms per row, summed (no [rows, latents] code, no dense decode)
        r = F.embedding_bag(code.cols, sae.decoder_weight, offsets=code.crow[:-1],
                            per_sample_weights=F.relu(code.pre), mode="sum")
    gain = float((r * xc).sum() / (r * r).sum().clamp_min(1e-12))
    if gain > 0:   # tied: code and atom both scale, so the reconstruction scales by gain
        sae.W_enc.mul_(math.sqrt(gain) if sae.tied else gain)


def low_precision(sae: SparseAutoencoder, batch: int) -> LowPrecision | None:
    """bfloat16 buffers for `sae`'s Top-K selection where lab.sae.select makes it fast."""
    if sae.activation != "topk" or not fast_select(sae.W_enc.device, sae.k, sae.n_latents):
        return None
    return LowPrecision(sae.n_latents, sae.d_in, batch)


# ---------------------------------------------------------------- losses

def loss_terms(sae: SparseAutoencoder, xs: torch.Tensor, recon: torch.Tensor,
               vals: torch.Tensor, l1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mse) on normalized rows: mean squared error per element, plus for relu the L1
    penalty l1 * (sum of the code per row, averaged over rows). `vals` is the dense code
    [B, latents] or the sparse code's values [nnz] (the code is >= 0, so |z| = z)."""
    mse = (recon - xs).pow(2).mean()
    if sae.activation == "relu" and l1 > 0:
        return mse + l1 * vals.sum() / xs.shape[0], mse
    return mse, mse


def loss_grads(sae: SparseAutoencoder, xs: torch.Tensor, recon: torch.Tensor,
               l1: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(d loss / d recon [B, d], d loss / d code: a scalar tensor, or None) of `loss_terms`,
    rounded as autograd rounds them (1/n in float32, then the products), so a step without
    autograd takes bit-identical steps."""
    one = recon.new_ones(())
    g = (recon - xs).mul_(one / recon.numel() * 2)
    if sae.activation == "relu" and l1 > 0:
        return g, one / xs.shape[0] * l1
    return g, None


def dense_forward(sae: SparseAutoencoder, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain autograd on normalized rows: (reconstruction [B, d], dense code [B, latents])."""
    z = sae._activate(F.linear(xs - sae.b_dec, sae.W_enc, sae.b_enc))
    return z @ sae.decoder_weight + sae.b_dec, z


def as_rows(acts: torch.Tensor) -> torch.Tensor:
    """Activations as float32 [rows, d_in] on the CPU, or one sentence saying why not."""
    acts = torch.as_tensor(acts).detach().float().cpu()
    if acts.ndim != 2:
        raise ValueError(f"activations must be a 2-D [tokens, d_in] tensor, got shape {tuple(acts.shape)}")
    if not torch.isfinite(acts).all():
        raise ValueError("activations contain NaN or infinite values")
    return acts


def _rms_deviation(x: torch.Tensor) -> torch.Tensor:
    return x.var(0, unbiased=False).mean().sqrt()

