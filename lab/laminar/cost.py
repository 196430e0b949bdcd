"""Time before Run: FLOP counts of a sweep, divided by rates measured on this machine."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from lab.experiment import format_duration  # noqa: F401  (re-exported by lab.laminar)
from lab.laminar.capture import capture_mlp_out
from lab.laminar.config import LaminarConfig
from lab.models import LabModel
from lab.sae import train_sae


def forward_flops(lm: LabModel, n_windows: int, window_len: int) -> float:
    """FLOPs of the forward passes: 2 per body weight per token, plus causal attention."""
    tokens = n_windows * window_len
    body = lm.n_params - lm.W_E.numel()   # tied LM head: the embedding is counted once
    attention = 2 * lm.n_layers * window_len * lm.d_model   # QK^T and AV over T/2 keys on average
    return float(tokens * (2 * body + attention))


def sae_flops(n_rows: int, d_in: int, n_latents: int, epochs: int, val_fraction: float) -> float:
    """Dense-equivalent FLOPs of one SAE's training: per training row and epoch, the encoder
    and decoder matmuls forward (4 d m), backward (6 d m) and the active-latent pass (2 d m);
    per held-out row and epoch, 4 d m."""
    n_val = round(n_rows * val_fraction)
    per = d_in * n_latents
    return float(epochs * (12 * (n_rows - n_val) + 4 * n_val) * per + 2 * n_rows * per)


def layer_flops(lm: LabModel, cfg: LaminarConfig) -> float:
    """One layer's SAE training under `cfg`, dense-equivalent."""
    return sae_flops(cfg.n_tokens, lm.d_model, cfg.sae.latents_for(lm.d_model), cfg.sae.epochs,
                     cfg.sae.val_fraction)


@dataclass(frozen=True)
class Estimate:
    """Time before Run: FLOP counts divided by rates measured on this machine."""

    capture_gflop: float          # all forward passes
    layer_gflop: float            # one layer's SAE training (dense-equivalent)
    forward_gflops: float         # measured forward rate, GFLOP/s
    sae_gflops: float             # measured SAE training rate, GFLOP/s (dense steps)
    n_layers: int                 # layers to train

    @property
    def capture_seconds(self) -> float:
        return self.capture_gflop / self.forward_gflops

    @property
    def layer_seconds(self) -> float:
        return self.layer_gflop / self.sae_gflops

    @property
    def total_seconds(self) -> float:
        return self.capture_seconds + self.n_layers * self.layer_seconds


def measure_rates(lm: LabModel, cfg: LaminarConfig) -> tuple[float, float]:
    """(forward GFLOP/s, SAE GFLOP/s) from one short forward and two short SAE epochs, the
    SAE on the device it will train on (cfg.device_of; on Ray, this machine's stands in).

    The SAE runs on random rows, where a ReLU code stays dense: for "relu" the rate is that of
    dense steps, so the estimate is an upper bound (real codes go sparse and run faster).
    """
    T = min(cfg.window_len, 128)
    ids = torch.randint(0, lm.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    layers = cfg.layers_of(lm)
    forward = []
    for _ in range(2):   # the first call warms up allocators and kernels
        t0 = time.perf_counter()
        capture_mlp_out(lm, ids, layers, forward_batch=1)
        forward.append(time.perf_counter() - t0)
    f_rate = forward_flops(lm, 1, T) / max(forward[-1], 1e-6) / 1e9
    rows = 4 * cfg.sae.batch_size
    n_latents = cfg.sae.latents_for(lm.d_model)
    scfg = replace(cfg.sae, n_latents=n_latents, epochs=2, val_fraction=0.0)
    acts = torch.randn(rows, lm.d_model, generator=torch.Generator().manual_seed(0))
    secs = []
    device = torch.device("cpu") if cfg.ray else cfg.device_of(lm)
    train_sae(acts, scfg, on_epoch=lambda r: secs.append(r["seconds"]), device=device)
    epoch_seconds = max(secs[1] - secs[0], 1e-6)
    s_rate = 12 * rows * lm.d_model * n_latents / epoch_seconds / 1e9
    return f_rate, s_rate


def estimate(lm: LabModel, cfg: LaminarConfig, rates: tuple[float, float] | None = None) -> Estimate:
    """Seconds a sweep will take here: FLOPs / measured rates (`rates` from measure_rates)."""
    f_rate, s_rate = rates if rates is not None else measure_rates(lm, cfg)
    return Estimate(capture_gflop=forward_flops(lm, cfg.n_windows, cfg.window_len) / 1e9,
                    layer_gflop=layer_flops(lm, cfg) / 1e9, forward_gflops=f_rate,
                    sae_gflops=s_rate, n_layers=len(cfg.layers_of(lm)))
