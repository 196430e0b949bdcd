"""Training an SAE: seeded train/validation split, one Adam(fused) step per batch, tidy history.

Each step takes the sparse path of lab.sae.kernels (or a dense one while a ReLU code is too
dense for it); the loss is lab.sae.model.loss_terms. `SAETrainer` runs one epoch at a time
(the bench interleaves trainers); `train_sae` loops it and reports each epoch's row.

Training runs on the device asked for (default the CPU). The seeded parts (init, split,
shuffling) are drawn on the CPU whatever the device, so a run on another device differs from
the CPU's only by float rounding. The rows stay on the device when they fit in
`memory_fraction` of its free memory, else on the CPU, moved to the device a batch at a time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch

from lab.sae.config import SAEConfig
from lab.sae.kernels import (SPARSE_CUTOFF, SPARSE_DEVICES, _DenseCode, dense_grads, dense_relu,
                             sparse_decode, sparse_grads)
from lab.sae.devices import as_device, fits, rows_on
from lab.sae.model import (EVAL_CHUNK, SparseAutoencoder, dense_forward, init_sae, loss_grads,
                           loss_terms, low_precision)
from lab.sae.select import LowPrecision


@dataclass
class _Tally:
    """Sums over one epoch's batches of one split."""
    n_latents: int
    rows: int = 0
    loss: float = 0.0
    mse: float = 0.0
    l0: float = 0.0
    fired: torch.Tensor = field(default=None)
    device: torch.device | str = "cpu"

    def __post_init__(self):
        self.fired = torch.zeros(self.n_latents, dtype=torch.bool, device=self.device)

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


def _forward(sae: SparseAutoencoder, xs: torch.Tensor, dense: bool,
             low: LowPrecision | None = None):
    """(recon, values, cols or None): the sparse step, or plain autograd when `dense` or
    when the ReLU code turns out too dense."""
    dense = dense or xs.device.type not in SPARSE_DEVICES
    code = None if dense else sae.active_code(xs, low=low)
    if code is None:
        if sae.activation == "relu":
            recon, z = _DenseCode.apply(xs, sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec)
        else:
            recon, z = dense_forward(sae, xs)
        return recon, z, None
    recon, vals = sae.sparse_forward(xs, code)
    return recon, vals, code.cols


