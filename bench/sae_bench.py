"""Top-K SAE training speed on a CPU: ours vs EleutherAI's sparsify, cell by cell.

    pip install --no-deps -r requirements-bench.txt      # sparsify, without touching torch
    python bench/sae_bench.py                            # every cell (below), 3 epochs each
    python bench/sae_bench.py --data atoms --threads 2   # one cell
    python bench/sae_bench.py --profile                  # one step, phase by phase

A cell is (data kind, torch threads). Data kinds, all 10,240 training + 1,024 held-out rows:
  atoms     sparse combinations (k of 2 x latents random unit atoms, positive weights) + 5% noise
  lowrank   a rank-64 Gaussian with a decaying spectrum + 5% noise (no sparse structure)
  smollm2   smollm2-135m's MLP output at layer 15 over the bundled LED article (576 wide, so
            8 x 576 = 4608 latents); skipped with a note when the model cannot load
Every trainer in a cell sees the same rows, k, latents (6144 for 768-wide rows), batch 256,
Adam (fused) at lr 1e-4; epochs are interleaved (epoch 1 of every trainer, then epoch 2, ...,
the order rotating) so a neighbour's load hits all alike. A cell prints each trainer's median
s/epoch and its held-out normalized MSE (squared error / total variance, after the last epoch),
and one row per (ours arm, peer arm): the ratio peer s/epoch / ours, both nMSEs, ours' multiple
of the floor, and whether the issue's bar holds (ratio >= 1.5 and nMSE <= peer's x 1.02). The
median leaves out epoch 1 (warm-up) when there are 3 or more.

Trainers:
  ours-tied         lab.sae.SAETrainer at the lab's defaults (tied weights, Top-K)
  ours-untied       the same with a separate, unit-norm decoder (as sparsify's trainer has)
  ours-untied-free  a separate decoder left free (unit_decoder=False: as sparsify's bare step)
  ours-*-fp32       (only with --only) the same with the float32 selection forced
                    (LAB_SAE_BF16_SELECT=0: what a CPU without AMX or AVX512-BF16 runs)
  sparsify-bare     sparsify.SparseCoder's bare step: forward, fvu.backward(), fused Adam
  sparsify-trainer  its trainer's step: also the decoder's unit normalization before and the
                    projection of the gradient off the decoder rows after the backward
  dense-tied        (only with --only) a plain autograd Top-K loop on the same model as ours-tied
The floor: one dense encoder matmul per batch ([256, d] x [d, latents], timed in the cell at
its thread count) x batches per epoch; the Top-K selection needs it.

Results: each run writes what it printed to bench/results/sae_bench.md (with --profile:
bench/results/sae_bench_profile.md), headed by machine, date and commit; earlier
measurements: bench/results/sae_bench_history.md.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.sae import SAEConfig, SAETrainer, init_sae, loss_terms  # noqa: E402
from lab.sae import kernels, select  # noqa: E402
from lab.sae.model import SparseCode  # noqa: E402
from lab.sae.model import loss_grads  # noqa: E402
from lab.sae.train import _grad_buffers, _normalize_rows  # noqa: E402

HELD_OUT = 1024
SMOL_LAYER = 15


# ---------------------------------------------------------------- data

def atoms(rows: int, d_in: int, latents: int, k: int, seed: int = 0) -> torch.Tensor:
    """Rows made of `k` of 2 x `latents` random unit atoms, positive weights, plus 5% noise."""
    gen = torch.Generator().manual_seed(seed)
    n_atoms = 2 * latents
    dictionary = torch.randn(n_atoms, d_in, generator=gen)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    idx = torch.rand(rows, n_atoms, generator=gen).topk(k, dim=1).indices   # k distinct
    weights = torch.rand(rows, k, generator=gen) + 0.5
    x = torch.zeros(rows, n_atoms).scatter_(1, idx, weights) @ dictionary
    return x + 0.05 * x.std() * torch.randn(rows, d_in, generator=gen)


def lowrank(rows: int, d_in: int, latents: int, k: int, seed: int = 0, rank: int = 64) -> torch.Tensor:
    """A rank-`rank` Gaussian (singular values falling as 1/sqrt(i)) plus 5% noise."""
    gen = torch.Generator().manual_seed(seed)
    rank = min(rank, d_in)
    basis = torch.linalg.qr(torch.randn(d_in, rank, generator=gen)).Q.T      # [rank, d_in]
    spectrum = 1 / torch.arange(1, rank + 1).sqrt()
    x = (torch.randn(rows, rank, generator=gen) * spectrum) @ basis + 0.3
    return x + 0.05 * x.std() * torch.randn(rows, d_in, generator=gen)


def smollm2(rows: int, *_):
    """smollm2-135m's MLP output at SMOL_LAYER over the bundled LED article, `rows` tokens
    (windows of 128 + 1 tokens, position 0 dropped; evenly spaced, overlapping only when the
    article is too short), or the reason it cannot load."""
    try:
        from lab import corpus
        from lab.laminar.capture import capture_mlp_out
        from lab.models import load_model
        lm = load_model("smollm2-135m", "cpu")
    except Exception as e:   # noqa: BLE001 - any failure to load means: skip the kind
        return f"smollm2-135m did not load ({type(e).__name__}: {e})"
    ids = corpus.tokenize(lm.tokenizer, corpus.bundled_article().text)
    T, n = 129, math.ceil(rows / 128)
    starts = torch.linspace(0, ids.numel() - T, n).long()
    windows = torch.stack([ids[s:s + T] for s in starts.tolist()])
    acts = capture_mlp_out(lm, windows, [SMOL_LAYER], forward_batch=8)[0]
    return acts[torch.randperm(len(acts), generator=torch.Generator().manual_seed(0))][:rows]


DATA = {"atoms": atoms, "lowrank": lowrank, "smollm2": smollm2}


def nmse(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


# ---------------------------------------------------------------- trainers

class Ours:
    """lab.sae.SAETrainer; `bf16`: False forces the float32 selection (lab.sae.select)."""

    def __init__(self, train, cfg, bf16: bool | None = None):
        before = os.environ.get(FLAG)
        if bf16 is not None:
            os.environ[FLAG] = "1" if bf16 else "0"
        try:
            self.t = SAETrainer(train, cfg)
        finally:
            if before is None:
                os.environ.pop(FLAG, None)
            else:
                os.environ[FLAG] = before

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


@functools.cache
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
    """sparsify's SparseCoder; `trainer`: its trainer's step, else the bare step."""

    def __init__(self, train, cfg, trainer: bool):
        SparseCoder, SparseCoderConfig = load_sparsify()
        torch.manual_seed(cfg.seed)
        self.sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=cfg.n_latents, k=cfg.k))
        with torch.no_grad():
            self.sae.b_dec.copy_(train.mean(0))   # as its trainer does on the first step
        self.x, self.cfg, self.trainer = train, cfg, trainer
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, fused=True)
        self.gen = torch.Generator().manual_seed(cfg.seed + 2)

    def epoch(self):
        for batch in torch.randperm(len(self.x), generator=self.gen).split(self.cfg.batch_size):
            self.step(self.x[batch])

    def step(self, xb):
        if self.trainer:
            self.sae.set_decoder_norm_to_unit_norm()
        self.sae(xb).fvu.backward()
        if self.trainer:
            self.sae.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        self.opt.zero_grad()

    @torch.no_grad()
    def nmse(self, x):
        return nmse(self.sae(x).sae_out, x)


FLAG = "LAB_SAE_BF16_SELECT"
TRAINERS = {"ours-tied": lambda tr, c: Ours(tr, c),
            "ours-untied": lambda tr, c: Ours(tr, SAEConfig(**{**vars(c), "tied": False})),
            "ours-untied-free": lambda tr, c: Ours(tr, SAEConfig(**{**vars(c), "tied": False,
                                                                  "unit_decoder": False})),
            "ours-tied-fp32": lambda tr, c: Ours(tr, c, bf16=False),
            "ours-untied-fp32": lambda tr, c: Ours(tr, SAEConfig(**{**vars(c), "tied": False}),
                                                   bf16=False),
            "sparsify-bare": lambda tr, c: Sparsify(tr, c, trainer=False),
            "sparsify-trainer": lambda tr, c: Sparsify(tr, c, trainer=True),
            "dense-tied": DenseTopK}
DEFAULT = "ours-tied,ours-untied,ours-untied-free,sparsify-bare,sparsify-trainer"
PEERS = ("sparsify-bare", "sparsify-trainer")


# ---------------------------------------------------------------- one cell

def matmul_seconds(batch: int, d_in: int, latents: int, reps: int = 20) -> float:
    """Median seconds of the encoder's [batch, d_in] x [d_in, latents] matmul (+ bias)."""
    x, w, b = torch.randn(batch, d_in), torch.randn(latents, d_in), torch.randn(latents)
    out = torch.empty(batch, latents)
    times = []
    for _ in range(reps + 3):
        t0 = time.perf_counter()
        torch.addmm(b, x, w.T, out=out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[3:])


