"""Laminar profile: a fresh sparse autoencoder on every layer's MLP output, against depth.

    windows = corpus.sample_windows(tokenize(tok, text), n, len, seed)   [n_windows, window_len]
    acts    = capture_mlp_out(lm, windows)     one forward per window batch captures ALL layers
                                               [layers, n_windows * (window_len - 1), d_model]
    sweep(lm, token_ids, cfg, on_layer)  ->    one row per layer: density, dead fraction, MSE,
                                               normalized MSE (train and held out), seconds

Position 0 of every window is dropped: the first token of a sequence carries outlier
activations that have nothing to do with the text (the seed notes it; any attention sink does).
Raw MSE grows with a layer's activation scale; normalized MSE (MSE / variance of the
activations) is the one to compare across layers and models. The SAE comes from `lab.sae`,
which also normalizes its inputs to unit variance, so the same L1 weight means the same on
every layer.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import pandas as pd
import torch

from lab.corpus import sample_windows
from lab.hooks import run_with_hooks
from lab.models import LabModel
from lab.sae import SAEConfig, init_sae, latent_stats, train_sae

ACTIVATIONS = ("relu", "topk")
COLUMNS = ["model", "layer", "n_layers", "relative_depth", "density", "dead_fraction", "mse", "nmse",
           "val_nmse", "l0", "n_latents", "n_tokens", "activation", "epochs", "seconds"]


@dataclass(frozen=True)
class LaminarConfig:
    n_windows: int = 10          # token windows sampled from the corpus with `seed`
    window_len: int = 1024       # tokens per window; position 0 of each is dropped
    activation: str = "relu"     # "relu": ReLU + L1 penalty + MSE (the seed) | "topk"
    expansion: int = 8           # latents per SAE = expansion * d_model (the seed: ~8x)
    k: int = 32                  # active latents per token (topk only)
    # L1 weight on the code (relu only), in lab.sae's normalized units: inputs at unit variance,
    # MSE per element. Measured on smollm2-135m: at lab.sae's default 1e-3 with lr 1e-4 the code
    # stays ~50% dense after 20 epochs; 3e-3 with lr 1e-3 reaches a sparse code (1-7% of
    # latents) within the quick preset's ~450 steps, which is also what makes training fast.
    l1: float = 3e-3
    epochs: int = 75             # passes over each layer's activations
    lr: float = 1e-3             # Adam learning rate (1e-4 leaves the L1 code dense, see l1)
    batch_size: int = 256        # rows per SAE optimizer step
    val_fraction: float = 0.1    # rows held out for the held-out normalized MSE
    layers: tuple[int, ...] | None = None   # None: every layer of the model
    forward_batch: int = 2       # windows per forward pass (memory vs. speed)
    seed: int = 0                # windows, SAE init, split and shuffling

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("n_windows", "expansion", "epochs", "batch_size", "forward_batch", "k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.window_len < 2:
            raise ValueError(f"window_len must be at least 2 (position 0 is dropped), got {self.window_len}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.l1) and self.l1 >= 0):
            raise ValueError(f"l1 must be a number >= 0, got {self.l1}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)
                                        or min(self.layers) < 0):
            raise ValueError("layers must be distinct non-negative layer indices (or None for all)")

    @property
    def n_tokens(self) -> int:
        """Activation rows per layer (position 0 of each window dropped)."""
        return self.n_windows * (self.window_len - 1)

    def layers_of(self, lm: LabModel) -> list[int]:
        layers = list(range(lm.n_layers)) if self.layers is None else sorted(self.layers)
        if layers[-1] >= lm.n_layers:
            raise ValueError(f"layer {layers[-1]} out of range for {lm.name}: valid 0..{lm.n_layers - 1}")
        return layers

    def sae_config(self, d_in: int) -> SAEConfig:
        n_latents = self.expansion * d_in
        if self.activation == "topk" and self.k > n_latents:
            raise ValueError(f"k ({self.k}) cannot exceed the number of latents ({n_latents})")
        return SAEConfig(n_latents=n_latents, k=self.k, tied=True, activation=self.activation,
                         l1=self.l1, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                         seed=self.seed, val_fraction=self.val_fraction)


# "quick": the trend in ~2 min on 2 CPU cores (smollm2-135m, measured 2 min 17 s); "seed": the seed's
# 10 x 1024 tokens and 75 epochs; "tiny": mechanics only, for tests.
PRESETS: dict[str, LaminarConfig] = {
    "quick": LaminarConfig(n_windows=8, window_len=128, expansion=2, epochs=30, batch_size=64),
    "seed": LaminarConfig(),
    "tiny": LaminarConfig(n_windows=2, window_len=16, expansion=2, epochs=2, batch_size=16),
}


def preset(name: str, **changes) -> LaminarConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **changes)


# ---------------------------------------------------------------- activations

@torch.no_grad()
def capture_mlp_out(lm: LabModel, windows: torch.Tensor, layers: list[int] | None = None,
                    forward_batch: int = 2, on_batch: Callable[[int, int], None] | None = None
                    ) -> torch.Tensor:
    """MLP outputs of `layers` (default all) over token windows [n, T], position 0 dropped.

    Each forward captures every requested layer at once and stops after the deepest one.
    Returns float32 on the CPU: [len(layers), n * (T - 1), d_model].
    """
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [n_windows, window_len >= 2], got {tuple(windows.shape)}")
    if windows.shape[1] > lm.n_ctx:
        raise ValueError(f"windows of {windows.shape[1]} tokens exceed {lm.name}'s context of {lm.n_ctx}")
    n, T = windows.shape
    names = [f"blocks.{L}.hook_mlp_out" for L in layers]
    out = torch.empty(len(layers), n, T - 1, lm.d_model)
    starts = range(0, n, forward_batch)
    for b, i in enumerate(starts):
        ids = windows[i:i + forward_batch].to(lm.device)
        cache = run_with_hooks(lm, names, input_ids=ids, stop_early=True, detach=True)
        for j, name in enumerate(names):
            out[j, i:i + forward_batch] = cache[name][:, 1:].float().cpu()   # drop position 0
        if on_batch is not None:
            on_batch(b + 1, len(starts))
    return out.reshape(len(layers), n * (T - 1), lm.d_model)


# ---------------------------------------------------------------- cost model

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
    """(forward GFLOP/s, SAE GFLOP/s) from one short forward and two short SAE epochs.

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
    rows = 4 * cfg.batch_size
    scfg = replace(cfg.sae_config(lm.d_model), epochs=2, val_fraction=0.0)
    acts = torch.randn(rows, lm.d_model, generator=torch.Generator().manual_seed(0))
    secs = []
    train_sae(acts, scfg, on_epoch=lambda r: secs.append(r["seconds"]))
    epoch_seconds = max(secs[1] - secs[0], 1e-6)
    s_rate = 12 * rows * lm.d_model * scfg.n_latents / epoch_seconds / 1e9
    return f_rate, s_rate