def _step(sae: SparseAutoencoder, opt: torch.optim.Optimizer, xs: torch.Tensor,
          cfg: SAEConfig, tally: _Tally, dense: bool = False,
          pre: torch.Tensor | None = None, low: LowPrecision | None = None) -> bool:
    """One Adam step on the batch; returns whether the next step should be dense (a ReLU
    code denser than SPARSE_CUTOFF), so a dense phase costs no wasted selection matmul.
    `pre` ([batch, latents]) is a buffer reused for the pre-activations from step to step (a
    fresh one faults its pages in); `low`: Top-K selects in bfloat16 (lab.sae.select)."""
    if xs.device.type in SPARSE_DEVICES or sae.activation == "relu":
        loss, mse, vals, cols = _gradients(sae, xs, cfg, dense, pre, low)
    else:   # Top-K where the sparse kernels are missing: plain autograd
        recon, vals = dense_forward(sae, xs)
        loss, mse = loss_terms(sae, xs, recon, vals, cfg.l1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        vals, cols = vals.detach(), None
    opt.step()
    if not sae.tied and cfg.unit_decoder:
        _normalize_rows(sae.W_dec)   # unit atoms: the L1 cannot shrink z by growing atoms
    tally.add(loss.item(), mse.item(), xs.shape[0], vals, cols)
    if sae.activation == "topk":
        return False
    density = float((vals > 0).sum()) / (xs.shape[0] * sae.n_latents)
    return density > SPARSE_CUTOFF


@torch.no_grad()
def _gradients(sae: SparseAutoencoder, xs: torch.Tensor, cfg: SAEConfig, dense: bool,
               pre: torch.Tensor | None, low: LowPrecision | None = None):
    """(loss, mse, code values, cols or None) of the batch, its gradients written straight
    into the parameters' .grad buffers by the kernels' own backward (the same numbers as
    autograd through _SparseCode / _DenseCode, without the graph or fresh gradient buffers)."""
    pre = pre[:xs.shape[0]] if pre is not None else None
    out = _grad_buffers(sae)
    code = None
    if low is not None and sae.activation == "topk":
        code = sae.active_code(xs, low=low)
    elif not dense and xs.device.type in SPARSE_DEVICES:   # None: a ReLU code too dense for it
        code = sae.active_code(xs, torch.addmm(sae.b_enc, xs - sae.b_dec, sae.W_enc.T, out=pre))
    if code is None:   # a dense ReLU step
        recon, z, xc = dense_relu(xs, sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec, pre)
        loss, mse = loss_terms(sae, xs, recon, z, cfg.l1)
        dense_grads(xc, z, sae.W_enc, sae.W_dec, *loss_grads(sae, xs, recon, cfg.l1), out=out)
        return loss, mse, z, None
    recon, vals = sparse_decode(sae.b_dec, sae.W_enc, sae.W_dec, code.crow, code.cols, code.pre)
    loss, mse = loss_terms(sae, xs, recon, vals, cfg.l1)
    sparse_grads(xs, sae.b_dec, sae.W_enc, sae.W_dec, code.crow, code.cols, vals,
                 *loss_grads(sae, xs, recon, cfg.l1), out=out)
    return loss, mse, vals, code.cols


def _grad_buffers(sae: SparseAutoencoder) -> tuple:
    """The .grad buffers (b_dec, W_enc, b_enc, W_dec or None), made once and then overwritten
    each step: a fresh 6144 x 768 buffer per step costs page faults, and zeroing it a pass."""
    for p in sae.parameters():
        if p.grad is None:
            p.grad = torch.empty_like(p)
    return (sae.b_dec.grad, sae.W_enc.grad, sae.b_enc.grad,
            None if sae.tied else sae.W_dec.grad)


@torch.no_grad()
def _evaluate(sae: SparseAutoencoder, xs: torch.Tensor, cfg: SAEConfig,
              low: LowPrecision | None = None) -> _Tally:
    device = sae.W_enc.device
    tally = _Tally(sae.n_latents, device=device)
    for chunk in xs.split(EVAL_CHUNK):
        chunk = chunk.to(device)   # a no-op for rows already there
        recon, vals, cols = _forward(sae, chunk, dense=False, low=low)
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
    `device` is where the SAE trains (default: where a given `sae` is, else the CPU); a given
    `sae` is moved there in place, so the caller's handle follows. `streamed`: the rows stayed
    on the CPU and go to the device a batch at a time.
    """

    def __init__(self, acts: torch.Tensor, cfg: SAEConfig, sae: SparseAutoencoder | None = None,
                 device: str | torch.device | None = None, memory_fraction: float = 0.5):
        if device is None and sae is not None:
            device = sae.W_enc.device   # a given SAE trains where it is
        self.device = as_device(device)
        acts = rows_on(acts, self.device)
        if acts.shape[0] < 2:
            raise ValueError(f"need at least 2 rows of activations to train, got {acts.shape[0]}")
        self.cfg = cfg
        self.sae = (sae if sae is not None else init_sae(acts, cfg)).to(self.device)
        train_idx, val_idx = (i.to(acts.device) for i in split_rows(acts.shape[0], cfg))
        # rows already on the device stay; else they go there if they fit, or stream
        self.streamed = acts.device != self.device and not fits(
            self.device, acts.numel() * acts.element_size(), memory_fraction)
        home = torch.device("cpu") if self.streamed else self.device
        xs = acts / self.sae.scale.to(acts.device)      # normalized once, not per batch
        self.train, self.val = xs[train_idx].to(home), xs[val_idx].to(home)
        self.var_train, self.var_val = _variance(acts[train_idx]), _variance(acts[val_idx])
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, fused=True)
        self.gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.epochs_done, self.seconds = 0, 0.0
        self.dense = cfg.activation == "relu"   # a fresh ReLU code is dense: start dense
        w = self.sae.W_enc
        batch = min(cfg.batch_size, self.train.shape[0])
        self.pre = torch.empty(batch, self.sae.n_latents, dtype=w.dtype, device=w.device)
        self.low = low_precision(self.sae, batch)   # None: Top-K ranks in float32

    def epoch(self) -> dict:
        """One pass over the training rows; returns the epoch's metrics (`on_epoch` row)."""
        t0 = time.perf_counter()
        scale2 = float(self.sae.scale) ** 2
        tally = _Tally(self.sae.n_latents, device=self.device)
        order = torch.randperm(self.train.shape[0], generator=self.gen).to(self.train.device)
        for batch in order.split(self.cfg.batch_size):
            xs = self.train[batch].to(self.device)   # streamed rows: one batch at a time
            self.dense = _step(self.sae, self.opt, xs, self.cfg, tally, self.dense, self.pre,
                               self.low)
        self.epochs_done += 1
        row = {"epoch": self.epochs_done, "epochs": self.cfg.epochs,
               **tally.metrics(scale2, self.var_train)}
        if self.val.shape[0]:
            vm = _evaluate(self.sae, self.val, self.cfg, self.low).metrics(scale2, self.var_val)
            row.update({f"val_{k}": v for k, v in vm.items()})
        self.seconds += time.perf_counter() - t0
        row["seconds"] = self.seconds
        return row


def train_sae(acts: torch.Tensor, cfg: SAEConfig, on_epoch: Callable[[dict], None] | None = None,
              sae: SparseAutoencoder | None = None, device: str | torch.device | None = None,
              memory_fraction: float = 0.5) -> tuple[SparseAutoencoder, pd.DataFrame]:
    """Train an SAE on `acts` [n_tokens, d_in] (float32).

    `on_epoch(row)` is called after each epoch with that epoch's metrics (train and `val_`
    prefixed, plus epoch, epochs, seconds). Pass `sae` (from `init_sae`) to keep a handle on
    the model while it trains: a caller that is interrupted still has the model so far.
    `device`, `memory_fraction`: see SAETrainer (the SAE is returned on `device`).
    Returns (sae, history): one row per (epoch, split) with loss, mse, nmse, l0, dead_fraction.
    """
    trainer = SAETrainer(acts, cfg, sae, device, memory_fraction)
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


def _variance(x: torch.Tensor) -> float:
    """Mean over dimensions of the per-dimension variance (the nMSE denominator)."""
    return float(x.var(0, unbiased=False).mean()) if x.shape[0] else float("nan")


@torch.no_grad()
def _normalize_rows(w: torch.Tensor) -> None:
    w /= w.norm(dim=1, keepdim=True).clamp_min(1e-8)
