"""Time the reproducibility experiment through `lab` against a seed-style loop, and the FLOP floor.

The experiment: 10 restarts x 500 Adam steps, 5 input tokens, maximize dim 91 of
blocks.7.hook_resid_post (= hidden_states[8]; mean over positions), on the GPT-2-small architecture (GPT2Config() defaults, random weights:
timing does not depend on the weights).

- lab: `lab.actmax.run`: restarts as one batch [10, 5, 768], the forward stops after
  block 7, no LM head, weights frozen; includes decoding and the gap meter.
- seed-style: the seeds' loop: restarts one after another, the full CausalLM forward with
  `output_hidden_states=True` (all 12 blocks and the 768 x 50257 LM head), then
  `hidden_states[8]` (block 7's output). Weights frozen here too (not freezing them costs ~1.8x more: we compare
  against the faster variant).
- FLOP floor: the matmul FLOPs that cannot be avoided (forward through 8 blocks for 50 tokens,
  plus the input-gradient half of the backward: no weight gradients are needed) at the
  matmul rate measured here on a large matmul.

    python bench/actmax_bench.py                        # everything in full (~15 min on 2 idle cores)
    python bench/actmax_bench.py --baseline-steps 50    # seed-style timed on 50 steps/restart, x10 extrapolated
    python bench/actmax_bench.py --threads 1            # on a busy machine one thread avoids OpenMP spin-waits
    python bench/actmax_bench.py --case discrete        # the discrete method on smollm2-135m (below)
    python bench/actmax_bench.py --case defaults --threads 2   # every method's default (below)

The defaults case (issue 30): each method's default run on smollm2-135m (the config with no
field set but the method and corpus_top 0) timed by `lab.actmax.run`, and the same settings
run by the code before issue 30 (git commit 6453826's lab/actmax, loaded into a temporary
package `before_actmax`): seconds, the ratio, and whether both found the same prompts (ids
equal, activations within 1e-4). Arms: "same" gives the old code every setting of the new
default with bf16_rank 0 on both sides (the float32 step against the float32 step); "default"
runs the new default as a class gets it (bf16_rank on where this CPU has AMX or AVX512-BF16)
against the old code at bf16_rank 0. Then the lens and hidden-states pages' defaults, and the
corpus bar, timed. The table is written to bench/results/actmax_defaults_<date>.md with the
machine, date and commit; `--reps N` repeats every pair (arms interleaved, medians kept).

The discrete case (smollm2-135m, real weights; blocks.7.hook_resid_post dim 91, 5 tokens):
one step's candidates (a random prompt with one position swapped each, made by the search's
own `swap_candidates`) scored three ways: a per-candidate loop at equal settings
(`lab.actmax.evaluate` on one prompt at a time: the same forward, hook and numbers); all of
them in one batched forward that stops after block 7 (`evaluate`); and the search's step,
batched with each candidate's unchanged prefix taken from the prompt's key/value cache
(`evaluate_swaps`); and the search's step with bf16_rank (lab.actmax.discrete.score). The
same with the fluency term (the full body and the LM head), a naive
loop (HF's full model with output_hidden_states per candidate), and seconds per step of
`lab.actmax.run` with method discrete, without and with a fluency weight.

Results: bench/results/ (the dated runs of 2026-11-23 and 2026-12-03 are in
bench/results/actmax_bench_history.md).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import hooks  # noqa: E402
from lab.actmax import ActMaxConfig, optimize, run  # noqa: E402
from lab.hooks import hook_kind, hook_layer  # noqa: E402
from lab.arch import GPT2  # noqa: E402
from lab.models import LabModel  # noqa: E402


def build_gpt2_small(seed: int = 0) -> LabModel:
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config()).eval().requires_grad_(False)
    return LabModel(name="gpt2-small-random", model=model, tokenizer=None, arch=GPT2,
                    device=torch.device("cpu"), load_seconds=0.0, source="random weights")


class Clock:
    """Wall and process-CPU seconds of a block. On a shared machine the wall clock also
    counts other people's work; with one thread the CPU time does not (so compare both)."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def hidden_states_index(hook: str) -> int:
    """hook_embed = hidden_states[0]; blocks.L.hook_resid_post = hidden_states[L + 1]."""
    if hook_kind(hook) not in ("embed", "resid_post"):
        raise ValueError(f"the seed-style loop reads hidden_states: use a residual hook, got {hook!r}")
    return hook_layer(hook) + 1