def estimate(lm: LabModel, cfg: LaminarConfig, rates: tuple[float, float] | None = None) -> Estimate:
    """Seconds a sweep will take here: FLOPs / measured rates (`rates` from measure_rates)."""
    f_rate, s_rate = rates if rates is not None else measure_rates(lm, cfg)
    n_latents = cfg.sae_config(lm.d_model).n_latents
    return Estimate(capture_gflop=forward_flops(lm, cfg.n_windows, cfg.window_len) / 1e9,
                    layer_gflop=sae_flops(cfg.n_tokens, lm.d_model, n_latents, cfg.epochs,
                                          cfg.val_fraction) / 1e9,
                    forward_gflops=f_rate, sae_gflops=s_rate, n_layers=len(cfg.layers_of(lm)))


# ---------------------------------------------------------------- the sweep

@dataclass(frozen=True)
class Progress:
    """Where a sweep is, for a progress bar."""

    stage: str              # "capture" (forward passes) or "train" (an SAE)
    layer: int | None       # the layer being trained
    layers_done: int        # SAEs finished
    n_layers: int           # SAEs in the sweep
    step: int               # forward batch or epoch within the stage
    steps: int
    elapsed: float          # seconds since the sweep started
    eta: float | None       # seconds left; None until a rate has been seen

    @property
    def fraction(self) -> float:
        """Share of the sweep done; the forward passes count as one layer's worth."""
        units = 1 + self.n_layers
        done = self.step / self.steps if self.stage == "capture" else \
            1 + self.layers_done + self.step / max(self.steps, 1)
        return min(done / units, 1.0)

    def message(self) -> str:
        eta = "" if self.eta is None else f", about {format_duration(self.eta)} left"
        if self.stage == "capture":
            return f"Capturing MLP outputs of all layers: batch {self.step}/{self.steps}{eta}"
        return (f"Layer {self.layer}: SAE epoch {self.step}/{self.steps} "
                f"({self.layers_done}/{self.n_layers} layers done{eta})")


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def sweep(lm: LabModel, token_ids: torch.Tensor, cfg: LaminarConfig,
          on_layer: Callable[[dict, pd.DataFrame], None] | None = None,
          on_progress: Callable[[Progress], None] | None = None,
          estimate_: Estimate | None = None) -> pd.DataFrame:
    """Train a fresh SAE on every layer's MLP output; one row per layer (COLUMNS).

    `token_ids`: the corpus [n_tokens] (windows are sampled with cfg.seed) or windows
    [n_windows, window_len]. `on_layer(row, rows_so_far)` after each layer, so a caller that
    is stopped keeps the finished layers. `estimate_` lets the ETA count the SAE training
    before the first layer has been timed.
    """
    layers = cfg.layers_of(lm)
    windows = token_ids if token_ids.ndim == 2 else sample_windows(
        token_ids, cfg.n_windows, cfg.window_len, cfg.seed)
    t0 = time.perf_counter()

    def report(stage, layer, done, step, steps, eta):
        if on_progress is not None:
            on_progress(Progress(stage, layer, done, len(layers), step, steps,
                                 time.perf_counter() - t0, eta))

    def on_batch(b, n):
        per = (time.perf_counter() - t0) / b
        train = None if estimate_ is None else len(layers) * estimate_.layer_seconds
        report("capture", None, 0, b, n, None if train is None else per * (n - b) + train)

    acts = capture_mlp_out(lm, windows, layers, cfg.forward_batch, on_batch)
    t_train, rows = time.perf_counter(), []
    for j, layer in enumerate(layers):
        def on_epoch(r, j=j, layer=layer):
            done = j + r["epoch"] / r["epochs"]
            rate = (time.perf_counter() - t_train) / done
            report("train", layer, j, r["epoch"], r["epochs"], rate * (len(layers) - done))
        rows.append(train_layer(lm, acts[j], layer, cfg, on_epoch))
        if on_layer is not None:
            on_layer(rows[-1], frame(rows))
    return frame(rows)