def run_cell(train, held, cfg: SAEConfig, names: list[str], epochs: int) -> dict:
    trainers = {n: TRAINERS[n](train, cfg) for n in names}
    times = {n: [] for n in names}
    for epoch in range(epochs):
        order = names[epoch % len(names):] + names[:epoch % len(names)]
        for n in order:
            t0 = time.perf_counter()
            trainers[n].epoch()
            times[n].append(time.perf_counter() - t0)
        print(f"  epoch {epoch + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names),
              flush=True)
    batches = math.ceil(len(train) / cfg.batch_size)
    floor = batches * matmul_seconds(cfg.batch_size, train.shape[1], cfg.n_latents)
    # the first epoch pays page faults and allocator warm-up, unevenly (sparsify's autograd
    # buffers: 3.3 s against 2.1 s later): with 3 or more epochs it is left out
    return {"s_per_epoch": {n: statistics.median(t[1:] if len(t) > 2 else t)
                            for n, t in times.items()},
            "epochs_s": times, "floor_s": floor,
            "nmse": {n: nmse_of(t, held) for n, t in trainers.items()}}


def nmse_of(trainer, held) -> float:
    return round(trainer.nmse(held), 4)


def print_cell(kind: str, threads: int, cell: dict) -> list[dict]:
    """Prints the cell; returns one row per (ours arm, peer arm): the ratio, both nMSEs and
    whether the arm holds the bar (>= 1.5x the peer, nMSE at most the peer's + 2%)."""
    s, q, floor = cell["s_per_epoch"], cell["nmse"], cell["floor_s"]
    print(f"  {'trainer':<17} s/epoch  nMSE    x floor")
    for n in s:
        print(f"  {n:<17} {s[n]:7.3f}  {q[n]:.4f}  {s[n] / floor:5.2f}x")
    print(f"  floor (one float32 encoder matmul per batch) {floor:.3f} s/epoch")
    rows = []
    for ours in (n for n in s if n.startswith("ours")):
        for peer in (p for p in PEERS if p in s):
            ratio = s[peer] / s[ours]
            rows.append({"data": kind, "threads": threads, "ours": ours, "peer": peer,
                         "peer_s": round(s[peer], 3), "ours_s": round(s[ours], 3),
                         "ratio": round(ratio, 2), "nmse_ours": q[ours], "nmse_peer": q[peer],
                         "ours_over_floor": round(s[ours] / floor, 2),
                         "holds": ratio >= 1.5 and q[ours] <= 1.02 * q[peer]})
    return rows


