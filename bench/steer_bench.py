"""Steering generation speed: the lab's loop (lab.steer.generate: KV cache, the thread-aware
steering hook of lab.steer.hook) against `model.generate` (HF's own KV cache and decoding)
with the same vector added by a forward hook registered by hand on the same module.

Both arms: one prompt, greedy, exactly N new tokens (HF: min_new_tokens = max_new_tokens),
the contrast vector " Love" - " Hate" at the default hook times alpha, batch 1. The arms
alternate round by round in one process, so a neighbour's load hits both; each arm's
tokens per second is its median over the rounds (new tokens / wall seconds, the prompt's
prefill included). The two arms' tokens are compared too (they should be the same text).

Writes bench/results/steer_bench.md (machine, date, commit, threads, the per-round table)
and prints the ratio lab / HF.

    .venv/bin/python bench/steer_bench.py                       # smollm2-135m, 64 tokens, 1 thread
    .venv/bin/python bench/steer_bench.py --rounds 7 --threads 2 --model tiny-gpt2
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import torch

from report import commit, cpu_model
from lab.models import load_model
from lab.steer import SteerConfig, build_vector, generate, prompt_ids

ROOT = Path(__file__).resolve().parents[1]


def hand_hook(lm, layer: int, delta: torch.Tensor):
    """The same push, written by hand: add delta to block `layer`'s output (resid_post)."""
    block = lm.arch.blocks_of(lm.model)[layer]

    def add(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta
    return block.register_forward_hook(add)


def lab_arm(lm, ids, n, hook, delta) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    rows = generate(lm, ids, n, hook, delta[None])
    return time.perf_counter() - t0, rows[0].tokens


@torch.no_grad()
def hf_arm(lm, ids, n, layer, delta) -> tuple[float, list[int]]:
    handle = hand_hook(lm, layer, delta)
    try:
        t0 = time.perf_counter()
        out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                dtype=torch.long), max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
        seconds = time.perf_counter() - t0
    finally:
        handle.remove()
    return seconds, out[0, len(ids):].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "steer_bench.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model, "cpu")
    cfg = SteerConfig(alpha=args.alpha, max_new_tokens=args.tokens)
    ids = prompt_ids(lm, cfg)
    vec = build_vector(lm, cfg, ids)
    layer = int(vec.hook.split(".")[1])
    delta = args.alpha * vec.steer
    lab_arm(lm, ids, 4, vec.hook, delta)          # warm-up: first-call allocations, both arms
    hf_arm(lm, ids, 4, layer, delta)
    rows, same = [], True
    for r in range(args.rounds):
        order = [("lab", lab_arm, vec.hook), ("hf", hf_arm, layer)]
        if r % 2:
            order.reverse()
        got = {}
        for name, fn, where in order:
            seconds, toks = fn(lm, ids, args.tokens, where, delta)
            got[name] = (args.tokens / seconds, toks)
        same &= got["lab"][1] == got["hf"][1]
        rows.append((r + 1, got["lab"][0], got["hf"][0]))
    lab_tps = statistics.median(x[1] for x in rows)
    hf_tps = statistics.median(x[2] for x in rows)
    ratio = lab_tps / hf_tps
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"# steer_bench: {args.model}, {args.tokens} new tokens, greedy, hook {vec.hook}, "
             f"alpha {args.alpha:g}",
             "", f"- machine: {cpu_model()}, {os.cpu_count()} cores, torch threads {args.threads}",
             f"- date: {stamp}", f"- commit: {commit()}", f"- torch {torch.__version__}",
             f"- same tokens in both arms: {same}", "",
             "| round | lab tokens/s | model.generate tokens/s | ratio |", "|---|---|---|---|"]
    lines += [f"| {r} | {a:.1f} | {b:.1f} | {a / b:.2f} |" for r, a, b in rows]
    lines += [f"| median | {lab_tps:.1f} | {hf_tps:.1f} | {ratio:.2f} |", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"ratio lab / model.generate: {ratio:.2f}x (written to {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