def train_layer(lm: LabModel, acts: torch.Tensor, layer: int, cfg: LaminarConfig,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """A fresh, seeded SAE on one layer's activations [n_tokens, d_model] -> one result row."""
    t0 = time.perf_counter()
    scfg = cfg.sae_config(acts.shape[1])
    sae = init_sae(acts, scfg)   # fresh weights for every layer: nothing carries over
    sae, history = train_sae(acts, scfg, on_epoch=on_epoch, sae=sae)
    stats = latent_stats(sae, acts)
    last = history[history["epoch"] == history["epoch"].max()].set_index("split")
    val = last.loc["val", "nmse"] if "val" in last.index else float("nan")
    return {"model": lm.name, "layer": layer, "n_layers": lm.n_layers,
            "relative_depth": layer / max(lm.n_layers - 1, 1),
            "density": float(stats["density"].mean()),
            "dead_fraction": float((stats["cls"] == "dead").mean()),
            "mse": float(last.loc["train", "mse"]), "nmse": float(last.loc["train", "nmse"]),
            "val_nmse": float(val), "l0": float(last.loc["train", "l0"]),
            "n_latents": scfg.n_latents, "n_tokens": int(acts.shape[0]),
            "activation": cfg.activation, "epochs": cfg.epochs,
            "seconds": time.perf_counter() - t0}


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------- shape of the curves

def _spearman(a: pd.Series, b: pd.Series) -> float:
    if len(a) < 3:
        return float("nan")
    return float(a.rank().corr(b.rank()))


def shape_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model, the two questions the seed asks, answered from the rows:
    does density rise with depth (Spearman rank correlation with the layer index), and is
    the normalized MSE U-shaped (its minimum inside the middle third of the depth, with both
    ends higher than the minimum by at least 10% of the curve's range)."""
    out = []
    for model, g in rows.sort_values("layer").groupby("model", sort=False):
        nmse = g["nmse"].to_numpy()
        lo = int(nmse.argmin()) if len(nmse) else 0
        depth_min = float(g["relative_depth"].iloc[lo]) if len(nmse) else float("nan")
        margin = 0.1 * (nmse.max() - nmse.min()) if len(nmse) else 0.0
        u = (len(nmse) >= 3 and 1 / 3 <= depth_min <= 2 / 3
             and nmse[0] - nmse[lo] > margin and nmse[-1] - nmse[lo] > margin)
        out.append({"model": model, "layers": len(g),
                    "density_vs_depth_rho": _spearman(g["layer"], g["density"]),
                    "density_first": float(g["density"].iloc[0]),
                    "density_last": float(g["density"].iloc[-1]),
                    "nmse_min_layer": int(g["layer"].iloc[lo]) if len(nmse) else -1,
                    "nmse_min_depth": depth_min, "nmse_u_shaped": bool(u)})
    return pd.DataFrame(out)


def describe_shape(s: dict) -> str:
    """One sentence on a model's curves, from a shape_summary row."""
    rho = s["density_vs_depth_rho"]
    if rho != rho:  # NaN: too few layers
        return f"{s['model']}: too few layers ({s['layers']}) to call a trend."
    trend = ("rises with depth" if rho > 0.5 else "falls with depth" if rho < -0.5
             else "shows no clear trend with depth")
    u = "is U-shaped" if s["nmse_u_shaped"] else "is not U-shaped"
    return (f"{s['model']}: density {trend} (rank correlation {rho:+.2f}; "
            f"{s['density_first']:.3f} at the first layer, {s['density_last']:.3f} at the last); "
            f"normalized MSE {u} (lowest at layer {s['nmse_min_layer']}, "
            f"relative depth {s['nmse_min_depth']:.2f}).")


# ---------------------------------------------------------------- export

def export_json(results: pd.DataFrame, runs: dict[str, dict]) -> str:
    """Rows plus everything needed to reproduce them: per model, the config (with its seed),
    the corpus metadata, wall time; and the library versions."""
    import transformers
    payload = {"experiment": "laminar profile (seed 004)", "runs": runs,
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
               "rows": json.loads(results.to_json(orient="records"))}
    return json.dumps(payload, indent=2, default=str)