# ---------------------------------------------------------------- profile

class Phases:
    """Wall time per named phase of a step: call `tick(name)` after each phase."""

    def __init__(self):
        self.ms = defaultdict(list)
        self.t = time.perf_counter()

    def start(self):
        self.t = time.perf_counter()

    def tick(self, name: str):
        now = time.perf_counter()
        self.ms[name].append(1e3 * (now - self.t))
        self.t = now

    def medians(self, skip: int) -> dict:
        return {n: statistics.median(v[skip:]) for n, v in self.ms.items()}


@torch.no_grad()
def ours_phases(trainer: SAETrainer, xs: torch.Tensor, ph: Phases) -> None:
    """One step of ours, phase by phase: lab.sae.train._gradients and sparse_grads unrolled."""
    sae, cfg, k = trainer.sae, trainer.cfg, kernels
    ph.start()
    out = _grad_buffers(sae)
    xc = xs - sae.b_dec
    if trainer.low is None:
        pre = torch.addmm(sae.b_enc, xc, sae.W_enc.T, out=trainer.pre[:xs.shape[0]])
        ph.tick("encoder matmul")
        code = sae.active_code(xs, pre)
        ph.tick("top-k selection")
    else:
        code = bf16_code_phases(sae, xc, trainer.low, ph)
    recon, vals = k.sparse_decode(sae.b_dec, sae.W_enc, sae.W_dec, code.crow, code.cols, code.pre)
    ph.tick("sparse decode")
    loss, mse = loss_terms(sae, xs, recon, vals, cfg.l1)
    g, _ = loss_grads(sae, xs, recon, cfg.l1)
    ph.tick("loss + d loss/d recon")
    w_dec = sae.decoder_weight
    g_pre = k._sampled_rows_dot(code.crow, code.cols, g, w_dec) * (vals > 0)
    ph.tick("bwd: d code (SDDMM)")
    g_b_enc = k._sum_by_latent(code.cols, g_pre, sae.W_enc, out[2])
    by_latent = k._by_latent(code.crow, code.cols, sae.n_latents)
    ph.tick("bwd: group by latent")
    if sae.tied:
        k._scatter_rows(by_latent, [g_pre, vals], [xc, g], out[1])
    else:
        k._scatter_rows(by_latent, [g_pre], [xc], out[1])
        k._scatter_rows(by_latent, [vals], [g], out[3])
    ph.tick("bwd: d W (CSR x dense)")
    torch.sub(g.sum(0), g_b_enc @ sae.W_enc, out=out[0])
    ph.tick("bwd: d b_dec")
    with torch.enable_grad():
        trainer.opt.step()
    ph.tick("Adam (fused)")
    if not sae.tied and cfg.unit_decoder:
        _normalize_rows(sae.W_dec)
        ph.tick("decoder unit norm")
    trainer_tally(trainer, loss, mse, xs, vals, code.cols)
    ph.tick("bookkeeping")


