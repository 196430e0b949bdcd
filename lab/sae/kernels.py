"""The sparse training step's autograd functions: exactly dense autograd's gradients, less work.

A training step runs one dense matmul without autograd to find the active entries of the code
(Top-K: k per row; ReLU: the positive ones), then `_SparseCode` decodes only those
(`F.embedding_bag` with per-sample weights) and backpropagates through them with a sampled
matmul and a sparse-by-dense product. An inactive latent contributes no gradient anyway, so
the gradients equal dense autograd (tests check this). A ReLU + L1 code starts dense and takes
`_DenseCode` steps until it is sparse enough (SPARSE_CUTOFF).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

# A ReLU code takes the sparse step while at most this fraction of its entries is non-zero;
# above it, dense matmuls beat gathering and scattering that many rows. Measured (CPU ms per
# step, 256 x 576 rows, 4608 latents, 1 thread): dense 123-136 at any density; sparse 49 at
# 1%, 57 at 3%, 76 at 5%, 149 at 8%.
SPARSE_CUTOFF = 0.05
# Device types that have every kernel the sparse step calls (sparse_sampled_addmm, the CSR x
# dense addmm, _embedding_bag, index_add / index_put, bincount, repeat_interleave: each has a
# CPU and a CUDA kernel, per the `*_cuda` entries in ATen's ops headers of torch 2.13).
# Elsewhere (mps) every step takes the dense path.
SPARSE_DEVICES = ("cpu", "cuda")
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class _SparseCode(torch.autograd.Function):
    """ReLU code on the active entries and its decoding, with a hand-written backward
    (`sparse_grads`) that touches only those entries."""

    @staticmethod
    def forward(ctx, xs, b_dec, W_enc, b_enc, W_dec, crow, cols, pre):
        recon, vals = sparse_decode(b_dec, W_enc, W_dec, crow, cols, pre)
        ctx.save_for_backward(xs, b_dec, W_enc, W_dec, crow, cols, vals)
        return recon, vals

    @staticmethod
    def backward(ctx, g, g_vals):                     # g [B, d], g_vals [nnz] or None
        xs, b_dec, W_enc, W_dec, crow, cols, vals = ctx.saved_tensors
        g_b_dec, g_w_enc, g_b_enc, g_w_dec = sparse_grads(xs, b_dec, W_enc, W_dec, crow, cols,
                                                          vals, g, g_vals)
        return None, g_b_dec, g_w_enc, g_b_enc, g_w_dec, None, None, None


def sparse_decode(b_dec, W_enc, W_dec, crow, cols, pre):
    """(reconstruction [B, d], code values [nnz]) of the active entries' pre-activations."""
    vals = F.relu(pre)                                                   # [nnz]
    w_dec = W_enc if W_dec is None else W_dec
    recon = F.embedding_bag(cols, w_dec, offsets=crow[:-1], per_sample_weights=vals,
                            mode="sum") + b_dec                          # [B, d]
    return recon, vals


def sparse_grads(xs, b_dec, W_enc, W_dec, crow, cols, vals, g, g_vals, out=None):
    """Gradients (b_dec, W_enc, b_enc, W_dec or None) of a sparse step from d loss / d recon
    `g` [B, d] and d loss / d vals `g_vals` ([nnz], a scalar or None); into the buffers `out`
    (same order) when given. Equal to dense autograd's (an inactive latent has zero gradient
    there too), but instead of two more [B, latents] x [latents, d_in] matmuls:

      d loss / d code = <W_dec[latent], g[row]> per entry: a sampled matmul (SDDMM)
      d loss / d W    = S^T [xc; g]: a sparse [latents, 2B] x dense [2B, d_in] product
                        whose rows hold each latent's few (row, coefficient) pairs
    """
    o_b_dec, o_w_enc, o_b_enc, o_w_dec = out if out is not None else (None,) * 4
    w_dec = W_enc if W_dec is None else W_dec
    L = W_enc.shape[0]
    g_code = _sampled_rows_dot(crow, cols, g, w_dec)                     # [nnz]
    if g_vals is not None:
        g_code = g_code + g_vals
    g_pre = g_code * (vals > 0)                                          # ReLU'
    xc = xs - b_dec
    g_b_enc = _sum_by_latent(cols, g_pre, W_enc, o_b_enc)
    by_latent = _by_latent(crow, cols, L)
    if W_dec is None:   # tied: one product for both roles (rows read xc, write g)
        g_w_enc = _scatter_rows(by_latent, [g_pre, vals], [xc, g], o_w_enc)
        g_w_dec = None
    else:
        g_w_enc = _scatter_rows(by_latent, [g_pre], [xc], o_w_enc)
        g_w_dec = _scatter_rows(by_latent, [vals], [g], o_w_dec)
    # b_dec enters the decoder (+) and the encoder's centring (-): the sum over rows of
    # g_pre x W_enc[latent] equals g_b_enc @ W_enc, no gather needed
    g_b_dec = torch.sub(g.sum(0), g_b_enc @ W_enc, out=o_b_dec)
    return g_b_dec, g_w_enc, g_b_enc, g_w_dec


class _DenseCode(torch.autograd.Function):
    """The dense step of a ReLU code (while it is too dense for the sparse one), with the
    matmuls of dense autograd minus one (`dense_grads`)."""

    @staticmethod
    def forward(ctx, xs, b_dec, W_enc, b_enc, W_dec):
        recon, z, xc = dense_relu(xs, b_dec, W_enc, b_enc, W_dec)
        ctx.save_for_backward(xc, z, W_enc, W_dec)
        return recon, z

    @staticmethod
    def backward(ctx, g, g_z):                        # g [B, d], g_z [B, latents] or None
        xc, z, W_enc, W_dec = ctx.saved_tensors
        return (None, *dense_grads(xc, z, W_enc, W_dec, g, g_z))