def seed_style(model, cfg: ActMaxConfig, steps: int, std: float) -> None:
    """The seeds' loop, restarts one after another."""
    layer = hidden_states_index(cfg.hook)
    for r in range(cfg.restarts):
        g = torch.Generator().manual_seed(r)
        x = (torch.randn(1, cfg.n_tokens, model.config.n_embd, generator=g) * std).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr)
        for _ in range(steps):
            opt.zero_grad()
            out = model(inputs_embeds=x, output_hidden_states=True)
            a = out.hidden_states[layer][0, :, cfg.index].mean()
            loss = -a + cfg.l2 * (x ** 2).sum()
            loss.backward()
            opt.step()


def matmul_rate(m: int, k: int, n: int, seconds: float = 2.0) -> tuple[float, float]:
    """Measured fp32 GFLOP/s of [m, k] @ [k, n]: per wall second and per CPU second."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    reps = 0
    with Clock() as c:
        while time.perf_counter() - c.w0 < seconds:
            a @ b
            reps += 1
    flops = 2 * m * k * n * reps / 1e9
    return flops / c.wall, flops / c.cpu


def floor_flops_per_step(cfg: ActMaxConfig, d: int, n_blocks: int) -> float:
    """Unavoidable FLOPs of one step: forward + input-gradient backward through `n_blocks`.

    Per block and token the matmuls are QKV 3d^2, output d^2, MLP 8d^2 multiply-adds
    (24 d^2 FLOPs); attention scores and mixing add 4 T d per token. The backward needs
    only dX = dY W^T (same FLOPs as the forward), not dW; attention backward ~2x forward.
    """
    tokens = cfg.restarts * cfg.n_tokens
    fwd = n_blocks * (24 * d * d * tokens + 4 * cfg.n_tokens * d * tokens)
    bwd = n_blocks * (24 * d * d * tokens + 8 * cfg.n_tokens * d * tokens)
    return float(fwd + bwd)


def per_step_breakdown(lm: LabModel, seed_model, cfg: ActMaxConfig, steps: int, std: float) -> None:
    """ms per optimization step of one restart, to show where the speed-up comes from."""
    one = replace(cfg, steps=steps, restarts=1)
    batch = replace(cfg, steps=steps)
    with Clock() as c:
        seed_style(seed_model, one, steps, std)
    t = c.wall / steps
    with Clock() as c:
        optimize(lm, one)
    s = c.wall / (steps + 1)
    with Clock() as c:
        optimize(lm, batch)
    b = c.wall / (steps + 1) / cfg.restarts
    print(f"  wall ms per restart-step ({steps} steps each): seed-style {t * 1e3:.1f} | "
          f"stop after {cfg.hook}, 1 restart {s * 1e3:.1f} ({t / s:.1f}x) | "
          f"batch of {cfg.restarts} {b * 1e3:.1f} ({t / b:.1f}x)")


def best_of(reps: int, fn) -> tuple[float, object]:
    """The fastest of `reps` wall-clock runs of fn() (a shared machine only ever adds time)."""
    times, out = [], None
    for _ in range(reps):
        with Clock() as c:
            out = fn()
        times.append(c.wall)
    return min(times), out


def naive_loop(model, hook: str, index: int, cands: torch.Tensor) -> torch.Tensor:
    """What a first implementation does: HF's whole model, output_hidden_states, per candidate."""
    layer = hidden_states_index(hook)
    with torch.no_grad():
        return torch.stack([model(input_ids=c[None], output_hidden_states=True)
                            .hidden_states[layer][0, :, index].mean() for c in cands])


