"""The sweep: one forward pass captures every layer, then a fresh SAE per layer, one row each.

Progress goes out in layers (`Progress.unit == "layer"`, done fractional by epochs); the
forward passes count as one layer's worth. `Progress.partial` is the rows of the layers
finished so far (none at first), so a run that is stopped keeps them.
"""
from __future__ import annotations

import time
from typing import Callable

import pandas as pd
import torch

from lab.corpus import sample_windows
from lab.experiment import OnProgress, report
from lab.laminar.capture import capture_mlp_out
from lab.laminar.config import LaminarConfig
from lab.laminar.cost import format_duration, forward_flops, layer_flops
from lab.models import LabModel
from lab.sae import init_sae, latent_stats, train_sae

COLUMNS = ["model", "layer", "n_layers", "relative_depth", "density", "dead_fraction", "mse", "nmse",
           "val_nmse", "l0", "n_latents", "n_tokens", "activation", "epochs", "seconds"]


def sweep(lm: LabModel, token_ids: torch.Tensor, cfg: LaminarConfig,
          on_progress: OnProgress | None = None) -> pd.DataFrame:
    """Train a fresh SAE on every layer's MLP output; one row per layer (COLUMNS).

    `token_ids`: the corpus [n_tokens] (windows are sampled with cfg.seed) or windows
    [n_windows, window_len].
    """
    layers = cfg.layers_of(lm)
    windows = token_ids if token_ids.ndim == 2 else sample_windows(
        token_ids, cfg.n_windows, cfg.window_len, cfg.seed)
    progress = _Reporter(lm, cfg, windows, len(layers), on_progress)
    acts = capture_mlp_out(lm, windows, layers, cfg.forward_batch, progress.on_batch)
    progress.start_training()
    rows: list[dict] = []
    for j, layer in enumerate(layers):
        rows.append(train_layer(lm, acts[j], layer, cfg, progress.on_epoch(j, layer)))
        progress.layer_done(rows)
    return frame(rows)


def train_layer(lm: LabModel, acts: torch.Tensor, layer: int, cfg: LaminarConfig,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """A fresh, seeded SAE on one layer's activations [n_tokens, d_model] -> one result row."""
    t0 = time.perf_counter()
    sae = init_sae(acts, cfg.sae)   # fresh weights for every layer: nothing carries over
    sae, history = train_sae(acts, cfg.sae, on_epoch=on_epoch, sae=sae)
    stats = latent_stats(sae, acts)
    last = history[history["epoch"] == history["epoch"].max()].set_index("split")
    val = last.loc["val", "nmse"] if "val" in last.index else float("nan")
    return {"model": lm.name, "layer": layer, "n_layers": lm.n_layers,
            "relative_depth": layer / max(lm.n_layers - 1, 1),
            "density": float(stats["density"].mean()),
            "dead_fraction": float((stats["cls"] == "dead").mean()),
            "mse": float(last.loc["train", "mse"]), "nmse": float(last.loc["train", "nmse"]),
            "val_nmse": float(val), "l0": float(last.loc["train", "l0"]),
            "n_latents": sae.n_latents, "n_tokens": int(acts.shape[0]),
            "activation": cfg.sae.activation, "epochs": cfg.sae.epochs,
            "seconds": time.perf_counter() - t0}


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


class _Reporter:
    """A sweep's Progress messages, with the time left."""

    def __init__(self, lm: LabModel, cfg: LaminarConfig, windows: torch.Tensor, n_layers: int,
                 on_progress: OnProgress | None):
        self.lm, self.cfg, self.windows, self.n = lm, cfg, windows, n_layers
        self.on_progress, self.partial = on_progress, frame([])
        self.t0 = self.t_train = time.perf_counter()

    def _send(self, done: float, message: str) -> None:
        report(self.on_progress, done, 1 + self.n, "layer", message, self.partial)

    def on_batch(self, b: int, n: int) -> None:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        # Before any SAE has been timed, its dense-equivalent FLOPs at the forward pass's rate.
        seen = min(b * self.cfg.forward_batch, len(self.windows))
        rate = forward_flops(self.lm, seen, self.windows.shape[1]) / elapsed
        eta = elapsed / b * (n - b) + self.n * layer_flops(self.lm, self.cfg) / rate
        self._send(b / n, f"Capturing MLP outputs of all layers: batch {b}/{n}{_left(eta)}")

    def start_training(self) -> None:
        self.t_train = time.perf_counter()

    def _eta(self, done: float) -> str:
        """`done` layers trained (fractional) at the rate so far."""
        if done >= self.n:
            return ""
        return _left((time.perf_counter() - self.t_train) / done * (self.n - done))

    def on_epoch(self, j: int, layer: int) -> Callable[[dict], None]:
        def on_epoch(r: dict) -> None:
            if r["epoch"] == r["epochs"]:
                return   # the layer's own line (layer_done) follows
            done = j + r["epoch"] / r["epochs"]
            self._send(1 + done, f"Layer {layer}: SAE epoch {r['epoch']}/{r['epochs']} "
                                 f"({j}/{self.n} layers done{self._eta(done)})")
        return on_epoch

    def layer_done(self, rows: list[dict]) -> None:
        self.partial, row, j = frame(rows), rows[-1], len(rows)
        self._send(1 + j, f"layer {row['layer']}: density {row['density']:.4f} nmse "
                          f"{row['nmse']:.4f} held-out {row['val_nmse']:.4f} ({row['seconds']:.1f} s; "
                          f"{j}/{self.n} layers done{self._eta(j)})")


def _left(seconds: float) -> str:
    return f", about {format_duration(seconds)} left"
