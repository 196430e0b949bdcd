"""Sparse autoencoders on activations: Top-K or ReLU + L1, tied or untied, fast on a CPU.

    x  [n, d_in]       activations (e.g. `blocks.L.hook_mlp_out`)
    z  [n, n_latents]  the sparse code: encode(x) = act(W_enc (x/scale - b_dec) + b_enc)
    x' [n, d_in]       decode(z) = (z W_dec + b_dec) * scale

Weights are stored [n_latents, d_in]: row i is what latent i reads (encoder) and writes
(decoder). With `tied` the decoder IS the encoder's transpose: one parameter, not a copy.
`b_dec` is subtracted before encoding (pre-encoder centring, as in Top-K SAEs).
`scale` is a scalar fixed from the training data so that the inputs have unit mean variance
per dimension: the L1 weight and the latent values then mean the same on every layer.

Speed: a training step runs one dense matmul without autograd to find the active entries
of the code (Top-K: k per row; ReLU: the positive ones), then a custom autograd function
decodes only those (`F.embedding_bag` with per-sample weights) and backpropagates through
them with a sampled matmul and a sparse-by-dense product. The gradients equal dense
autograd (tests check this): an inactive latent contributes no gradient anyway. A ReLU + L1
code starts dense and takes dense steps until it is sparse enough (SPARSE_CUTOFF).
Loss: mean squared error per element of the normalized input (+ l1 * the code's sum per
row, averaged over rows, for ReLU).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("topk", "relu")
SITES = {"mlp_out": "blocks.{layer}.hook_mlp_out", "mlp_post": "blocks.{layer}.mlp.hook_post"}
# A ReLU code takes the sparse step while at most this fraction of its entries is non-zero;
# above it, dense matmuls beat gathering and scattering that many rows. Measured (CPU ms per
# step, 256 x 576 rows, 4608 latents, 1 thread): dense 123-136 at any density; sparse 49 at
# 1%, 57 at 3%, 76 at 5%, 149 at 8%.
SPARSE_CUTOFF = 0.05
_EVAL_CHUNK = 2048   # rows per chunk when encoding many rows without autograd
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


# ---------------------------------------------------------------- config

@dataclass(frozen=True)
class SAEConfig:
    n_latents: int | None = None   # dictionary size; None -> expansion * d_in
    expansion: int = 8             # latents per input dimension when n_latents is None (the seed's ~6000 for 768)
    k: int = 32                    # active latents per token (Top-K only)
    tied: bool = True              # decoder = encoder transposed: one parameter, not a copy
    activation: str = "topk"       # "topk" (ReLU, then keep the k largest) | "relu" (ReLU + L1)
    l1: float = 1e-3               # weight of the L1 penalty on the code (relu only)
    epochs: int = 100              # passes over the training rows
    lr: float = 1e-4               # Adam learning rate
    batch_size: int = 256          # rows per optimizer step
    seed: int = 0                  # seeds the init, the train/val split and the shuffling
    val_fraction: float = 0.1      # fraction of rows held out for the validation curve

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.n_latents is not None and self.n_latents < 1:
            raise ValueError(f"n_latents must be at least 1, got {self.n_latents}")
        if self.activation == "topk":
            if self.k <= 0:
                raise ValueError(f"k must be at least 1, got {self.k}")
            if self.n_latents is not None and self.k > self.n_latents:
                raise ValueError(f"k ({self.k}) cannot exceed the number of latents ({self.n_latents})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite positive number, got {self.lr}")
        if not (math.isfinite(self.l1) and self.l1 >= 0):
            raise ValueError(f"l1 must be a finite number >= 0, got {self.l1}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def latents_for(self, d_in: int) -> int:
        """The dictionary size for inputs `d_in` wide (checks k against it)."""
        n = self.n_latents if self.n_latents is not None else self.expansion * d_in
        if self.activation == "topk" and self.k > n:
            raise ValueError(f"k ({self.k}) cannot exceed the number of latents ({n})")
        return n


# ---------------------------------------------------------------- the model

class SparseCode(NamedTuple):
    """A batch's active code entries in CSR layout (rows = batch rows)."""
    crow: torch.Tensor   # [B + 1] int64: row b's entries are crow[b]:crow[b + 1]
    cols: torch.Tensor   # [nnz] int64: the latent of each entry, ascending within a row
    pre: torch.Tensor    # [nnz] pre-activation of each entry (the code is its ReLU)