def discrete_case(args) -> None:
    from lab.actmax import evaluate, target_of
    from lab.actmax.discrete import objective, score, swap_candidates
    from lab.actmax.target import allowed_tokens, evaluate_swaps, random_ids
    from lab.models import load_model
    lm = load_model(args.model, "cpu")
    cfg = ActMaxConfig(hook=args.hook, index=args.index, method="discrete", corpus_top=0,
                       candidates=args.candidates, steps=args.discrete_steps)
    goal = target_of(lm, cfg)
    # one step's candidates, as the search makes them: one position of a prompt swapped each
    prompt = random_ids(lm, 0, 1, cfg.n_tokens, stream=9)
    grad = torch.randn(1, cfg.n_tokens, lm.vocab_size, generator=torch.Generator().manual_seed(0))
    swaps = swap_candidates(prompt, grad, allowed_tokens(lm), cfg.top_k, cfg.candidates,
                            [torch.Generator().manual_seed(1)])            # [1, n, T]
    cands = swaps[0]
    print(f"{lm.name}, torch {torch.__version__}, {torch.get_num_threads()} threads; {cfg.hook} "
          f"{cfg.target}; {cfg.candidates} one-swap candidates of {cfg.n_tokens} tokens")
    evaluate(lm, goal, cands[:4], fluent=True)                       # warm-up
    for fluent in (False, True):
        loop_s, alone = best_of(args.reps, lambda: [evaluate(lm, goal, c[None], fluent) for c in cands])
        batched_s, batched = best_of(args.reps, lambda: evaluate(lm, goal, cands, fluent))
        shared_s, shared = best_of(args.reps, lambda: evaluate_swaps(lm, goal, prompt, swaps, fluent))
        ref = (torch.cat([a.target for a in alone]), torch.cat([a.ce for a in alone]))
        diff = max(float(torch.nan_to_num(got - want).abs().max())
                   for s_ in (batched, shared) for got, want in zip((s_.target, s_.ce), ref))
        lam = torch.full((1,), 0.5 if fluent else 0.0)
        ranked_s, ranked = best_of(args.reps, lambda: score(lm, goal, prompt, swaps, fluent, lam,
                                                            keep=RANK_KEEP))
        picked = int(objective(ranked, lam.expand(len(cands))).argmax())
        exact_best = int(objective(alone_scores(alone), lam.expand(len(cands))).argmax())
        what = "activation + cross-entropy (full body, LM head)" if fluent else \
            f"activation (forward stops after block {hook_layer(cfg.hook)})"
        print(f"  {what}: per-candidate loop {loop_s:.3f} s; batched {batched_s:.3f} s "
              f"({loop_s / batched_s:.1f}x); batched with shared prefixes (the search's step) "
              f"{shared_s:.3f} s ({loop_s / shared_s:.1f}x); max |difference| {diff:.1e}; "
              f"bf16_rank {RANK_KEEP} (bfloat16 batch, best {RANK_KEEP} again in float32) "
              f"{ranked_s:.3f} s ({loop_s / ranked_s:.1f}x), picks the float32 best: "
              f"{picked == exact_best}")
    model = copy.deepcopy(lm.model)      # output_hidden_states leaves HF's hooks on a model
    naive_s, naive = best_of(1, lambda: naive_loop(model, cfg.hook, cfg.index, cands))
    shared_s, shared = best_of(args.reps, lambda: evaluate_swaps(lm, goal, prompt, swaps))
    print(f"  naive loop (full model, output_hidden_states, per candidate) {naive_s:.3f} s: "
          f"the search's step is {naive_s / shared_s:.1f}x faster (max |difference| "
          f"{float((naive - shared.target).abs().max()):.1e})")
    for lam in (0.0, 0.5):
        for rank in (0, RANK_KEEP):
            res = run(lm, replace(cfg, lam=lam, bf16_rank=rank))
            per_step = res.seconds / (res.steps_done + 1)
            print(f"  lab.actmax.run discrete, lam {lam:g}, bf16_rank {rank}, {cfg.steps} steps: "
                  f"{per_step:.3f} s per step (activation {res.prompts.activation[0]:.3f}, "
                  f"ce {res.prompts.ce[0]:.2f})")


RANK_KEEP = 8   # bf16_rank of the bench's ranked arm


def alone_scores(alone):
    """The per-candidate loop's Scores, as one Scores of [n]."""
    from lab.actmax.target import Scores
    return Scores(*(torch.cat(col) for col in zip(*alone)))


BEFORE = "6453826"     # the commit before issue 30


