"""Laminar layers as Ray tasks: the driver captures every layer once, puts each layer's rows in
Ray's object store and trains one fresh SAE per layer as a task (one GPU per task when the
cluster has GPUs, else `cfg.ray_cpus` cores); rows come back as layers finish.

Imported only when `cfg.ray` is set: Ray is optional (requirements-ray.txt). A task runs
lab.laminar.train.fit_layer on the same rows with the same seeded init, split and shuffling, so
it gives the in-process row; on the CPU torch's thread count changes the last bits of a
matmul's sum (and training amplifies them: 1e-2 relative on smollm2-135m, measured), so a task
uses `ray_cpus` threads (default: this process's count) and equals an in-process run with as
many.
"""
from __future__ import annotations

import os
import socket
from typing import Callable, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import torch

from lab.laminar.config import LaminarConfig


class ModelInfo(NamedTuple):
    """What a task needs to know of the model (the row's columns), instead of the model."""
    name: str
    n_layers: int


def address(value: str) -> str:
    """The address ray.init gets: 'env' reads LAB_RAY_ADDRESS, anything else is Ray's own
    ('local', 'auto', HOST:PORT, ray://HOST:10001)."""
    if value != "env":
        return value
    found = os.environ.get("LAB_RAY_ADDRESS", "")
    if not found:
        raise ValueError("ray 'env' reads the cluster's address from LAB_RAY_ADDRESS, which is not set.")
    return found


def connect(value: str):
    """The `ray` module, connected: to the Ray this process already joined (a test's
    `ray.init(num_cpus=2)`), else to `address(value)`."""
    where = address(value)
    try:
        import ray
    except ImportError:
        raise ValueError("Ray is not installed here: pip install -r requirements-ray.txt, "
                         "or run without ray.") from None
    if not ray.is_initialized():
        if where == "local":   # a fresh Ray on this machine, without the dashboard's start-up
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:                  # ship this lab's code with the tasks: the nodes need its packages only
            probe(where)
            import lab
            ray.init(address=where, log_to_driver=False, runtime_env={"py_modules": [lab]})
    return ray


PROBE_SECONDS = 3.0


def probe(where: str, timeout: float = PROBE_SECONDS) -> None:
    """A plain TCP connect to HOST:PORT (or ray://HOST:PORT) before ray.init: left to itself,
    Ray rewrites a loopback address to this machine's network address and retries there
    forever. 'auto' (Ray finds its own cluster, or says so) is not probed."""
    if where == "auto":
        return
    try:
        parts = urlsplit(where if "://" in where else f"//{where}")
        host, port = parts.hostname, parts.port
    except ValueError:   # a port that is not a number
        host = port = None
    if not host or port is None:
        raise ValueError(f"ray address {where!r} is not HOST:PORT or ray://HOST:PORT "
                         f"(or local, auto, env).")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = (f"no answer within {timeout:g} s" if isinstance(e, TimeoutError)
               else (e.strerror or str(e)).lower())
        raise ValueError(f"no Ray cluster answers at {where} ({why}): "
                         f"start one there (ray start --head) or give another address.") from None


class Pool:
    """A Ray cluster, checked against the config before any heavy work."""

    def __init__(self, cfg: LaminarConfig):
        self.ray = connect(cfg.ray)
        have = self.ray.cluster_resources()
        gpus, cpus = have.get("GPU", 0), have.get("CPU", 0)
        if cfg.sae_device == "mps":
            raise ValueError("Ray tasks train on cuda or cpu; sae_device mps is for this process.")
        if cfg.sae_device == "cuda" and not gpus:
            raise ValueError("sae_device cuda, but the Ray cluster has no GPUs.")
        if cfg.ray_cpus > cpus:
            raise ValueError(f"ray_cpus {cfg.ray_cpus} exceeds the Ray cluster's {cpus:g} CPUs.")
        self.threads = cfg.ray_cpus or max(1, min(torch.get_num_threads(), int(cpus)))
        self.device = "cuda" if gpus and cfg.sae_device != "cpu" else "cpu"
        if cfg.tf32 and self.device != "cuda":
            raise ValueError("tf32 is a CUDA setting; the Ray tasks would train on the CPU.")
        self.options = {"num_cpus": self.threads, "num_gpus": 1 if self.device == "cuda" else 0}

    def describe(self) -> str:
        per = f"1 GPU + {self.threads} CPU" if self.options["num_gpus"] else f"{self.threads} CPU"
        return f"Ray tasks ({per} each)"

    def train(self, lm, acts: torch.Tensor, layers: list[int], cfg: LaminarConfig,
              finished: Callable[[dict, object], None],
              waiting: Callable[[int], None] | None = None) -> None:
        """One task per layer (acts[j] is layer layers[j]); `finished(row, sae or None)` as each
        one ends, in the order they end, and `waiting(tasks left)` every second between, so a
        Stop need not wait for a layer. If either raises, the tasks left are cancelled."""
        ray = self.ray
        task = ray.remote(_train_task).options(**self.options)
        info = ModelInfo(lm.name, lm.n_layers)
        pending = {task.remote(info, ray.put(acts[j].cpu().numpy()), layer, cfg, self.device,
                               self.threads): layer for j, layer in enumerate(layers)}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if not ready:
                    if waiting is not None:
                        waiting(len(pending))
                    continue
                pending.pop(ready[0])
                finished(*ray.get(ready[0]))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def _train_task(info: ModelInfo, acts: np.ndarray, layer: int, cfg: LaminarConfig,
                device: str, threads: int) -> tuple[dict, object]:
    """In a Ray worker: one layer's SAE -> (row, the SAE on the CPU when it is kept)."""
    from lab.laminar.train import fit_layer
    torch.set_num_threads(threads)
    rows = torch.from_numpy(np.array(acts))   # the object store's copy is read-only
    row, sae = fit_layer(info, rows, layer, cfg, device=device)
    return row, sae.cpu() if cfg.keep_saes else None