class SparseAutoencoder(nn.Module):
    def __init__(self, d_in: int, n_latents: int, k: int = 32, activation: str = "topk",
                 tied: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if d_in < 1 or n_latents < 1:
            raise ValueError(f"d_in and n_latents must be >= 1, got {d_in}, {n_latents}")
        if activation == "topk" and not 1 <= k <= n_latents:
            raise ValueError(f"k must be in 1..{n_latents}, got {k}")
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
    def active_code(self, xs: torch.Tensor, pre: torch.Tensor | None = None) -> SparseCode | None:
        """The entries of the code that may be non-zero, row by row (CSR), from one dense
        matmul without autograd (or the given pre-activations [B, latents]); None when a
        ReLU code is too dense for the sparse step to pay off."""
        with torch.no_grad():
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

    # --- persistence ---
    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """`sae.safetensors` (weights + scale) and `config.json` in `folder`."""
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / "sae.safetensors"))
        cfg = {**self.config_dict(), "metadata": metadata or {}}
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "SparseAutoencoder":
        from safetensors.torch import load_file
        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        cfg.pop("metadata", None)
        sae = cls(**cfg)
        sae.load_state_dict(load_file(str(folder / "sae.safetensors")))
        return sae


class _SparseCode(torch.autograd.Function):
    """ReLU code on the active entries and its decoding, with a hand-written backward that
    touches only those entries. Gradients equal dense autograd (an inactive latent has zero
    gradient there too), but instead of two more [B, latents] x [latents, d_in] matmuls:

      d loss / d code = <W_dec[latent], g[row]> per entry: a sampled matmul (SDDMM)
      d loss / d W    = S^T [xc; g]: a sparse [latents, 2B] x dense [2B, d_in] product
                        whose rows hold each latent's few (row, coefficient) pairs
    """

    @staticmethod
    def forward(ctx, xs, b_dec, W_enc, b_enc, W_dec, crow, cols, pre):
        vals = F.relu(pre)                                               # [nnz]
        w_dec = W_enc if W_dec is None else W_dec
        recon = F.embedding_bag(cols, w_dec, offsets=crow[:-1], per_sample_weights=vals,
                                mode="sum") + b_dec                      # [B, d]
        ctx.save_for_backward(xs, b_dec, W_enc, W_dec, crow, cols, vals)
        return recon, vals

    @staticmethod
    def backward(ctx, g, g_vals):                     # g [B, d], g_vals [nnz] or None
        xs, b_dec, W_enc, W_dec, crow, cols, vals = ctx.saved_tensors
        w_dec = W_enc if W_dec is None else W_dec
        B, L = xs.shape[0], W_enc.shape[0]
        g_code = _sampled_rows_dot(crow, cols, g, w_dec)                 # [nnz]
        if g_vals is not None:
            g_code = g_code + g_vals
        g_pre = g_code * (vals > 0)                                      # ReLU'
        xc = xs - b_dec
        g_b_enc = torch.zeros_like(W_enc[:, 0]).index_add_(0, cols, g_pre)
        by_latent = _by_latent(crow, cols, L)
        if W_dec is None:   # tied: one product for both roles (rows read xc, write g)
            g_w_enc = _scatter_rows(by_latent, [g_pre, vals], [xc, g])
            g_w_dec = None
        else:
            g_w_enc = _scatter_rows(by_latent, [g_pre], [xc])
            g_w_dec = _scatter_rows(by_latent, [vals], [g])
        # b_dec enters the decoder (+) and the encoder's centring (-): the sum over rows of
        # g_pre x W_enc[latent] equals g_b_enc @ W_enc, no gather needed
        g_b_dec = g.sum(0) - g_b_enc @ W_enc
        return None, g_b_dec, g_w_enc, g_b_enc, g_w_dec, None, None, None


