"""Top-K SAE training speed on a CPU: ours vs EleutherAI's sparsify vs a plain dense loop.

    pip install --no-deps -r requirements-bench.txt      # sparsify, without touching torch
    python bench/sae_bench.py [--epochs 3] [--rows 10240] [--d-in 768] [--latents 6144]

All trainers see the same rows (10,240 x 768 by default: sparse combinations of random unit
atoms plus noise, so the normalized MSE means something), the same k, latents, batch size and
Adam learning rate, and the same fused Adam. Epochs are interleaved round-robin (epoch 1 of
every trainer, then epoch 2, ...) so a neighbour's load on a shared machine hits all of them
alike; the table reports the median seconds per epoch, the ratio to ours, the median CPU seconds per epoch (process time: less
sensitive to a neighbour's load than wall time), and the normalized
MSE (squared error / total variance) on 1,024 held-out rows after the last epoch.

Trainers:
  ours-tied     lab.sae.SAETrainer, the seed's settings (tied weights, Top-K)
  ours-untied   the same with a separate decoder (as sparsify has)
  sparsify      sparsify.SparseCoder (untied, unit-norm decoder), its training step as in its
                trainer: normalize decoder, forward, fvu.backward, remove the gradient parallel
                to the decoder rows, Adam step
  dense-tied    a plain PyTorch Top-K loop: dense encode, scatter the top k into a dense code,
                dense decode, autograd (the same model as ours-tied)

Measured on the shared 2-core box (2026-11-23, neighbours' load 4-8, so wall times are noisy;
ratios are within one run). `--threads 1`, 3 epochs:
  ours-tied 4.06 s/epoch (CPU 2.50), ours-untied 5.01 (3.01), sparsify 8.05 (4.10),
  dense-tied 23.7 (9.5); ours-tied 1.98x faster than sparsify in wall time, 1.64x in CPU
  time; held-out nMSE 0.533 (ours) vs 0.759 (sparsify). Default threads (2) under the same
  load: 1.52-1.65x wall, 1.31-1.51x CPU (OpenMP threads spin while waiting for a core).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.sae import SAEConfig, SAETrainer, init_sae  # noqa: E402


# ---------------------------------------------------------------- data

def synthetic(rows: int, d_in: int, n_atoms: int, active: int, seed: int) -> torch.Tensor:
    """Rows made of `active` random unit atoms with positive weights, plus 5% noise."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_in, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.rand(rows, n_atoms, generator=gen).argsort(1)[:, :active]
    weights = torch.rand(rows, active, generator=gen) + 0.5
    x = torch.zeros(rows, n_atoms).scatter_(1, idx, weights) @ atoms
    return x + 0.05 * x.std() * torch.randn(rows, d_in, generator=gen)


def nmse(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


# ---------------------------------------------------------------- trainers

class Ours:
    def __init__(self, train, cfg):
        self.t = SAETrainer(train, cfg)

    def epoch(self):
        self.t.epoch()

    @torch.no_grad()
    def nmse(self, x):
        return nmse(self.t.sae(x)[0], x)


class DenseTopK:
    """The textbook loop: every matmul dense, autograd does the rest."""

    def __init__(self, train, cfg):
        self.sae = init_sae(train, cfg)          # same init, scale and centring as ours
        self.x = train / self.sae.scale
        self.cfg = cfg
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, fused=True)
        self.gen = torch.Generator().manual_seed(cfg.seed + 2)

    def epoch(self):
        s = self.sae
        for batch in torch.randperm(len(self.x), generator=self.gen).split(self.cfg.batch_size):
            xb = self.x[batch]
            pre = F.relu(F.linear(xb - s.b_dec, s.W_enc, s.b_enc))
            vals, idx = pre.topk(s.k, dim=1)
            z = torch.zeros_like(pre).scatter(1, idx, vals)
            recon = z @ s.decoder_weight + s.b_dec
            loss = (recon - xb).pow(2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    @torch.no_grad()
    def nmse(self, x):
        return nmse(self.sae(x)[0], x)


def load_sparsify():
    """sparsify.sparse_coder without the package's __init__, which imports its trainer and
    with it `datasets` and `schedulefree` (not needed to train a SparseCoder)."""
    spec = importlib.util.find_spec("sparsify")
    if spec is None:
        raise SystemExit("sparsify is not installed: pip install --no-deps -r requirements-bench.txt")
    pkg = types.ModuleType("sparsify")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["sparsify"] = pkg
    from sparsify.config import SparseCoderConfig
    from sparsify.sparse_coder import SparseCoder
    return SparseCoder, SparseCoderConfig


class Sparsify:
    def __init__(self, train, cfg):
        SparseCoder, SparseCoderConfig = load_sparsify()
        torch.manual_seed(cfg.seed)
        self.sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=cfg.n_latents, k=cfg.k))
        with torch.no_grad():
            self.sae.b_dec.copy_(train.mean(0))   # as its trainer does on the first step
        self.x, self.cfg = train, cfg
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, fused=True)
        self.gen = torch.Generator().manual_seed(cfg.seed + 2)

    def epoch(self):
        for batch in torch.randperm(len(self.x), generator=self.gen).split(self.cfg.batch_size):
            self.sae.set_decoder_norm_to_unit_norm()
            out = self.sae(self.x[batch])
            out.fvu.backward()
            self.sae.remove_gradient_parallel_to_decoder_directions()
            self.opt.step()
            self.opt.zero_grad()

    @torch.no_grad()
    def nmse(self, x):
        return nmse(self.sae(x).sae_out, x)