def before_actmax():
    """lab/actmax as of commit BEFORE, importable as `before_actmax` (its own modules)."""
    import importlib
    import subprocess
    import tempfile
    root = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp()) / "before_actmax"
    folder.mkdir()
    names = subprocess.run(["git", "ls-tree", "--name-only", BEFORE, "lab/actmax/"], cwd=root,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        text = subprocess.run(["git", "show", f"{BEFORE}:{name}"], cwd=root, check=True,
                              capture_output=True, text=True).stdout
        (folder / Path(name).name).write_text(text.replace("lab.actmax", "before_actmax"))
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module("before_actmax")


def _machine() -> str:
    import platform
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def defaults_case(args) -> None:
    import datetime
    import statistics
    import subprocess
    from lab.actmax.config import method_defaults
    from lab.hidden import HiddenConfig
    from lab.hidden import run as hidden_run
    from lab.lens import LensConfig
    from lab.lens import run as lens_run
    from lab.models import load_model
    old = before_actmax()
    lm = load_model(args.model, "cpu")
    rows = []
    for method in ("continuous", "discrete"):           # warm-up: allocators, the token lists
        run(lm, ActMaxConfig(method=method, steps=2, corpus_top=0, bf16_rank=0))
        old.run(lm, old.ActMaxConfig(method=method, steps=2, corpus_top=0))
    for method in args.methods.split(","):
        d = method_defaults(method)
        new_default = ActMaxConfig(method=method, corpus_top=0)
        explicit = dict(method=method, corpus_top=0, steps=new_default.steps,
                        candidates=d["candidates"], top_k=d["top_k"], epo_lams=d["epo_lams"])
        arms = {"same": (replace(new_default, bf16_rank=0), old.ActMaxConfig(**explicit, bf16_rank=0))}
        if new_default.bf16_rank:
            arms["default"] = (new_default, arms["same"][1])
        for arm, (cfg_new, cfg_old) in arms.items():
            t_new, t_old = [], []
            for _ in range(args.reps):                       # interleaved: the same noise
                with Clock() as c:
                    a = run(lm, cfg_new)
                t_new.append(c.wall)
                with Clock() as c:
                    b = old.run(lm, cfg_old)
                t_old.append(c.wall)
            same = (a.prompts is None or (np.array_equal(a.prompts.ids, b.prompts.ids) and
                    np.allclose(a.prompts.activation, b.prompts.activation, atol=1e-4)))
            if a.prompts is None:
                same = bool(np.allclose(a.final, b.final, atol=1e-4))
            best = (float(a.prompts.activation.max()) if a.prompts is not None
                    else float(a.gap.snapped.max()))
            n, o = statistics.median(t_new), statistics.median(t_old)
            rows.append((method, arm, cfg_new.steps, cfg_new.bf16_rank, n, o, o / n, same, best))
            print(f"{method:10s} {arm:8s} steps {cfg_new.steps:4d} bf16_rank {cfg_new.bf16_rank}: "
                  f"new {n:6.1f} s, before {o:6.1f} s, {o / n:5.2f}x, same prompts {same}, "
                  f"best {'prompt' if a.prompts is not None else 'nearest tokens'} {best:.3f}",
                  flush=True)
    pages = []
    for name, fn, cfg in (("hidden", hidden_run, HiddenConfig()), ("lens", lens_run, LensConfig())):
        with Clock() as c:
            fn(lm, cfg)
        pages.append((name, c.wall))
        print(f"{name} page default: {c.wall:.2f} s", flush=True)
    cfg = ActMaxConfig(corpus_top=5, steps=1)
    from lab.actmax.bar import corpus_bar
    from lab.actmax.target import target_of
    with Clock() as c:
        bar = corpus_bar(lm, cfg, target_of(lm, cfg))
    print(f"corpus bar ({cfg.hook}, {cfg.target}): {c.wall:.1f} s, best window {bar.top:.3f}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = Path(__file__).resolve().parent / "results" / f"actmax_defaults_{now[:10]}.md"
    out.parent.mkdir(exist_ok=True)
    lines = [f"# actmax defaults vs {BEFORE} ({args.model})", "",
             f"machine: {_machine()}; date: {now}; commit: {commit}; reps {args.reps} (medians); "
             f"load average at the end {open('/proc/loadavg').read().split()[0]}", "",
             "| method | arm | steps | bf16_rank | new s | before s | ratio | same prompts | best |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {m} | {a} | {s} | {r} | {n:.1f} | {o:.1f} | {x:.2f}x | {same} | {b:.3f} |"
              for m, a, s, r, n, o, x, same, b in rows]
    lines += ["", *[f"- {n} page default: {t:.2f} s" for n, t in pages],
              f"- corpus bar ({cfg.hook}, {cfg.target}): {c.wall:.1f} s, best window {bar.top:.3f}"]
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n\n")
    print(f"written to {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("continuous", "discrete", "defaults"), default="continuous")
    ap.add_argument("--methods", default="continuous,pez,discrete,epo", help="the defaults case's")
    ap.add_argument("--model", default="smollm2-135m", help="the discrete case's model")
    ap.add_argument("--candidates", type=int, default=128, help="the discrete case's batch")
    ap.add_argument("--discrete-steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (the fastest counts)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--hook", default=hooks.resid_post(7), help="a residual hook point")
    ap.add_argument("--index", type=int, default=91)
    ap.add_argument("--baseline-steps", type=int, default=None,
                    help="time the seed-style loop on this many steps per restart and extrapolate")
    ap.add_argument("--breakdown-steps", type=int, default=20, help="0 to skip the breakdown")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case == "discrete":
        discrete_case(args)
        return 0
    if args.case == "defaults":
        defaults_case(args)
        return 0
    cfg = ActMaxConfig(hook=args.hook, index=args.index, steps=args.steps, restarts=args.restarts,
                       corpus_top=0)
    lm = build_gpt2_small()
    # A separate copy for the seed-style loop: output_hidden_states leaves HF's recorder hooks
    # on a model, which would then tax the lab runs too.
    seed_model = copy.deepcopy(lm.model)
    std = lm.W_E.std().item()
    d, blocks = lm.d_model, hidden_states_index(cfg.hook)   # hidden_states[L]: L blocks run
    print(f"GPT-2 small architecture (random weights), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"experiment: {cfg.restarts} restarts x {cfg.steps} steps, {cfg.n_tokens} tokens, "
          f"{cfg.hook}, {cfg.target}, lr {cfg.lr:g}, l2 {cfg.l2:g}")

    run(lm, replace(cfg, steps=2))  # warm-up
    if args.breakdown_steps:
        per_step_breakdown(lm, seed_model, cfg, args.breakdown_steps, std)

    with Clock() as lab:
        res = run(lm, cfg)
    lab_s = lab.wall
    print(f"lab:        {lab.wall:8.1f} s wall, {lab.cpu:8.1f} s CPU  (optimization loop "
          f"{res.seconds:.1f} s = {res.seconds / (cfg.steps + 1) * 1e3:.0f} ms/step for all "
          f"{cfg.restarts} restarts; decoding + gap meter {lab.wall - res.seconds:.1f} s)")

    b_steps = args.baseline_steps or cfg.steps
    scale = cfg.steps / b_steps
    with Clock() as base:
        seed_style(seed_model, cfg, b_steps, std)
    seed_s, seed_cpu = base.wall * scale, base.cpu * scale
    how = "measured" if b_steps == cfg.steps else f"timed on {b_steps} steps/restart, x{scale:g}"
    print(f"seed-style: {seed_s:8.1f} s wall, {seed_cpu:8.1f} s CPU  ({how}; "
          f"{seed_s / cfg.restarts / cfg.steps * 1e3:.0f} ms per restart-step)")
    print(f"speed-up:   {seed_s / lab.wall:8.1f}x wall, {seed_cpu / lab.cpu:.1f}x CPU time  "
          f"(target >= 6x)")

    (peak, peak_cpu), (shaped, _) = matmul_rate(2048, 768, 3072), \
        matmul_rate(cfg.restarts * cfg.n_tokens, 768, 3072)
    flops = floor_flops_per_step(cfg, d, blocks) * cfg.steps
    floor_s, floor_cpu = flops / (peak * 1e9), flops / (peak_cpu * 1e9)
    print(f"matmul rate: {peak:.0f} GFLOP/s wall ({peak_cpu:.0f} per CPU second) on 2048x768x3072; "
          f"{shaped:.0f} GFLOP/s at the experiment's shape {cfg.restarts * cfg.n_tokens}x768x3072")
    print(f"FLOP floor: {flops / 1e12:.2f} TFLOP (forward + input gradients, {blocks} blocks) -> "
          f"{floor_s:.1f} s wall / {floor_cpu:.1f} s CPU at the large-matmul rate. lab: "
          f"{lab_s / floor_s:.1f}x the floor (wall), {lab.cpu / floor_cpu:.1f}x (CPU); seed-style: "
          f"{seed_s / floor_s:.1f}x (wall), {seed_cpu / floor_cpu:.1f}x (CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
