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

Profile (`--profile`, median ms per step over 30 steps after 5 warm-up steps; 10240 x 768
atoms, 6144 latents, k=32, batch 256; measured 2026-12-03 19:00 UTC on an idle 2-core Xeon with
AMX tiles, once, so about +-10%). Ours ranks in bfloat16 there (lab.sae.select):
                                 ours-tied      ours-untied    sparsify-bare
  phase                          1 thr  2 thr   1 thr  2 thr   1 thr  2 thr
  encoder copy to bfloat16        2.3    1.0     2.5    1.3
  encoder matmul (bfloat16)       4.6    2.4     4.6    2.6    23.4   12.6  (sparsify: fp32
  top-1.5k selection (bfloat16)   6.0    3.5     6.0    3.3                  matmul + top-k)
  float32 re-rank (SDDMM)         3.8    2.0     3.9    2.2
  sparse decode                   1.4    0.7     2.2    0.9     2.6    1.4
  loss + d loss/d recon           0.6    0.3     0.6    0.4     0.8    0.6
  bwd: d code (SDDMM)             1.6    0.9     1.9    1.1    20.5   11.6  (sparsify: whole
  bwd: group by latent            0.7    0.6     0.7    0.6                  autograd backward)
  bwd: d W (CSR x dense)          3.3    1.8     5.7    3.2
  bwd: d b_dec                    1.0    0.5     1.2    0.6
  Adam (fused)                    5.4    3.0    10.8    5.8    11.4    6.1
  decoder unit norm                 -      -     2.8    1.5       -      -
  whole step                     31.2   17.1    43.9   24.2    59.2   32.5
  bare float32 encoder matmul    16.0    8.6
sparsify-trainer's whole step: 83.7 (1 thread), 44.9 (2 threads). The four selection phases
(16.7 / 8.9 ms) replace a float32 matmul + top-k of ~20 / ~11 ms; each phase is slower inside
a step than alone (the bfloat16 matmul alone: 2.5 / 1.6 ms), the rest of a step evicts its
inputs. Before (float32 selection, same machine, earlier that day): ours-tied 33.3 / 20.4 ms.

Cells (`python bench/sae_bench.py`, same machine, 19:00 UTC; s/epoch, held-out nMSE):
  cell               ours-tied        ours-untied      sparsify-bare    sparsify-trainer
  atoms    1 thread  1.182  0.4807    1.796  0.4811    2.274  0.7463    3.146  0.7469
  atoms    2 threads 0.689  0.4807    0.990  0.4811    1.320  0.7463    1.794  0.7469
  lowrank  1 thread  1.219  0.5176    1.794  0.4777    2.267  0.4738    3.180  0.4731
  lowrank  2 threads 0.684  0.5176    0.951  0.4777    1.265  0.4737    1.752  0.4731
  smollm2  1 thread  0.859  0.6242    1.184  0.6271    1.568  0.6266    2.106  0.6263
  smollm2  2 threads 0.523  0.6242    0.695  0.6271    0.903  0.6266    1.140  0.6263
  ours-tied is 1.73-1.92x sparsify-bare and 2.18-2.66x sparsify-trainer in every cell, 1.87x
  the float32 encoder floor at best (lowrank, 1 thread; atoms 1.90x); its nMSE is better on
  atoms and smollm2, 9% worse on lowrank (a tied code fits that Gaussian worse: ours-untied is
  within 0.8% there). ours-untied, the like-for-like arm (untied, unit-norm decoder), is
  1.26-1.33x sparsify-bare (which skips the decoder norm) and 1.64-1.84x sparsify-trainer.
  `--only ours-tied,ours-tied-fp32` etc. time the float32 selection beside: ours-tied 1.20x
  (1 thread) and 1.27x (2 threads) faster with the bfloat16 ranking, same nMSE to 4 digits.

2026-12-04 (another 2-core Xeon with AMX, 480 MB shared L3; `lab.sae.select.top_m` ranks the
1.5 k candidates in two grouped passes; epoch 1 left out; `--epochs 4 --data atoms,lowrank`):
  profile, whole step ms (1 / 2 threads): ours-tied 21.4 / 14.1, ours-untied 32.6 / 20.6,
  sparsify-bare 51.8 / 29.5; the selection phase 5.7 -> 3.7 ms (1 thread), 3.4 -> 2.5 (2).
  cell               ours-tied        ours-untied      sparsify-bare    sparsify-trainer
  atoms    1 thread  0.818  0.4812    1.215  0.4819    1.828  0.7444    2.557  0.7451
  atoms    2 threads 0.479  0.4812    0.679  0.4819    1.001  0.7444    1.364  0.7451
  lowrank  1 thread  0.859  0.4788    1.240  0.4362    1.738  0.4321    2.537  0.4312
  lowrank  2 threads 0.465  0.4788    0.677  0.4362    0.989  0.4321    1.328  0.4312
  ours-tied 2.02-2.24x sparsify-bare, 2.85-3.13x sparsify-trainer, 1.55x the floor at best;
  its lowrank nMSE is still 11% above sparsify's. ours-untied 1.40-1.50x sparsify-bare (nMSE
  within 1%), 2.0-2.1x sparsify-trainer. Without the warm-up exclusion the same cells read up
  to 2x for untied: sparsify's first epoch (3.3-3.6 s vs 1.8 s) is its allocator warming up.
  Where untied's remaining time goes (1 thread): Adam 9.0 ms (as sparsify's: the same fused
  kernel on the same 9.4 M parameters), d W 4.8, decoder unit norm 2.1 (sparsify-bare has none).