class _DenseCode(torch.autograd.Function):
    """The dense step of a ReLU code (while it is too dense for the sparse one), with the
    matmuls of dense autograd minus one: autograd also forms d loss / d xc = g_pre W_enc
    ([B, latents] x [latents, d]) because b_dec enters the centring; its sum over rows is
    g_b_enc @ W_enc, a vector-matrix product. Tied weights get both gradient terms from one
    addmm. Gradients equal dense autograd (tests check this)."""

    @staticmethod
    def forward(ctx, xs, b_dec, W_enc, b_enc, W_dec):
        w_dec = W_enc if W_dec is None else W_dec
        xc = xs - b_dec
        z = F.relu(torch.addmm(b_enc, xc, W_enc.T))                      # [B, latents]
        recon = torch.addmm(b_dec, z, w_dec)                             # [B, d]
        ctx.save_for_backward(xc, z, W_enc, W_dec)
        return recon, z

    @staticmethod
    def backward(ctx, g, g_z):                        # g [B, d], g_z [B, latents] or None
        xc, z, W_enc, W_dec = ctx.saved_tensors
        w_dec = W_enc if W_dec is None else W_dec
        g_pre = g @ w_dec.T
        if g_z is not None:
            g_pre += g_z
        g_pre *= z > 0                                                   # ReLU'
        g_b_enc = g_pre.sum(0)
        if W_dec is None:   # tied: the encoder reads xc, the decoder writes g
            g_w_enc, g_w_dec = torch.addmm(g_pre.T @ xc, z.T, g), None
        else:
            g_w_enc, g_w_dec = g_pre.T @ xc, z.T @ g
        g_b_dec = g.sum(0) - g_b_enc @ W_enc
        return None, g_b_dec, g_w_enc, g_b_enc, g_w_dec


def _csr(crow, cols, values, shape) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow, cols, values, size=shape, check_invariants=False)


def _sampled_rows_dot(crow: torch.Tensor, cols: torch.Tensor, g: torch.Tensor,
                      w: torch.Tensor) -> torch.Tensor:
    """out[e] = <w[cols[e]], g[row of e]> for every entry e of the CSR pattern -> [nnz]."""
    pattern = _csr(crow, cols, torch.zeros(cols.numel(), dtype=g.dtype), (g.shape[0], w.shape[0]))
    return torch.sparse.sampled_addmm(pattern, g, w.T, beta=0.0).values()


def _by_latent(crow: torch.Tensor, cols: torch.Tensor, n_latents: int):
    """The entries grouped by latent: (order, batch row of each, CSR row pointers)."""
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1), crow.diff())
    order = torch.argsort(cols, stable=True)          # by latent, then by batch row
    lat_crow = torch.zeros(n_latents + 1, dtype=torch.int64)
    lat_crow[1:] = torch.bincount(cols, minlength=n_latents).cumsum(0)
    return order, rows[order], lat_crow


def _scatter_rows(by_latent, coefs: list[torch.Tensor], inputs: list[torch.Tensor]) -> torch.Tensor:
    """Row l = sum over the entries e of latent l of sum_r coefs[r][e] * inputs[r][row of e]
    -> [latents, d]: a sparse [latents, R*B] x dense [R*B, d] product."""
    order, rows, lat_crow = by_latent
    R, B = len(coefs), inputs[0].shape[0]
    cols = torch.stack([R * rows + r for r in range(R)], 1).reshape(-1)
    values = torch.stack([c[order] for c in coefs], 1).reshape(-1)
    S = _csr(R * lat_crow, cols, values, (lat_crow.numel() - 1, R * B))
    dense = torch.stack(inputs, 1).reshape(R * B, -1)
    # into a fresh uninitialised buffer with beta=0: `S @ dense` would zero-fill a result and
    # copy it twice more (8 ms vs 3 ms CPU for 6144 x 768, measured)
    out = torch.empty(S.shape[0], dense.shape[1], dtype=dense.dtype)
    return torch.addmm(out, S, dense, beta=0, out=out)


def init_sae(acts: torch.Tensor, cfg: SAEConfig) -> SparseAutoencoder:
    """A fresh SAE for `acts` [n, d_in]: seeded atoms, scale and b_dec from the data."""
    acts = _as_rows(acts)
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
    r = sae._activate(F.linear(xc, sae.W_enc, sae.b_enc)) @ sae.decoder_weight
    gain = float((r * xc).sum() / (r * r).sum().clamp_min(1e-12))
    if gain > 0:   # tied: code and atom both scale, so the reconstruction scales by gain
        sae.W_enc.mul_(math.sqrt(gain) if sae.tied else gain)


# ---------------------------------------------------------------- training

def loss_terms(sae: SparseAutoencoder, xs: torch.Tensor, recon: torch.Tensor,
               vals: torch.Tensor, l1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mse) on normalized rows: mean squared error per element, plus for relu the L1
    penalty l1 * (sum of the code per row, averaged over rows). `vals` is the dense code
    [B, latents] or the sparse code's values [nnz] (the code is >= 0, so |z| = z)."""
    mse = (recon - xs).pow(2).mean()
    if sae.activation == "relu" and l1 > 0:
        return mse + l1 * vals.sum() / xs.shape[0], mse
    return mse, mse


