"""Laminar sweep: lab.laminar vs a seed-style loop, at equal settings, on GPT-2 small's shape.

    python bench/laminar_bench.py                      # defaults below, ReLU + L1 (the seed)
    python bench/laminar_bench.py --activation topk    # what Top-K gives instead
    python bench/laminar_bench.py --layers 4 --epochs 5 --windows 2   # a quicker look
    python bench/laminar_bench.py --full-tokens [--model smollm2-135m] [--noise-seeds 2]

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

    python bench/laminar_bench.py --ray --model tiny-gpt2            # in process vs local Ray
    python bench/laminar_bench.py --ray --model smollm2-135m --layers 4 --ray-cpus 1,2

With --ray: lab.laminar.run at the quick preset (first LAYERS layers, bundled LED text) in this
process, then Ray's start-up (a local Ray on this machine's cores), then the same run as Ray
tasks for each --ray-cpus value (twice: the first run also starts Ray's workers), each compared
row by row with the in-process rows.

Results: each run writes what it printed to bench/results/laminar_bench.md (with --ray:
bench/results/laminar_bench_ray.md), headed by machine, date and commit; earlier
measurements: bench/results/laminar_bench_history.md.
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


def seed_style_layer(lm: LabModel, windows, layer: int, cfg: laminar.LaminarConfig) -> tuple[dict, float, float]:
    """One full forward for this layer, then a plain SAE loop. Returns (row, fwd s, sae s)."""
    model = lm.model
    t0 = time.perf_counter()
    got = []
    mlp = lm.arch.mlp_of(model, layer)
    handle = mlp.register_forward_hook(lambda m, i, o: got.append(o.detach()))
    try:
        with torch.no_grad():
            for i in range(0, len(windows), cfg.forward_batch):
                model(input_ids=windows[i:i + cfg.forward_batch])
    finally:
        handle.remove()
    acts = torch.cat([g[:, 1:] for g in got]).reshape(-1, lm.d_model)
    t1 = time.perf_counter()

    scale = acts.var(0, unbiased=False).mean().sqrt()
    x = acts / scale
    s = cfg.sae
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed + 1))
    n_val = round(len(x) * s.val_fraction)
    train, val = x[perm[n_val:]], x[perm[:n_val]]
    topk = s.activation == "topk"
    sae = PlainSAE(x.shape[1], s.expansion * x.shape[1], cfg.seed, s.k if topk else None)
    l1 = 0.0 if topk else s.l1
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=s.lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train),
                                         batch_size=s.batch_size, shuffle=True)
    for _ in range(s.epochs):
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
    ap.add_argument("--model", help="a lab model name (e.g. smollm2-135m: real weights, windows "
                    "from the bundled LED text); default: GPT-2 small's shape, random weights, "
                    "random tokens")
    ap.add_argument("--layers", type=int, default=12,
                    help="GPT-2 small has 12 (with --model: the first LAYERS of that model)")
    ap.add_argument("--layer-list", help="comma-separated layers to train (instead of the first "
                    "--layers); the model keeps all --layers layers")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--window-len", type=int, default=256)
    ap.add_argument("--full-tokens", action="store_true",
                    help="the seed's 10 x 1024 tokens, ReLU + L1 and then Top-K, on --layer-list "
                         "(default: six evenly spaced layers of --layers), 10 epochs unless --epochs")
    ap.add_argument("--epochs", type=int, help="SAE epochs (default 10)")
    ap.add_argument("--expansion", type=int, default=8, help="latents / d_model (768)")
    ap.add_argument("--activation", default="relu", choices=["relu", "topk"],
                    help="relu: ReLU + L1 on both sides (the seed); topk: Top-K on both sides")
    ap.add_argument("--k", type=int, default=32, help="active latents per token (topk)")
    ap.add_argument("--l1", type=float, default=laminar.PRESETS["full"].sae.l1)
    ap.add_argument("--lr", type=float, default=laminar.PRESETS["full"].sae.lr)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-seed", action="store_true", help="time the lab side only")
    ap.add_argument("--noise-seeds", type=int, default=0,
                    help="also train the lab side with seeds 1..N: the run-to-run spread of each "
                         "layer's density and nMSE")
    ap.add_argument("--ray", action="store_true", help="in process vs local Ray tasks instead")
    ap.add_argument("--ray-cpus", default="1", help="with --ray: cores per task, e.g. 1,2")
    args = ap.parse_args()
    if args.full_tokens:
        args.windows, args.window_len = 10, 1024
    args.epochs = args.epochs or 10
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    if args.ray:
        return ray_compare(args)
    lm, windows, what = model_and_windows(args)
    if args.layer_list:
        layers = [int(x) for x in args.layer_list.split(",")]
    elif args.full_tokens:   # six evenly spaced layers, the first and the last among them
        layers = sorted({round(i * (args.layers - 1) / 5) for i in range(6)})
    else:
        layers = list(range(args.layers))
    activations = ("relu", "topk") if args.full_tokens else (args.activation,)
    ratios = {a: compare(lm, windows, layers, a, args, what) for a in activations}
    if len(ratios) > 1:
        print("\n" + "   ".join(f"{a}: {r:.2f}x" for a, r in ratios.items() if r))


def model_and_windows(args):
    """(model, token windows [n, T], a line saying what they are)."""
    if args.model:
        from lab import corpus
        from lab.models import load_model
        lm = load_model(args.model, "cpu")
        args.layers = min(args.layers, lm.n_layers)
        ids = corpus.tokenize(lm.tokenizer, corpus.bundled_article().text)
        windows = corpus.sample_windows(ids, args.windows, args.window_len, seed=0)
        return lm, windows, f"{lm.name}, real weights, LED text"
    lm = gpt2_small_random(args.layers)
    windows = torch.randint(0, lm.vocab_size, (args.windows, args.window_len),
                            generator=torch.Generator().manual_seed(0))
    return lm, windows, "GPT-2 small shape, random weights, random tokens"


def lab_config(layers, activation: str, args, seed: int = 0) -> laminar.LaminarConfig:
    return laminar.preset("full", n_windows=args.windows, window_len=args.window_len,
                          layers=tuple(layers), seed=seed,
                          **{"sae.epochs": args.epochs, "sae.expansion": args.expansion,
                             "sae.l1": args.l1, "sae.lr": args.lr,
                             "sae.batch_size": args.batch_size, "sae.activation": activation,
                             "sae.k": args.k})


def compare(lm, windows, layers, activation: str, args, what: str) -> float | None:
    """Both sides on `layers` with one activation; prints both and returns seed-style / lab."""
    cfg = lab_config(layers, activation, args)
    print(f"\n{what}, layers {layers}; {args.windows} x {args.window_len} tokens; SAE "
          f"{cfg.sae.latents_for(lm.d_model)} latents, {activation}, l1 {args.l1:g}, lr "
          f"{args.lr:g}, {args.epochs} epochs, batch {args.batch_size}; "
          f"{torch.get_num_threads()} threads", flush=True)
    rows, lab_total, lab_fwd = lab_side(lm, windows, cfg)
    print(f"lab:        {lab_total:7.1f} s  (one forward for all layers {lab_fwd:.1f} s, "
          f"SAEs {lab_total - lab_fwd:.1f} s)  mean density {rows['density'].mean():.4f}, "
          f"mean nMSE {rows['nmse'].mean():.4f}, held-out {rows['val_nmse'].mean():.4f}", flush=True)
    print_layers("lab", rows.to_dict("records"))
    if args.noise_seeds:
        noise(lm, windows, layers, activation, args, rows)
    if args.skip_seed:
        return None
    fwd = sae_s = 0.0
    seed_rows = []
    for layer in layers:
        row, f, s = seed_style_layer(lm, windows, layer, cfg)
        seed_rows.append(row)
        fwd, sae_s = fwd + f, sae_s + s
    seed_total = fwd + sae_s
    mean = {k: sum(r[k] for r in seed_rows) / len(seed_rows) for k in ("density", "nmse", "val_nmse")}
    print(f"seed-style: {seed_total:7.1f} s  (one forward per layer {fwd:.1f} s, "
          f"SAEs {sae_s:.1f} s)  mean density {mean['density']:.4f}, mean nMSE {mean['nmse']:.4f}, "
          f"held-out {mean['val_nmse']:.4f}")
    print_layers("seed-style", seed_rows)
    print(f"ratio (seed-style / lab), {activation}: {seed_total / lab_total:.2f}x   "
          f"forward {fwd / lab_fwd:.1f}x, SAE training {sae_s / (lab_total - lab_fwd):.2f}x",
          flush=True)
    return seed_total / lab_total


def lab_side(lm, windows, cfg):
    """(rows, total seconds, seconds of the forward passes) of lab.laminar.sweep."""
    capture = {}
    t0 = time.perf_counter()

    def on_progress(p):
        if p.done <= 1:   # the forward passes are the first unit; the last call ends them
            capture["end"] = time.perf_counter()

    rows = laminar.sweep(lm, windows, cfg, on_progress=on_progress)
    return rows, time.perf_counter() - t0, capture["end"] - t0


def print_layers(side: str, rows: list[dict]) -> None:
    print(f"  {side} per layer: " + "; ".join(
        f"L{r['layer']} density {r['density']:.4f} nMSE {r['nmse']:.4f}" for r in rows))


def noise(lm, windows, layers, activation, args, rows) -> None:
    """The lab side again with seeds 1..N: each layer's spread (max - min over the seeds, seed
    0 included) of density and nMSE, the run-to-run noise a change must stay within."""
    runs = [rows] + [lab_side(lm, windows, lab_config(layers, activation, args, seed))[0]
                     for seed in range(1, args.noise_seeds + 1)]
    for col in ("density", "nmse"):
        spread = [max(r[col].iloc[i] for r in runs) - min(r[col].iloc[i] for r in runs)
                  for i in range(len(layers))]
        print(f"  run-to-run spread over seeds 0..{args.noise_seeds}, {col}: " + ", ".join(
            f"L{L} {s:.4f}" for L, s in zip(layers, spread)))


def ray_compare(args) -> None:
    """The same sweep in process and as Ray tasks: wall times, Ray's start-up, row differences."""
    from dataclasses import replace

    from lab.models import load_model
    lm = load_model(args.model or "tiny-gpt2", "cpu")
    cfg = laminar.preset("quick", layers=tuple(range(min(args.layers, lm.n_layers))))
    t0 = time.perf_counter()
    here = laminar.run(lm, cfg).rows
    print(f"{lm.name}, quick preset, layers {cfg.layers}, {torch.get_num_threads()} threads")
    print(f"in process:          {time.perf_counter() - t0:6.1f} s")
    import ray
    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    print(f"ray.init (local):    {time.perf_counter() - t0:6.1f} s  ({ray.cluster_resources()['CPU']:g} CPUs)")
    for cpus in (int(c) for c in args.ray_cpus.split(",")):
        for run in ("first", "again"):   # the first run of all also starts the workers
            t0 = time.perf_counter()
            there = laminar.run(lm, replace(cfg, ray="local", ray_cpus=cpus)).rows
            print(f"ray, {cpus} CPU/task, {run}: {time.perf_counter() - t0:6.1f} s  {_diff(here, there)}")
    ray.shutdown()


def _diff(a, b) -> str:
    cols = ["density", "dead_fraction", "mse", "nmse", "val_nmse", "l0"]
    if a[cols].equals(b[cols]):
        return "rows identical"
    rel = ((a[cols] - b[cols]).abs() / a[cols].abs().clip(lower=1e-30)).max().max()
    return f"rows differ: max relative difference {rel:.2g}"


if __name__ == "__main__":
    from report import tee, write_result   # bench/ is on sys.path when run as a script
    with tee() as printed:
        main()
    write_result("laminar_bench_ray" if "--ray" in sys.argv else "laminar_bench", printed)
