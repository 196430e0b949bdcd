"""`warm`: run every page's default settings once and keep the results on disk, so after a
restart the first student who presses Run on the defaults gets the answer at once."""
from __future__ import annotations

import sys
import time

from lab.cache import DiskCache
from lab.cli.experiments import _Printer
from lab.models import DEVICES, SMOLLM2, load_model
from lab.registry import EXPERIMENTS, get
from lab.runner import THREADS_PER_JOB


def register(sub) -> None:
    p = sub.add_parser("warm", help="precompute every page's default run into the disk cache")
    p.add_argument("--model", default=SMOLLM2, help="the model the class will use")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--only", help="comma-separated experiments (default: all)")
    p.set_defaults(func=_warm)


def _warm(args) -> int:
    names = [n.strip() for n in args.only.split(",")] if args.only else [e.name for e in EXPERIMENTS]
    exps = [get(n) for n in names]                 # unknown names fail before the model loads
    lm = load_model(args.model, args.device)
    disk = DiskCache()
    # The server's jobs run at THREADS_PER_JOB torch threads, and a thread count changes the
    # kernels' summation order: over 500 Adam steps seed 1 ends at 236.354 on one thread and
    # 236.951 on two. The disk cache must hold what the server would compute for its key.
    import torch
    torch.set_num_threads(THREADS_PER_JOB)
    for exp in exps:
        key = warm_key(lm, exp)
        if disk.get(key) is not None:
            print(f"{exp.name}: already warm", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        result = exp.run(lm, key[3], _Printer(quiet=False))   # a page's default can take minutes
        disk.put(key, result)
        print(f"{exp.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(disk.folder)
    return 0


def warm_key(lm, exp) -> tuple:
    """The runner's key of a page's untouched defaults on `lm` (see lab.runner)."""
    return (lm.name, str(lm.device), exp.name, exp.config_class())