def dense_forward(sae: SparseAutoencoder, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain autograd on normalized rows: (reconstruction [B, d], dense code [B, latents])."""
    z = sae._activate(F.linear(xs - sae.b_dec, sae.W_enc, sae.b_enc))
    return z @ sae.decoder_weight + sae.b_dec, z


@dataclass
class _Tally:
    """Sums over one epoch's batches of one split."""
    n_latents: int
    rows: int = 0
    loss: float = 0.0
    mse: float = 0.0
    l0: float = 0.0
    fired: torch.Tensor = field(default=None)

    def __post_init__(self):
        self.fired = torch.zeros(self.n_latents, dtype=torch.bool)

    def add(self, loss: float, mse: float, rows: int, vals: torch.Tensor,
            cols: torch.Tensor | None) -> None:
        """vals: the dense code [rows, latents] (cols None) or sparse values [nnz] at cols."""
        self.rows += rows
        self.loss += loss * rows
        self.mse += mse * rows
        on = vals > 0
        self.l0 += float(on.sum())
        if cols is None:
            self.fired |= on.any(0)
        else:
            self.fired[cols[on]] = True

    def metrics(self, scale2: float, variance: float) -> dict:
        mse = self.mse / max(self.rows, 1) * scale2          # back in the input's units
        return {"loss": self.loss / max(self.rows, 1), "mse": mse,
                "nmse": mse / max(variance, 1e-30), "l0": self.l0 / max(self.rows, 1),
                "dead_fraction": 1.0 - float(self.fired.float().mean())}


def _forward(sae: SparseAutoencoder, xs: torch.Tensor, dense: bool):
    """(recon, values, cols or None): the sparse step, or plain autograd when `dense` or
    when the ReLU code turns out too dense."""
    code = None if dense else sae.active_code(xs)
    if code is None:
        if sae.activation == "relu":
            recon, z = _DenseCode.apply(xs, sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec)
        else:
            recon, z = dense_forward(sae, xs)
        return recon, z, None
    recon, vals = sae.sparse_forward(xs, code)
    return recon, vals, code.cols


def _step(sae: SparseAutoencoder, opt: torch.optim.Optimizer, xs: torch.Tensor,
          cfg: SAEConfig, tally: _Tally, dense: bool = False) -> bool:
    """One Adam step on the batch; returns whether the next step should be dense (a ReLU
    code denser than SPARSE_CUTOFF), so a dense phase costs no wasted selection matmul."""
    recon, vals, cols = _forward(sae, xs, dense)
    loss, mse = loss_terms(sae, xs, recon, vals, cfg.l1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if not sae.tied:
        _normalize_rows(sae.W_dec)   # unit atoms: the L1 cannot shrink z by growing atoms
    vals = vals.detach()
    tally.add(loss.item(), mse.item(), xs.shape[0], vals, cols)
    if sae.activation == "topk":
        return False
    density = float((vals > 0).sum()) / (xs.shape[0] * sae.n_latents)
    return density > SPARSE_CUTOFF


@torch.no_grad()
def _evaluate(sae: SparseAutoencoder, xs: torch.Tensor, cfg: SAEConfig) -> _Tally:
    tally = _Tally(sae.n_latents)
    for chunk in xs.split(_EVAL_CHUNK):
        recon, vals, cols = _forward(sae, chunk, dense=False)
        loss, mse = loss_terms(sae, chunk, recon, vals, cfg.l1)
        tally.add(loss.item(), mse.item(), chunk.shape[0], vals, cols)
    return tally


def split_rows(n: int, cfg: SAEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, val) row indices; val has at least one row when asked for and n >= 2."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 1))
    n_val = int(round(n * cfg.val_fraction))
    if cfg.val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return perm[n_val:], perm[:n_val]


class SAETrainer:
    """Trains one SAE an epoch at a time (train_sae loops it; the bench interleaves trainers).

    Rows are split once into train and validation (seeded); each epoch reshuffles the
    training rows, takes one Adam(fused) step per batch and scores the validation rows.
    """

    def __init__(self, acts: torch.Tensor, cfg: SAEConfig, sae: SparseAutoencoder | None = None):
        acts = _as_rows(acts)
        if acts.shape[0] < 2:
            raise ValueError(f"need at least 2 rows of activations to train, got {acts.shape[0]}")
        self.cfg = cfg
        self.sae = sae if sae is not None else init_sae(acts, cfg)
        train_idx, val_idx = split_rows(acts.shape[0], cfg)
        xs = acts / self.sae.scale                      # normalized once, not per batch
        self.train, self.val = xs[train_idx], xs[val_idx]
        self.var_train, self.var_val = _variance(acts[train_idx]), _variance(acts[val_idx])
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, fused=True)
        self.gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.epochs_done, self.seconds = 0, 0.0
        self.dense = cfg.activation == "relu"   # a fresh ReLU code is dense: start dense

    def epoch(self) -> dict:
        """One pass over the training rows; returns the epoch's metrics (`on_epoch` row)."""
        t0 = time.perf_counter()
        scale2 = float(self.sae.scale) ** 2
        tally = _Tally(self.sae.n_latents)
        order = torch.randperm(self.train.shape[0], generator=self.gen)
        for batch in order.split(self.cfg.batch_size):
            self.dense = _step(self.sae, self.opt, self.train[batch], self.cfg, tally, self.dense)
        self.epochs_done += 1
        row = {"epoch": self.epochs_done, "epochs": self.cfg.epochs,
               **tally.metrics(scale2, self.var_train)}
        if self.val.shape[0]:
            vm = _evaluate(self.sae, self.val, self.cfg).metrics(scale2, self.var_val)
            row.update({f"val_{k}": v for k, v in vm.items()})
        self.seconds += time.perf_counter() - t0
        row["seconds"] = self.seconds
        return row


def train_sae(acts: torch.Tensor, cfg: SAEConfig, on_epoch: Callable[[dict], None] | None = None,
              sae: SparseAutoencoder | None = None) -> tuple[SparseAutoencoder, pd.DataFrame]:
    """Train an SAE on `acts` [n_tokens, d_in] (float32).

    `on_epoch(row)` is called after each epoch with that epoch's metrics (train and `val_`
    prefixed, plus epoch, epochs, seconds). Pass `sae` (from `init_sae`) to keep a handle on
    the model while it trains: a caller that is interrupted still has the model so far.
    Returns (sae, history): one row per (epoch, split) with loss, mse, nmse, l0, dead_fraction.
    """
    trainer = SAETrainer(acts, cfg, sae)
    rows = []
    for _ in range(cfg.epochs):
        rows.append(trainer.epoch())
        if on_epoch is not None:
            on_epoch(rows[-1])
    return trainer.sae, history_frame(rows)


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """`on_epoch` rows -> tidy history: one row per (epoch, split)."""
    metrics = ["loss", "mse", "nmse", "l0", "dead_fraction"]
    out = []
    for r in rows:
        out.append({"epoch": r["epoch"], "split": "train", **{m: r[m] for m in metrics}})
        if f"val_{metrics[0]}" in r:
            out.append({"epoch": r["epoch"], "split": "val", **{m: r[f"val_{m}"] for m in metrics}})
    return pd.DataFrame(out, columns=["epoch", "split", *metrics])


# ---------------------------------------------------------------- latent statistics

@torch.no_grad()
def encode_rows(sae: SparseAutoencoder, acts: torch.Tensor) -> torch.Tensor:
    """Dense code [n, latents] of raw activations, in chunks (no autograd)."""
    acts = _as_rows(acts)
    return torch.cat([sae.encode(c) for c in acts.split(_EVAL_CHUNK)]) if len(acts) else \
        torch.zeros(0, sae.n_latents)


@torch.no_grad()
def latent_stats(sae: SparseAutoencoder, acts: torch.Tensor) -> pd.DataFrame:
    """One row per latent: density (fraction of tokens where it is > 0), max and mean
    activation (mean over all tokens; mean_active over the tokens where it fires), and
    its class: dead (never active), always-on (active on every token), selective."""
    acts = _as_rows(acts)
    count = torch.zeros(sae.n_latents)
    total = torch.zeros(sae.n_latents)
    peak = torch.zeros(sae.n_latents)
    for chunk in acts.split(_EVAL_CHUNK):
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


# ---------------------------------------------------------------- helpers

def _as_rows(acts: torch.Tensor) -> torch.Tensor:
    acts = torch.as_tensor(acts).detach().float().cpu()
    if acts.ndim != 2:
        raise ValueError(f"activations must be a 2-D [tokens, d_in] tensor, got shape {tuple(acts.shape)}")
    if not torch.isfinite(acts).all():
        raise ValueError("activations contain NaN or infinite values")
    return acts


def _variance(x: torch.Tensor) -> float:
    """Mean over dimensions of the per-dimension variance (the nMSE denominator)."""
    return float(x.var(0, unbiased=False).mean()) if x.shape[0] else float("nan")


def _rms_deviation(x: torch.Tensor) -> torch.Tensor:
    return x.var(0, unbiased=False).mean().sqrt()


@torch.no_grad()
def _normalize_rows(w: torch.Tensor) -> None:
    w /= w.norm(dim=1, keepdim=True).clamp_min(1e-8)


# ---------------------------------------------------------------- activations of a text

MIN_TOKENS = 8        # fewer rows than this cannot be split into train and validation sensibly


@dataclass(frozen=True)
class TextActivations:
    """One layer's activations over a text, one row per kept token, in text order."""
    acts: torch.Tensor                    # [n_tokens, d_in] float32 on the CPU
    token_ids: tuple[int, ...]            # the kept tokens
    tokens: tuple[str, ...]               # each token's own characters in the text
    spans: tuple[tuple[int, int], ...]    # (start, end) character offsets in the text
    positions: tuple[int, ...]            # position in the model's sequence (0 = first)
    hook: str                             # e.g. "blocks.3.hook_mlp_out"
    dropped_first: bool                   # was position 0 (an outlier "attention sink") dropped?

    @property
    def n_tokens(self) -> int:
        return self.acts.shape[0]


def hook_for(layer: int, site: str = "mlp_out") -> str:
    if site not in SITES:
        raise ValueError(f"site must be one of {list(SITES)}, got {site!r}")
    return SITES[site].format(layer=layer)


@torch.no_grad()
def text_activations(lm, text: str, layer: int, site: str = "mlp_out",
                     drop_first: bool = True) -> TextActivations:
    """Run `text` through the model and keep `blocks.{layer}.hook_mlp_out` (d_model wide,
    the seed's "MLP activations") or `blocks.{layer}.mlp.hook_post` (d_mlp hidden neurons).

    Texts longer than the model's context run as consecutive windows. With `drop_first`, the
    first position of each window is dropped: it carries activations tens of times larger
    than the rest (the attention sink), which would dominate the reconstruction loss.
    """
    from lab.hooks import run_with_hooks
    if not text or not text.strip():
        raise ValueError("the text is empty: paste or upload a text to run through the model")
    hook = hook_for(layer, site)
    if not 0 <= layer < lm.n_layers:
        raise ValueError(f"layer {layer} out of range for {lm.name}: valid 0..{lm.n_layers - 1}")
    enc = lm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, spans = list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]
    window = max(int(lm.n_ctx), 2)
    rows, keep = [], []
    for start in range(0, len(ids), window):
        chunk = torch.tensor([ids[start:start + window]], device=lm.device)
        out = run_with_hooks(lm, [hook], input_ids=chunk, detach=True)[hook][0]   # [pos, d]
        first = 1 if drop_first else 0
        rows.append(out[first:].float().cpu())
        keep += range(start + first, start + chunk.shape[1])
    n = len(keep)
    if n < MIN_TOKENS:
        raise ValueError(f"the text has {n} usable tokens; at least {MIN_TOKENS} are needed "
                         "to train and validate a sparse autoencoder")
    acts = torch.cat(rows)
    return TextActivations(acts=acts, token_ids=tuple(ids[i] for i in keep),
                           tokens=tuple(text[spans[i][0]:spans[i][1]] for i in keep),
                           spans=tuple(spans[i] for i in keep), positions=tuple(keep),
                           hook=hook, dropped_first=drop_first)


def data_warning(n_tokens: int, n_latents: int) -> str | None:
    """A plain sentence when there are far too few tokens per latent for a meaningful SAE."""
    ratio = n_tokens / max(n_latents, 1)
    if ratio >= 10:
        return None
    return (f"{n_tokens} tokens for {n_latents} latents is {ratio:.2g} tokens per latent. "
            "SAEs that find real features are trained on millions of tokens, thousands per "
            "latent; here most latents never fire and any single latent's score rests on a "
            "handful of tokens, so expect artefacts.")


def to_zip_bytes(sae: SparseAutoencoder, metadata: dict | None = None) -> bytes:
    """The `save` folder (sae.safetensors + config.json) as one zip, for a download button."""
    import io
    import tempfile
    import zipfile
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        folder = sae.save(tmp, metadata)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in ("sae.safetensors", "config.json"):
                zf.write(folder / name, name)
    return buf.getvalue()