TRAINERS = {"ours-tied": lambda tr, c: Ours(tr, c),
            "ours-untied": lambda tr, c: Ours(tr, SAEConfig(**{**vars(c), "tied": False})),
            "sparsify": Sparsify, "dense-tied": DenseTopK}


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10240)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--latents", type=int, default=6144)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (all trainers)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--only", default=",".join(TRAINERS), help="comma-separated trainer names")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x = synthetic(args.rows + 1024, args.d_in, n_atoms=2 * args.latents, active=args.k, seed=0)
    train, held = x[:args.rows], x[args.rows:]
    # val_fraction=0: every trainer trains on the same rows and is scored on the same held-out rows
    cfg = SAEConfig(n_latents=args.latents, k=args.k, lr=args.lr, batch_size=args.batch_size,
                    epochs=args.epochs, val_fraction=0.0)
    names = [n for n in args.only.split(",") if n]
    trainers = {n: TRAINERS[n](train, cfg) for n in names}
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    print(f"{args.rows} x {args.d_in} rows, {args.latents} latents, k={args.k}, batch "
          f"{args.batch_size}, Adam lr {args.lr}, {args.epochs} epochs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    for epoch in range(args.epochs):
        for n, t in trainers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            t.epoch()
            times[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
        print(f"epoch {epoch + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
    ref = statistics.median(times[names[0]])
    results = []
    for n in names:
        med = statistics.median(times[n])
        results.append({"trainer": n, "s_per_epoch": round(med, 3),
                        "min_s_per_epoch": round(min(times[n]), 3),
                        "cpu_s_per_epoch": round(statistics.median(cpu[n]), 3),
                        "x_slower_than_" + names[0]: round(med / ref, 2),
                        "nmse_held_out": round(trainers[n].nmse(held), 4)})
    width = max(len(n) for n in names)
    print(f"\n{'trainer':<{width}}  s/epoch (median)  s/epoch (min)  CPU s/epoch  vs {names[0]}"
          "  nMSE held-out")
    for r in results:
        print(f"{r['trainer']:<{width}}  {r['s_per_epoch']:>16.3f}  {r['min_s_per_epoch']:>13.3f}  "
              f"{r['cpu_s_per_epoch']:>11.3f}  {r['x_slower_than_' + names[0]]:>7.2f}x  "
              f"{r['nmse_held_out']:>13.4f}")
    if "sparsify" in trainers:
        sp = statistics.median(times["sparsify"])
        for n in names:
            if n.startswith("ours"):
                print(f"{n} is {sp / statistics.median(times[n]):.2f}x faster per epoch than sparsify "
                      f"(wall time; {statistics.median(cpu['sparsify']) / statistics.median(cpu[n]):.2f}x"
                      " in CPU time)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