def bf16_code_phases(sae, xc, low, ph):
    """lab.sae.select.topk_bf16 unrolled."""
    B, m = xc.shape[0], select.candidates(sae.k)
    low.refresh(sae.W_enc, sae.b_enc)
    ph.tick("encoder copy to bf16")
    pre16 = torch.addmm(low.b, xc.to(torch.bfloat16), low.w.T, out=low.pre[:B])
    ph.tick("encoder matmul (bf16)")
    cand = select.top_m(pre16, m)
    ph.tick("top-1.5k selection (bf16)")
    crow = torch.arange(0, B * m + 1, m)
    exact = kernels._sampled_rows_dot(crow, cand.reshape(-1), xc, sae.W_enc).view(B, m) + sae.b_enc[cand]
    best = exact.topk(sae.k, dim=1, sorted=False)
    idx, order = cand.gather(1, best.indices).sort(dim=1)
    code = SparseCode(torch.arange(0, B * sae.k + 1, sae.k), idx.reshape(-1),
                      best.values.gather(1, order).reshape(-1))
    ph.tick("float32 re-rank (SDDMM)")
    return code


def trainer_tally(trainer, loss, mse, xs, vals, cols):
    from lab.sae.train import _Tally
    tally = _Tally(trainer.sae.n_latents)
    tally.add(loss.item(), mse.item(), xs.shape[0], vals, cols)


def sparsify_phases(sp: Sparsify, xb: torch.Tensor, ph: Phases) -> None:
    """One step of sparsify (bare, or its trainer's with `sp.trainer`), phase by phase."""
    sae = sp.sae
    ph.start()
    if sp.trainer:
        sae.set_decoder_norm_to_unit_norm()
        ph.tick("decoder unit norm")
    top_acts, top_idx, _ = sae.encode(xb)
    ph.tick("encoder matmul + top-k")
    out = sae.decode(top_acts, top_idx)
    ph.tick("sparse decode")
    fvu = (xb - out).pow(2).sum() / (xb - xb.mean(0)).pow(2).sum()
    ph.tick("loss")
    fvu.backward()
    ph.tick("backward (autograd)")
    if sp.trainer:
        sae.remove_gradient_parallel_to_decoder_directions()
        ph.tick("gradient projection")
    sp.opt.step()
    ph.tick("Adam (fused)")
    sp.opt.zero_grad()
    ph.tick("zero_grad")


