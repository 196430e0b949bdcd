"""Recompute the pinned numbers of tests/test_pinned_*.py and rewrite tests/golden/pinned.json.

    python tools/regen_golden.py                  # all four tests, both models (~3 minutes)
    python tools/regen_golden.py --only laminar   # one test (actmax, hidden, laminar, sae)
    python tools/regen_golden.py --dry-run        # print what would change, write nothing

Each test file's `measure` functions are the computations its tests compare (same configs,
same seeds as tests/conftest.py's autouse fixture, one torch thread as the pins were taken);
this script only runs them. It prints every number that changed (old -> new) before writing.
Regenerate only when a change of the numbers is intended, and say why in the commit.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "pinned.json"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def seeded(fn, *args):
    torch.manual_seed(0)      # as tests/conftest.py's _seed does before each test
    np.random.seed(0)
    return fn(*args)


def actmax(models, old):
    t = importlib.import_module("test_pinned_actmax")
    return {name: seeded(t.measure, name, models[m]) for name, (m, _) in t.CASES.items()}


def hidden(models, old):
    t = importlib.import_module("test_pinned_hidden")
    from lab.registry import get
    out = {}
    for key, want in old.items():       # keys "model/case"; the states are chosen, kept as they are
        model, case = key.split("/")
        lm = models["tiny" if model == "tiny-gpt2" else "smol"]
        out[key] = t.measure(seeded(get("hidden").run, lm, t.CASES[case]), want["states"])
    return out


def laminar(models, old):
    t = importlib.import_module("test_pinned_laminar")
    tiny, smol = seeded(t.measure, models["tiny"]), seeded(t.measure, models["smol"])
    return {"TINY_RELU": tiny["TINY_RELU"], "TINY_TOPK": tiny["TINY_TOPK"],
            "QUICK_SMALL": tiny["QUICK_SMALL"], "SMOL_TINY": smol["SMOL_TINY"],
            "FLOPS": {models["tiny"].name: tiny["FLOPS"], models["smol"].name: smol["FLOPS"]}}


def sae(models, old):
    t = importlib.import_module("test_pinned_sae")
    return {name: seeded(t.measure, models["tiny" if m == "tiny-gpt2" else "smol"], name)
            for name, (m, _) in t.CASES.items()}


TESTS = {"actmax": actmax, "hidden": hidden, "laminar": laminar, "sae": sae}


def changes(old, new, where=""):
    """'where: old -> new' for every leaf that differs (added and removed keys too)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in dict.fromkeys([*old, *new])
                for c in changes(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{where}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in changes(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where.lstrip('.')}: {old!r} -> {new!r}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(TESTS), help="comma-separated: " + ", ".join(TESTS))
    ap.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    args = ap.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    if bad := [n for n in only if n not in TESTS]:
        print(f"unknown test {bad[0]!r}: choose from {', '.join(TESTS)}", file=sys.stderr)
        return 2
    from lab.models import load_model
    torch.set_num_threads(1)   # the pins were taken on one thread
    models = {"tiny": load_model("tiny-gpt2", "cpu"), "smol": load_model("smollm2-135m", "cpu")}
    golden = json.loads(GOLDEN.read_text())
    # a JSON round trip so tuples read as lists, as the tests see them
    new = {**golden, **{n: json.loads(json.dumps(TESTS[n](models, golden[n]))) for n in only}}
    diff = changes(golden, new)
    print("\n".join(diff) if diff else "no number changed")
    if diff and not args.dry_run:
        GOLDEN.write_text(json.dumps(new, indent=1) + "\n")
        print(f"{len(diff)} changes written to {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
