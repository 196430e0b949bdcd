"""Time before Run: FLOP counts of a sweep, divided by rates measured on this machine."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from lab.experiment import format_duration, report  # noqa: F401  (format_duration: re-exported by lab.laminar)
from lab.laminar.capture import capture_mlp_out
from lab.laminar.config import LaminarConfig
from lab.models import LabModel
from lab.sae import SAEConfig, train_sae


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


@dataclass(frozen=True)
class RatesConfig:
    """What this machine's measured speed depends on, and nothing else (the runner's key):
    the epochs, learning rate or seed of a sweep never measure again."""
    window_len: int             # the forward's tokens (at most 128)
    layers: tuple[int, ...]     # the blocks it captures
    sae: SAEConfig              # the shape trained: width, batch, activation (2 epochs, no split)
    device: str                 # where the SAE trains ("cpu" stands in for Ray's workers)


def rates_config(lm: LabModel, cfg: LaminarConfig) -> RatesConfig:
    n_latents = cfg.sae.latents_for(lm.d_model)
    s = cfg.sae   # lr, seed and the epochs do not change a step's time: the defaults stand in
    sae = replace(SAEConfig(), n_latents=n_latents, k=s.k, activation=s.activation, l1=s.l1,
                  tied=s.tied, unit_decoder=s.unit_decoder, batch_size=s.batch_size, epochs=2,
                  val_fraction=0.0)
    device = "cpu" if cfg.ray else str(cfg.device_of(lm))
    return RatesConfig(min(cfg.window_len, 128), tuple(cfg.layers_of(lm)), sae, device)


def measure_rates(lm: LabModel, cfg: LaminarConfig) -> tuple[float, float]:
    """(forward GFLOP/s, SAE GFLOP/s) for the sweep `cfg` (see `measure`)."""
    return measure(lm, rates_config(lm, cfg))


def measure(lm: LabModel, cfg: RatesConfig, on_progress=None) -> tuple[float, float]:
    """(forward GFLOP/s, SAE GFLOP/s) from one short forward and two short SAE epochs, the
    SAE on the device it will train on (on Ray, this machine's CPU stands in).

    The SAE runs on random rows, where a ReLU code stays dense: for "relu" the rate is that of
    dense steps, so the estimate is an upper bound (real codes go sparse and run faster).
    """
    T = cfg.window_len
    ids = torch.randint(0, lm.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    forward = []
    for _ in range(2):   # the first call warms up allocators and kernels
        t0 = time.perf_counter()
        capture_mlp_out(lm, ids, list(cfg.layers), forward_batch=1)
        forward.append(time.perf_counter() - t0)
    report(on_progress, 1, 2, "steps", "forward timed")
    f_rate = forward_flops(lm, 1, T) / max(forward[-1], 1e-6) / 1e9
    rows = 4 * cfg.sae.batch_size
    acts = torch.randn(rows, lm.d_model, generator=torch.Generator().manual_seed(0))
    secs = []
    train_sae(acts, cfg.sae, on_epoch=lambda r: secs.append(r["seconds"]), device=torch.device(cfg.device))
    epoch_seconds = max(secs[1] - secs[0], 1e-6)
    s_rate = 12 * rows * lm.d_model * cfg.sae.n_latents / epoch_seconds / 1e9
    report(on_progress, 2, 2, "steps", "SAE timed")
    return f_rate, s_rate


def estimate(lm: LabModel, cfg: LaminarConfig, rates: tuple[float, float] | None = None) -> Estimate:
    """Seconds a sweep will take here: FLOPs / measured rates (`rates` from measure_rates)."""
    f_rate, s_rate = rates if rates is not None else measure_rates(lm, cfg)
    return Estimate(capture_gflop=forward_flops(lm, cfg.n_windows, cfg.window_len) / 1e9,
                    layer_gflop=layer_flops(lm, cfg) / 1e9, forward_gflops=f_rate,
                    sae_gflops=s_rate, n_layers=len(cfg.layers_of(lm)))
