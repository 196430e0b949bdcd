"""The sweep: one forward pass captures every layer, then a fresh SAE per layer, one row each.

Progress goes out in layers (`Progress.unit == "layer"`, done fractional by epochs); the
forward passes count as one layer's worth. `Progress.partial` is the rows of the layers
finished so far (none at first), so a run that is stopped keeps them.

The SAEs train in this process on `cfg.device_of(lm)`, or as Ray tasks (lab.laminar.cluster)
when `cfg.ray` names a cluster. With a run folder (lab.laminar.store) every finished layer is
written as it completes, and the layers already there are not trained again.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import pandas as pd
import torch

from lab.corpus import sample_windows
from lab.experiment import OnProgress, check_finite, report
from lab.laminar.capture import capture_mlp_out
from lab.laminar.config import LaminarConfig
from lab.laminar.cost import format_duration, forward_flops, layer_flops
from lab.models import LabModel
from lab.sae import SparseAutoencoder, init_sae, train_sae
from lab.sae.kernels import SPARSE_DEVICES
from lab.sae.model import EVAL_CHUNK, low_precision
from lab.sae.devices import as_device, fits, matmul_precision

COLUMNS = ["model", "layer", "n_layers", "relative_depth", "density", "dead_fraction", "mse", "nmse",
           "val_nmse", "l0", "n_latents", "n_tokens", "activation", "epochs", "seconds"]


def sweep(lm: LabModel, token_ids: torch.Tensor, cfg: LaminarConfig,
          on_progress: OnProgress | None = None, store=None) -> pd.DataFrame:
    """Train a fresh SAE on every layer's MLP output; one row per layer (COLUMNS).

    `token_ids`: the corpus [n_tokens] (windows are sampled with cfg.seed) or windows
    [n_windows, window_len]. `store`: a lab.laminar.store.RunFolder that gets each finished
    layer and whose finished layers are kept as they are.
    """
    layers = cfg.layers_of(lm)
    windows = token_ids if token_ids.ndim == 2 else sample_windows(
        token_ids, cfg.n_windows, cfg.window_len, cfg.seed)
    rows = [r for r in (store.rows() if store is not None else []) if r["layer"] in layers]
    todo = [L for L in layers if L not in {r["layer"] for r in rows}]
    progress = _Reporter(lm, cfg, windows, len(layers), on_progress, resumed=len(rows))
    if not todo:
        progress.all_done(rows)
        return frame(rows)
    pool = _pool(cfg)   # a Ray cluster is joined (and checked) before the forward passes

    def finished(row: dict, sae: SparseAutoencoder | None) -> None:
        _check_row(row, cfg)   # a blown-up layer ends the sweep before it reaches the folder
        if store is not None:
            store.add(row, sae if cfg.keep_saes else None)
        rows.append(row)
        progress.layer_done(rows, row)

    device = torch.device("cpu") if pool else cfg.device_of(lm)
    acts = capture_mlp_out(lm, windows, todo, cfg.forward_batch, progress.on_batch,
                           _home(device, cfg, (len(todo), *windows.shape, lm.d_model)))
    progress.start_training()
    if pool:
        pool.train(lm, acts, todo, cfg, finished, lambda left: progress.waiting(rows, left, pool))
    for j, layer in enumerate([] if pool else todo):
        finished(*fit_layer(lm, acts[j], layer, cfg, progress.on_epoch(len(rows), layer), device))
    return frame(sorted(rows, key=lambda r: r["layer"]))


def _check_row(row: dict, cfg: LaminarConfig) -> None:
    """One sentence when a layer's numbers went NaN or infinite (val_nmse is NaN by design
    without a validation split, and follows nmse otherwise)."""
    check_finite({f"layer {row['layer']} {c}": row[c] for c in ("mse", "nmse", "l0", "density")},
                 {"lr": cfg.sae.lr, "l1": cfg.sae.l1})


def _pool(cfg: LaminarConfig):
    """The Ray cluster the layers go to, or None (then Ray is not imported)."""
    if not cfg.ray:
        return None
    from lab.laminar.cluster import Pool
    return Pool(cfg)


def _home(device: torch.device, cfg: LaminarConfig, shape: tuple[int, ...]) -> torch.device:
    """Where the captured activations go: the SAEs' device when all layers' rows fit in
    cfg.memory_fraction of its free memory, else the CPU (each layer then goes over whole if it
    fits alone, else a batch at a time)."""
    n_layers, n, T, d = shape
    return device if fits(device, 4 * n_layers * n * (T - 1) * d, cfg.memory_fraction) else \
        torch.device("cpu")


def train_layer(lm: LabModel, acts: torch.Tensor, layer: int, cfg: LaminarConfig,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """A fresh, seeded SAE on one layer's activations [n_tokens, d_model] -> one result row."""
    return fit_layer(lm, acts, layer, cfg, on_epoch)[0]


