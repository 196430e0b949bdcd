"""Laminar sweep: lab.laminar vs a seed-style loop, at equal settings, on GPT-2 small's shape.

    python bench/laminar_bench.py                      # defaults below, ReLU + L1 (the seed)
    python bench/laminar_bench.py --activation topk    # what Top-K gives instead
    python bench/laminar_bench.py --layers 4 --epochs 5 --windows 2   # a quicker look

Both sides get the same random GPT-2 small (GPT2Config(), random weights), the same random
token windows, drop position 0, normalize each layer's activations the same way, and train a
tied ReLU + L1 SAE (same latents, epochs, batch, lr, L1, held-out split) per layer, evaluating
the held-out rows every epoch and the density at the end.

  seed-style: per layer, one full forward (LM head included, as `model(ids)` does) with a hook
              on that layer's MLP, then a plain dense PyTorch loop (nn.Parameter, DataLoader,
              Adam) over the rows.
  lab:        lab.laminar.sweep: one forward pass captures every layer (body only, stops after
              the deepest), then lab.sae.train_sae, whose steps go sparse once the code is.

Prints the time of each part, both totals and the ratio. Timings on a shared machine are
noisy: run the two sides in one process (as here) and compare ratios, not absolute times.

Measured here (2 shared cores, load 4-8, --threads 1; reduced settings, equal on both sides:
12 layers, 4 x 256 tokens, 3072 latents (4x), 30 epochs, batch 64, lr 1e-3, L1 3e-3):
  ReLU + L1: lab 230 s, seed-style 610 s: 2.65x (forward 23x, SAE training 2.2x)
  Top-K 32:  lab 227 s, seed-style 648 s: 2.86x (forward 16x, SAE training 2.4x)
The target of 3x is not reached: the SAE training is ~97% of the lab's time, and lab.sae's
steps are only ~2.2-2.4x faster than the plain dense loop. Every step still needs the full
dense encoder matmul to find the active latents, and a ReLU code takes dense steps until it
is below lab.sae's 5% density cutoff (on smollm2 data ~40% of a 30-epoch run's steps).
More epochs push the ratio down towards the SAE ratio; the forward alone is 16-23x faster.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import laminar  # noqa: E402
from lab.arch import GPT2  # noqa: E402
from lab.models import LabModel, tiny_tokenizer  # noqa: E402


def gpt2_small_random(n_layers: int) -> LabModel:
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layers)).eval().requires_grad_(False)
    return LabModel(name=f"gpt2-small-random-{n_layers}L", model=model, tokenizer=tiny_tokenizer(),
                    arch=GPT2, device=torch.device("cpu"), load_seconds=0, source="random")


# ---------------------------------------------------------------- the seed-style side

class PlainSAE(nn.Module):
    """Tied ReLU (or Top-K) SAE, dense, as one writes it first."""

    def __init__(self, d: int, m: int, seed: int, k: int | None = None):
        super().__init__()
        w = torch.randn(m, d, generator=torch.Generator().manual_seed(seed))
        self.W = nn.Parameter(w / w.norm(dim=1, keepdim=True))
        self.b_enc = nn.Parameter(torch.zeros(m))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.k = k

    def forward(self, x):
        z = F.relu((x - self.b_dec) @ self.W.T + self.b_enc)
        if self.k is not None:   # keep the k largest per row
            vals, idx = z.topk(self.k, dim=-1)
            z = torch.zeros_like(z).scatter(-1, idx, vals)
        return z @ self.W + self.b_dec, z


def seed_style_layer(model, windows, layer: int, cfg: laminar.LaminarConfig) -> tuple[dict, float, float]:
    """One full forward for this layer, then a plain SAE loop. Returns (row, fwd s, sae s)."""
    t0 = time.perf_counter()
    got = []
    handle = model.transformer.h[layer].mlp.register_forward_hook(lambda m, i, o: got.append(o.detach()))
    try:
        with torch.no_grad():
            for i in range(0, len(windows), cfg.forward_batch):
                model(input_ids=windows[i:i + cfg.forward_batch])
    finally:
        handle.remove()
    acts = torch.cat([g[:, 1:] for g in got]).reshape(-1, model.config.n_embd)
    t1 = time.perf_counter()

    scale = acts.var(0, unbiased=False).mean().sqrt()
    x = acts / scale
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed + 1))
    n_val = round(len(x) * cfg.val_fraction)
    train, val = x[perm[n_val:]], x[perm[:n_val]]
    topk = cfg.activation == "topk"
    sae = PlainSAE(x.shape[1], cfg.expansion * x.shape[1], cfg.seed, cfg.k if topk else None)
    l1 = 0.0 if topk else cfg.l1
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train),
                                         batch_size=cfg.batch_size, shuffle=True)
    for _ in range(cfg.epochs):
        for (xb,) in loader:
            recon, z = sae(xb)
            loss = F.mse_loss(recon, xb) + l1 * z.sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_nmse = float(F.mse_loss(sae(val)[0], val) / val.var(0, unbiased=False).mean())
    with torch.no_grad():
        recon, z = sae(x)
        density = float((z > 0).float().mean())
        nmse = float(F.mse_loss(recon[perm[n_val:]], train) / train.var(0, unbiased=False).mean())
    return {"layer": layer, "density": density, "nmse": nmse, "val_nmse": val_nmse}, t1 - t0, \
        time.perf_counter() - t1


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12, help="GPT-2 small has 12")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--window-len", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--expansion", type=int, default=8, help="latents / d_model (768)")
    ap.add_argument("--activation", default="relu", choices=["relu", "topk"],
                    help="relu: ReLU + L1 on both sides (the seed); topk: Top-K on both sides")
    ap.add_argument("--k", type=int, default=32, help="active latents per token (topk)")
    ap.add_argument("--l1", type=float, default=laminar.LaminarConfig.l1)
    ap.add_argument("--lr", type=float, default=laminar.LaminarConfig.lr)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-seed", action="store_true", help="time the lab side only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)

    lm = gpt2_small_random(args.layers)
    cfg = laminar.LaminarConfig(n_windows=args.windows, window_len=args.window_len,
                                epochs=args.epochs, expansion=args.expansion, l1=args.l1,
                                lr=args.lr, batch_size=args.batch_size, activation=args.activation,
                                k=args.k)
    windows = torch.randint(0, lm.vocab_size, (args.windows, args.window_len),
                            generator=torch.Generator().manual_seed(0))
    print(f"GPT-2 small shape, random weights, {args.layers} layers; {args.windows} x "
          f"{args.window_len} tokens; SAE {cfg.expansion * lm.d_model} latents, {args.activation}, "
          f"l1 {args.l1:g}, lr {args.lr:g}, {args.epochs} epochs, batch {args.batch_size}; "
          f"{torch.get_num_threads()} threads")

    capture = {}
    t0 = time.perf_counter()

    def on_progress(p):
        if p.stage == "capture":   # the last call comes right after the last forward
            capture["end"] = time.perf_counter()

    rows = laminar.sweep(lm, windows, cfg, on_progress=on_progress)
    lab_total = time.perf_counter() - t0
    lab_fwd = capture["end"] - t0
    print(f"lab:        {lab_total:7.1f} s  (one forward for all layers {lab_fwd:.1f} s, "
          f"SAEs {lab_total - lab_fwd:.1f} s)  mean density {rows['density'].mean():.4f}, "
          f"mean nMSE {rows['nmse'].mean():.4f}, held-out {rows['val_nmse'].mean():.4f}")
    if args.skip_seed:
        return

    fwd = sae_s = 0.0
    seed_rows = []
    for layer in range(args.layers):
        row, f, s = seed_style_layer(lm.model, windows, layer, cfg)
        seed_rows.append(row)
        fwd, sae_s = fwd + f, sae_s + s
    seed_total = fwd + sae_s
    mean = {k: sum(r[k] for r in seed_rows) / len(seed_rows) for k in ("density", "nmse", "val_nmse")}
    print(f"seed-style: {seed_total:7.1f} s  (one forward per layer {fwd:.1f} s, "
          f"SAEs {sae_s:.1f} s)  mean density {mean['density']:.4f}, mean nMSE {mean['nmse']:.4f}, "
          f"held-out {mean['val_nmse']:.4f}")
    print(f"ratio (seed-style / lab): {seed_total / lab_total:.2f}x   "
          f"forward {fwd / lab_fwd:.1f}x, SAE training {sae_s / (lab_total - lab_fwd):.2f}x")


if __name__ == "__main__":
    main()
