"""Circuits on smollm2-135m: the batched residual sweep vs one forward per (layer, position)
patch (same recoveries), plus the names pair's top heads and the induction scores.

    OMP_NUM_THREADS=2 python bench/circuits_bench.py
"""
from __future__ import annotations

import time

import numpy as np
import torch

from lab.circuits import attribution, induction, make_pair, per_patch_resid, sweep
from lab.models import load_model

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def main() -> None:
    lm = load_model("smollm2-135m", "cpu")
    pair = make_pair(lm, CLEAN, CORRUPTED, " Mary", " John")
    print(f"tokens: {len(pair.clean)}")
    t = time.perf_counter()
    s = sweep(lm, pair)
    print(f"full sweep (resid, attn, mlp, heads x2), batched: {time.perf_counter() - t:.1f} s")
    print(f"clean logit diff {s.clean:.3f}, corrupted {s.corrupted:.3f}")
    t = time.perf_counter()
    from lab.circuits.core import cache_run, patched_metrics, position_masks, recovery
    clean, cc = cache_run(lm, pair.clean, pair)
    corr, _ = cache_run(lm, pair.corrupted, pair)
    pm = position_masks(len(pair.clean), lm.d_model, lm.device)
    batched = torch.stack([recovery(patched_metrics(lm, pair, ("resid", l), cc[("resid", l)], pm),
                                    clean, corr) for l in range(lm.n_layers + 1)])
    tb = time.perf_counter() - t
    t = time.perf_counter()
    loop = per_patch_resid(lm, pair)
    tl = time.perf_counter() - t
    print(f"resid sweep: batched {tb:.2f} s, per-patch loop {tl:.2f} s, ratio {tl / tb:.1f}x, "
          f"max |diff| {float((batched - loop).abs().max()):.2e}")
    approx = attribution(lm, pair)
    H = lm.config.num_attention_heads
    exact = {f"L{l}H{h}": float(s.heads[l, h]) for l in range(lm.n_layers) for h in range(H)}
    keys = list(exact)
    top = lambda d: sorted(keys, key=lambda k: -abs(d[k]))[:3]  # noqa: E731
    print("top 3 heads exact:", [(k, round(exact[k], 3)) for k in top(exact)])
    print("top 3 heads attribution:", [(k, round(approx[k], 3)) for k in top(approx)])
    r = np.corrcoef([exact[k] for k in keys], [approx[k] for k in keys])[0, 1]
    print(f"head correlation exact vs attribution: {r:.3f}")
    ind = induction(lm, n=50, seed=0)
    flat = [(float(ind["induction"][l, h]), l, h) for l in range(lm.n_layers) for h in range(H)]
    print("top 3 induction heads:", [(f"L{l}H{h}", round(v, 3), round(float(ind['prev'][l, h]), 3))
                                     for v, l, h in sorted(flat, reverse=True)[:3]])
    loss = ind["loss"]
    print(f"loss first copy {float(loss[:49].mean()):.2f}, second copy {float(loss[49:].mean()):.2f} nats/token")


if __name__ == "__main__":
    main()