def fit_layer(lm, acts: torch.Tensor, layer: int, cfg: LaminarConfig,
              on_epoch: Callable[[dict], None] | None = None, device: torch.device | str = "cpu"
              ) -> tuple[dict, SparseAutoencoder]:
    """(the row, the trained SAE) of one layer, trained on `device`. `lm` needs only `name` and
    `n_layers` (a Ray task gets those, not the model)."""
    t0 = time.perf_counter()
    device = as_device(device)
    sae = init_sae(acts, cfg.sae).to(device)   # fresh weights for every layer: nothing carries over
    # off the CPU, how much of the device the rows may take (on the CPU they are where they are)
    placement = {} if device.type == "cpu" else {"memory_fraction": cfg.memory_fraction}
    with matmul_precision(True) if cfg.tf32 else contextlib.nullcontext():
        sae, history = train_sae(acts, cfg.sae, on_epoch=on_epoch, sae=sae, **placement)
    density, dead = code_density(sae, acts)
    last = history[history["epoch"] == history["epoch"].max()].set_index("split")
    val = last.loc["val", "nmse"] if "val" in last.index else float("nan")
    row = {"model": lm.name, "layer": layer, "n_layers": lm.n_layers,
           "relative_depth": layer / max(lm.n_layers - 1, 1), "density": density,
           "dead_fraction": dead, "mse": float(last.loc["train", "mse"]),
           "nmse": float(last.loc["train", "nmse"]), "val_nmse": float(val),
           "l0": float(last.loc["train", "l0"]), "n_latents": sae.n_latents,
           "n_tokens": int(acts.shape[0]), "activation": cfg.sae.activation,
           "epochs": cfg.sae.epochs, "seconds": time.perf_counter() - t0}
    return row, sae


@torch.no_grad()
def code_density(sae: SparseAutoencoder, acts: torch.Tensor) -> tuple[float, float]:
    """(mean density over latents, fraction of dead latents) over all rows, computed where the
    SAE is; the same numbers as lab.sae.latent_stats (which works on the CPU) gives."""
    device = sae.W_enc.device
    count = torch.zeros(sae.n_latents, dtype=torch.int64, device=device)
    low = low_precision(sae, EVAL_CHUNK)
    for chunk in acts.split(EVAL_CHUNK):
        chunk = chunk.to(device)
        code = sae.active_code(chunk / sae.scale, low=low) \
            if device.type in SPARSE_DEVICES else None
        if code is None:   # a dense ReLU code (or no sparse kernels here)
            count += (sae.encode(chunk) > 0).sum(0)
        else:              # the active entries only: no [rows, latents] code
            count += torch.bincount(code.cols[code.pre > 0], minlength=sae.n_latents)
    density = (count.float() / max(acts.shape[0], 1)).cpu().numpy()
    return float(pd.Series(density).mean()), int((count == 0).sum()) / sae.n_latents


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


class _Reporter:
    """A sweep's Progress messages, with the time left; `resumed` of the `n_layers` layers came
    from a run folder (neither the capture's ETA nor the training pace counts them)."""

    def __init__(self, lm: LabModel, cfg: LaminarConfig, windows: torch.Tensor, n_layers: int,
                 on_progress: OnProgress | None, resumed: int = 0):
        self.lm, self.cfg, self.windows, self.n = lm, cfg, windows, n_layers
        self.on_progress, self.partial = on_progress, frame([])
        self.t0 = self.t_train = time.perf_counter()
        self.resumed = resumed

    def _send(self, done: float, message: str) -> None:
        report(self.on_progress, done, 1 + self.n, "layer", message, self.partial)

    def on_batch(self, b: int, n: int) -> None:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        # Before any SAE has been timed, its dense-equivalent FLOPs at the forward pass's rate.
        seen = min(b * self.cfg.forward_batch, len(self.windows))
        rate = forward_flops(self.lm, seen, self.windows.shape[1]) / elapsed
        eta = elapsed / b * (n - b) + (self.n - self.resumed) * layer_flops(self.lm, self.cfg) / rate
        self._send(b / n, f"Capturing MLP outputs of all layers: batch {b}/{n}{_left(eta)}")

    def start_training(self) -> None:
        self.t_train = time.perf_counter()

    def _eta(self, done: float) -> str:
        """`done` layers finished (fractional; `resumed` of them from a run folder) at the rate
        of those trained here so far."""
        trained = done - self.resumed
        if done >= self.n or trained <= 0:
            return ""
        return _left((time.perf_counter() - self.t_train) / trained * (self.n - done))

    def on_epoch(self, j: int, layer: int) -> Callable[[dict], None]:
        def on_epoch(r: dict) -> None:
            if r["epoch"] == r["epochs"]:
                return   # the layer's own line (layer_done) follows
            done = j + r["epoch"] / r["epochs"]
            self._send(1 + done, f"Layer {layer}: SAE epoch {r['epoch']}/{r['epochs']} "
                                 f"({j}/{self.n} layers done{self._eta(done)})")
        return on_epoch

    def layer_done(self, rows: list[dict], row: dict) -> None:
        self.partial, j = frame(sorted(rows, key=lambda r: r["layer"])), len(rows)
        self._send(1 + j, f"layer {row['layer']}: density {row['density']:.4f} nmse "
                          f"{row['nmse']:.4f} held-out {row['val_nmse']:.4f} ({row['seconds']:.1f} s; "
                          f"{j}/{self.n} layers done{self._eta(j)})")

    def waiting(self, rows: list[dict], left: int, pool) -> None:
        j = len(rows)
        self._send(1 + j, f"{left} layers queued or training as {pool.describe()} "
                          f"({j}/{self.n} layers done{self._eta(j)})")

    def all_done(self, rows: list[dict]) -> None:
        self.partial = frame(rows)
        self._send(1 + self.n, f"all {self.n} layers were already in the run folder")


def _left(seconds: float) -> str:
    return f", about {format_duration(seconds)} left"
