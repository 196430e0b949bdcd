"""How to split 2 cores between jobs: the runner with 1 worker x 2 torch threads against 2
workers x 1 thread, on N activation-maximization jobs with different seeds (no dedup), in one
process, side by side. Prints each arm's wall time to finish all jobs and the ratio.

    python bench/runner_split.py --jobs 4 --model smollm2-135m

Results: each run writes what it printed to bench/results/runner_split.md, headed by machine,
date and commit.
"""
from __future__ import annotations

import argparse
import time

from lab.actmax import ActMaxConfig
from lab.models import load_model
from lab.runner import Runner


def arm(lm, workers: int, threads: int, seeds, steps: int) -> float:
    runner = Runner(load=lambda m, d: lm, workers=workers, threads_per_job=threads)
    t0 = time.perf_counter()
    handles = [runner.submit(lm.name, "cpu", ActMaxConfig(seed=s, steps=steps), f"s{s}") for s in seeds]
    for h in handles:
        h.wait()
        assert h.status == "done", h.error
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=2, help="alternate the arms this many times")
    args = ap.parse_args()
    lm = load_model(args.model, "cpu")
    times = {"1 worker x 2 threads": [], "2 workers x 1 thread": []}
    for r in range(args.rounds):
        seeds = range(100 * r, 100 * r + args.jobs)       # fresh keys: nothing cached
        times["1 worker x 2 threads"].append(arm(lm, 1, 2, seeds, args.steps))
        seeds = range(100 * r + 50, 100 * r + 50 + args.jobs)
        times["2 workers x 1 thread"].append(arm(lm, 2, 1, seeds, args.steps))
    for name, t in times.items():
        print(f"{name}: {min(t):.1f} s for {args.jobs} jobs (runs: {', '.join(f'{x:.1f}' for x in t)})")
    a, b = (min(t) for t in times.values())
    print(f"ratio (1x2 / 2x1): {a / b:.2f}")


if __name__ == "__main__":
    from report import tee, write_result   # bench/ is on sys.path when run as a script
    with tee() as printed:
        main()
    write_result("runner_split", printed)