def profile(train, cfg: SAEConfig, threads: list[int], steps: int = 30, warm: int = 5) -> None:
    B = cfg.batch_size
    n = len(train) // B
    arms = {"ours-tied": cfg, "ours-untied": SAEConfig(**{**vars(cfg), "tied": False}),
            "ours-untied-free": SAEConfig(**{**vars(cfg), "tied": False, "unit_decoder": False})}
    for t in threads:
        torch.set_num_threads(t)
        print(f"\n{t} thread(s): median ms per step over {steps} steps")
        tables = {}
        for name, c in arms.items():
            trainer, ph = SAETrainer(train, c), Phases()
            for i in range(warm + steps):
                t0 = time.perf_counter()
                ours_phases(trainer, trainer.train[(i % n) * B:(i % n + 1) * B], ph)
                ph.ms["whole step"].append(1e3 * (time.perf_counter() - t0))
            tables[name] = ph.medians(warm)
        for name, trainer in (("sparsify-bare", False), ("sparsify-trainer", True)):
            sp, ph = Sparsify(train, cfg, trainer), Phases()
            for i in range(warm + steps):
                t0 = time.perf_counter()
                sparsify_phases(sp, train[(i % n) * B:(i % n + 1) * B], ph)
                ph.ms["whole step"].append(1e3 * (time.perf_counter() - t0))
            tables[name] = ph.medians(warm)
        mm = 1e3 * matmul_seconds(B, train.shape[1], cfg.n_latents)
        for name, table in tables.items():
            print(f"  {name}: " + ", ".join(f"{p} {v:.2f}" for p, v in table.items()))
        print(f"  the bare encoder matmul alone: {mm:.2f} ms")


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="atoms,lowrank,smollm2", help="comma-separated data kinds")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--rows", type=int, default=10240)
    ap.add_argument("--d-in", type=int, default=768, help="width of the synthetic rows")
    ap.add_argument("--latents", type=int, default=6144,
                    help="latents for --d-in wide rows (other widths keep the ratio)")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (all trainers)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--only", default=DEFAULT, help="comma-separated trainer names")
    ap.add_argument("--profile", action="store_true", help="phase by phase, atoms only")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    names = [n for n in args.only.split(",") if n]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, rows "
          f"{args.rows} + {HELD_OUT} held out, k={args.k}, batch {args.batch_size}, Adam lr "
          f"{args.lr}, {args.epochs} epochs", flush=True)
    summary = []
    for kind in args.data.split(","):
        x = DATA[kind](args.rows + HELD_OUT, args.d_in, args.latents, args.k)
        if isinstance(x, str):
            print(f"\n{kind}: skipped: {x}")
            continue
        latents = args.latents * x.shape[1] // args.d_in
        cfg = SAEConfig(n_latents=latents, k=args.k, lr=args.lr, batch_size=args.batch_size,
                        epochs=args.epochs, val_fraction=0.0)   # all score the same held-out rows
        train, held = x[:args.rows], x[args.rows:]
        if args.profile:
            profile(train, cfg, threads)
            return 0
        for t in threads:
            torch.set_num_threads(t)
            print(f"\n{kind}, {len(train)} x {x.shape[1]} rows, {latents} latents, {t} thread(s)",
                  flush=True)
            summary += print_cell(kind, t, run_cell(train, held, cfg, names, args.epochs))
    if summary:
        print("\ncell                ours              peer              ours s  peer s  ratio"
              "  nMSE ours  peer    x floor  holds")
        for r in summary:
            print(f"{r['data']:<8} {r['threads']} thread(s) {r['ours']:<17} {r['peer']:<17} "
                  f"{r['ours_s']:6.3f}  {r['peer_s']:6.3f}  {r['ratio']:4.2f}x  "
                  f"{r['nmse_ours']:.4f}     {r['nmse_peer']:.4f}  {r['ours_over_floor']:5.2f}x  "
                  f"{'yes' if r['holds'] else 'no'}")
        for ours in dict.fromkeys(r["ours"] for r in summary):
            mine = [r for r in summary if r["ours"] == ours]
            print(f"{ours}: holds the bar (>= 1.5x, nMSE <= peer + 2%) in "
                  f"{sum(r['holds'] for r in mine)} of {len(mine)} (cell, peer) pairs")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "cells": summary}, indent=2))
    return 0


if __name__ == "__main__":
    from report import tee, write_result   # bench/ is on sys.path when run as a script
    with tee() as printed:
        code = main()
    write_result("sae_bench_profile" if "--profile" in sys.argv else "sae_bench", printed)
    sys.exit(code)