def dense_relu(xs, b_dec, W_enc, b_enc, W_dec, pre=None):
    """(reconstruction [B, d], dense ReLU code [B, latents], centred rows xc [B, d]); the code
    is written into `pre` ([B, latents]) when given."""
    w_dec = W_enc if W_dec is None else W_dec
    xc = xs - b_dec
    z = F.relu_(torch.addmm(b_enc, xc, W_enc.T, out=pre))                # [B, latents]
    recon = torch.addmm(b_dec, z, w_dec)                                 # [B, d]
    return recon, z, xc


def dense_grads(xc, z, W_enc, W_dec, g, g_z, out=None):
    """Gradients (b_dec, W_enc, b_enc, W_dec or None) of the dense ReLU step, into `out` when
    given. Dense autograd also forms d loss / d xc = g_pre W_enc ([B, latents] x [latents, d])
    because b_dec enters the centring; its sum over rows is g_b_enc @ W_enc, a vector-matrix
    product. Tied weights get both gradient terms from one addmm. Equal to dense autograd's
    (tests check this)."""
    o_b_dec, o_w_enc, o_b_enc, o_w_dec = out if out is not None else (None,) * 4
    w_dec = W_enc if W_dec is None else W_dec
    g_pre = g @ w_dec.T
    if g_z is not None:
        g_pre += g_z
    g_pre *= z > 0                                                       # ReLU'
    g_b_enc = torch.sum(g_pre, 0, out=o_b_enc)
    if W_dec is None:   # tied: the encoder reads xc, the decoder writes g
        g_w_enc = torch.addmm(g_pre.T @ xc, z.T, g, out=o_w_enc)
        g_w_dec = None
    else:
        g_w_enc = torch.mm(g_pre.T, xc, out=o_w_enc)
        g_w_dec = torch.mm(z.T, g, out=o_w_dec)
    g_b_dec = torch.sub(g.sum(0), g_b_enc @ W_enc, out=o_b_dec)
    return g_b_dec, g_w_enc, g_b_enc, g_w_dec


def _sum_by_latent(cols: torch.Tensor, values: torch.Tensor, W_enc: torch.Tensor,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """[latents]: the sum of `values` per latent, in the same order on every run. The CPU's
    index_add_ adds entry by entry; CUDA's uses atomics (an order that changes from run to
    run), its index_put_ with accumulate sorts the entries first."""
    out = torch.zeros_like(W_enc[:, 0]) if out is None else out.zero_()
    if out.is_cuda:
        return out.index_put_((cols,), values, accumulate=True)
    return out.index_add_(0, cols, values)


def _csr(crow, cols, values, shape) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow, cols, values, size=shape, check_invariants=False)


def _sampled_rows_dot(crow: torch.Tensor, cols: torch.Tensor, g: torch.Tensor,
                      w: torch.Tensor) -> torch.Tensor:
    """out[e] = <w[cols[e]], g[row of e]> for every entry e of the CSR pattern -> [nnz]."""
    zeros = torch.zeros(cols.numel(), dtype=g.dtype, device=g.device)
    pattern = _csr(crow, cols, zeros, (g.shape[0], w.shape[0]))
    return torch.sparse.sampled_addmm(pattern, g, w.T, beta=0.0).values()


def _by_latent(crow: torch.Tensor, cols: torch.Tensor, n_latents: int):
    """The entries grouped by latent: (order, batch row of each, CSR row pointers)."""
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=crow.device), crow.diff())
    order = _stable_order(cols, n_latents)            # by latent, then by batch row
    lat_crow = torch.zeros(n_latents + 1, dtype=torch.int64, device=cols.device)
    lat_crow[1:] = torch.bincount(cols, minlength=n_latents).cumsum(0)
    return order, rows[order], lat_crow


def _stable_order(cols: torch.Tensor, n_latents: int) -> torch.Tensor:
    """torch.argsort(cols, stable=True). On the CPU with < 2^16 latents, numpy's stable sort
    of 16-bit keys, a radix sort: 8192 entries 0.03 ms vs 0.25 ms (2 threads, measured)."""
    if cols.device.type != "cpu" or n_latents > 1 << 16:
        return torch.argsort(cols, stable=True)
    return torch.from_numpy(np.argsort(cols.numpy().astype(np.uint16), kind="stable"))


def _scatter_rows(by_latent, coefs: list[torch.Tensor], inputs: list[torch.Tensor],
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Row l = sum over the entries e of latent l of sum_r coefs[r][e] * inputs[r][row of e]
    -> [latents, d]: a sparse [latents, R*B] x dense [R*B, d] product."""
    order, rows, lat_crow = by_latent
    R, B = len(coefs), inputs[0].shape[0]
    cols = torch.stack([R * rows + r for r in range(R)], 1).reshape(-1)
    values = torch.stack([c[order] for c in coefs], 1).reshape(-1)
    S = _csr(R * lat_crow, cols, values, (lat_crow.numel() - 1, R * B))
    dense = torch.stack(inputs, 1).reshape(R * B, -1)
    # into an uninitialised (or the given) buffer with beta=0: `S @ dense` would zero-fill a
    # result and copy it twice more (8 ms vs 3 ms CPU for 6144 x 768, measured)
    if out is None:
        out = torch.empty(S.shape[0], dense.shape[1], dtype=dense.dtype, device=dense.device)
    return torch.addmm(out, S, dense, beta=0, out=out)