2026-12-04 13:24 UTC (same machine; + ours-untied-free, topk_bf16 sorts only the k winners,
the by-latent order by a 16-bit radix sort; `--epochs 4`, all three data kinds), s/epoch:
  cell               tied   untied  untied-free  sparsify-bare  sparsify-trainer
  atoms    1 thread  0.865  1.259   1.154        1.967          (2.4-2.7)
  atoms    2 threads 0.469  0.681   0.628        1.084          1.457
  lowrank  1 thread  0.812  1.234   1.138        1.867          2.622
  lowrank  2 threads 0.440  0.687   0.640        0.998          1.411
  smollm2  1 thread  0.520  0.719   0.701        1.199          1.515
  smollm2  2 threads 0.315  0.418   0.410        0.659          0.879
  ours-untied-free holds the bar in 12 of 12 (cell, peer) pairs (1.56-1.73x sparsify-bare,
  nMSE within 1.0%), ours-untied 11 (lowrank 2 threads 1.45x), ours-tied 8 (lowrank nMSE +11%).
  Best x floor: ours-tied 1.39x (lowrank, 2 threads). Noise: in a run 4 h earlier sparsify ran
  ~10% faster and untied-free read 1.45-1.46x at 2 threads on atoms and smollm2.

2026-12-04 18:00 UTC, a 2-core AMD EPYC (AVX512-BF16, no AMX; 32 MB L3), `--epochs 4`, s/epoch:
  cell               tied   untied  untied-free  sparsify-bare  sparsify-trainer  floor
  float32 ranking (before lab.sae.select took AVX512-BF16 as a fast bfloat16 unit):
  atoms    1 thread  1.599  1.869   1.791        2.099          2.338             0.989
  atoms    2 threads 0.909  1.076   1.054        1.188          1.383             0.556
  lowrank  1 thread  1.492  1.747   1.717        1.855          2.142             1.033
  lowrank  2 threads 1.088  1.193   1.134        1.184          1.411             0.738
  smollm2  1 thread  0.956  1.083   1.068        1.222          1.427             0.556
  smollm2  2 threads 0.544  0.641   0.612        0.702          0.789             0.284
  -> ours-untied-free 1.04-1.17x sparsify-bare, 0 of 12 pairs hold the bar.
  bfloat16 ranking (the default there since; the matmul alone 4.6x faster, 256 x 768 x 6144):
  atoms    1 thread  0.975  1.152   1.132        2.102          2.268             1.113
  atoms    2 threads 0.581  0.705   0.673        1.202          1.305             0.625
  lowrank  1 thread  0.901  1.077   1.116        1.983          2.781             0.996
  lowrank  2 threads 0.536  0.690   0.713        1.227          1.395             0.620
  smollm2  1 thread  0.684  0.746   0.770        1.293          1.446             0.594
  smollm2  2 threads 0.437  0.536   0.531        0.792          0.952             0.307
  -> ours-untied-free 1.49-1.86x sparsify-bare (nMSE within 1.0%), 1.79-2.49x sparsify-trainer:
  11 of 12 pairs, the miss smollm2 2 threads at 1.49x (1.59x in a rerun of that cell); ours-tied
  below the float32 floor in every 768-wide cell (0.87x at best). Where that cell's step goes
  (profile, --d-in 576 --latents 4608, 2 threads, ms): untied-free 10.3 (bf16 matmul 2.0, top
  1.5k 1.6, float32 re-rank 1.3, Adam 2.2, d W 1.0), sparsify-bare 18.1 (matmul + top-k 9.6,
  backward 4.7, Adam 2.8); 40 minutes later, the same profile read 14.8 vs 24.2: a neighbour's
  memory traffic slows the memory-bound phases (Adam, re-rank, d b_dec: +50-90%) more than the
  matmuls (+15%), so ours' lead shrinks when the machine is busy.
  Three more full runs there (the last with top_m's numpy passes), ours-untied-free /
  sparsify-bare per cell (nMSE as above in all):
  run                 atoms 1  atoms 2  lowrank 1  lowrank 2  smollm2 1  smollm2 2
  18:54               1.67x    1.65x    1.90x      1.72x      1.72x      1.74x
  19:00               1.76x    1.73x    1.89x      1.67x      1.62x      1.50x (1.496: a miss)
  19:10 (numpy)       1.92x    1.71x    1.97x      1.71x      1.76x      1.54x
  19:25 (`--data smollm2 --epochs 6`, a calm spell)                1.82x      1.73x
  atoms and lowrank held in all four runs (1.65x at worst); smollm2 at 2 threads (576 wide,
  the smallest step: most of it memory-bound) is the edge cell, 1.49-1.74x. Against
  sparsify-trainer untied-free is 1.74x at worst; ours-tied is 1.67-2.29x sparsify-bare.
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
    # buffers: 3.3 s against 2.1 s later, 2026-12-04): with 3 or more epochs it is left out
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
    sys.exit(main())
