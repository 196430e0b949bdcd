"""Same seed, same numbers as before the contract refactor (issue 9).

Every expected number below was computed with commit 0bedec2 (the pre-change code, where
`ActMaxConfig.layer` was a hidden_states index: 0 = embeddings, L = output of block L-1) on
tiny-gpt2 and smollm2-135m, CPU, one torch thread, by /tmp/am/pin_orig.py. The new code names
the same targets as hook points: old layer 0 = "hook_embed", old layer L = resid_post(L - 1).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lab import hooks
from lab.actmax import ActMaxConfig, maximize
from lab.actmax.repro import ReproConfig
from lab.actmax.repro import run as run_repro

# Float numbers agree to ~1e-6 relative across machines, not bit for bit: on an AVX-512 machine
# (2026-12-03) the pins, made on another CPU, differed by up to 3.6e-5 relative on values near
# 0.06 (2e-6 absolute) and 2e-6 on values near 6, from the kernels' summation order. Token ids
# are compared exactly.
RTOL, ATOL = 1e-4, 1e-6

# name -> (model, config of the new code, old config in words)
CASES = {
    "resid_l2_d5": ("tiny", dict(hook=hooks.resid_post(1), index=5, steps=40, lr=1e-2, restarts=2)),
    "embed_d3": ("tiny", dict(hook=hooks.EMBED, index=3, steps=10, lr=1e-2, restarts=1, seed=3)),
    "last_l3_d63": ("tiny", dict(hook=hooks.resid_post(2), index=63, steps=15, lr=3e-3, l2=0.0,
                                 restarts=2, reduce="last", n_tokens=4, seed=7)),
    "repro_l1_d3": ("tiny", dict(hook=hooks.resid_post(0), index=3, steps=30, lr=1e-2, restarts=4)),
    "smol_actmax_l4_d90": ("smol", dict(hook=hooks.resid_post(3), index=90, steps=20, restarts=1)),
    "smol_repro_l8_d91": ("smol", dict(hook=hooks.resid_post(7), index=91, steps=10, restarts=3)),
}
# old configs: resid_l2_d5 = layer 2 dim 5; embed_d3 = layer 0 dim 3; last_l3_d63 = layer 3
# dim 63; repro_l1_d3 = layer 1 dim 3; smol_actmax = layer 4 dim 90; smol_repro = layer 8 dim 91

# The pinned numbers: tests/golden/pinned.json["actmax"] (tools/regen_golden.py recomputes them
# and prints what changed; a changed number there fails this file).
PINNED = json.loads((Path(__file__).parent / "golden" / "pinned.json").read_text())["actmax"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # the pinned numbers were computed with one thread
    yield
    torch.set_num_threads(n)


def _close(got, want, what):
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float),
                               rtol=RTOL, atol=ATOL, err_msg=what)


def _check_actmax(res, want):
    per = res.per_restart()
    for key in ("initial", "final", "moved"):
        _close(per[key], want[key], key)
    _close(res.gap.snapped, want["snapped"], "snapped")
    assert res.gap.snapped_ids.tolist() == want["top1"]
    _close(res.best_cosine, want["best_cosine"], "best_cosine")
    h = res.history
    _close(h[h.step == 5].target, want["target_step5"], "target at step 5")
    _close(h[h.step == h.step.max()].loss, want["loss_last"], "final loss")
    gap = res.gap.summary()
    for key, value in want["gap"].items():
        _close(gap[key], value, key)


def _check_repro(rep, want):
    _check_actmax(rep.maximized, want)
    assert (rep.optimized.n_unique, rep.null.n_unique) == (want["unique"], want["null_unique"])
    assert rep.same_as_start == want["same_as_start"]
    for key, got in (("mean_jaccard", rep.optimized.mean_jaccard),
                     ("null_mean_jaccard", rep.null.mean_jaccard),
                     ("mean_cosine", rep.optimized.mean_cosine),
                     ("null_mean_cosine", rep.null.mean_cosine),
                     ("mean_step_cosine", rep.mean_step_cosine)):
        _close(got, want[key], key)
    assert rep.optimized.frequencies.token_id.tolist()[:5] == want["freq_ids"]
    assert rep.optimized.frequencies["count"].tolist()[:5] == want["freq_counts"]


def _run(name, lm):
    cfg = ActMaxConfig(**CASES[name][1])
    if "repro" in name:
        _check_repro(run_repro(lm, ReproConfig(actmax=cfg, seed=cfg.seed)), PINNED[name])
    else:
        _check_actmax(maximize(lm, cfg), PINNED[name])


@pytest.mark.parametrize("name", [n for n, (m, _) in CASES.items() if m == "tiny"])
def test_tiny_gpt2_numbers_unchanged(tiny, name):
    _run(name, tiny)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, (m, _) in CASES.items() if m == "smol"])
def test_smollm2_numbers_unchanged(smol, name):
    _run(name, smol)


# ---- what tools/regen_golden.py records: the quantities _check_actmax/_check_repro compare
GAP_KEYS = ("snapped_mean", "random_mean", "random_std", "random_max")


def _floats(x) -> list[float]:
    return np.asarray(x, dtype=float).tolist()


def measure_actmax(res) -> dict:
    per, h, gap = res.per_restart(), res.history, res.gap.summary()
    return {**{k: _floats(per[k]) for k in ("initial", "final", "moved")},
            "snapped": _floats(res.gap.snapped), "top1": res.gap.snapped_ids.tolist(),
            "best_cosine": _floats(res.best_cosine), "target_step5": _floats(h[h.step == 5].target),
            "loss_last": _floats(h[h.step == h.step.max()].loss),
            "gap": {k: float(gap[k]) for k in GAP_KEYS}}


def measure_repro(rep) -> dict:
    return {**measure_actmax(rep.maximized), "unique": rep.optimized.n_unique,
            "null_unique": rep.null.n_unique, "mean_jaccard": float(rep.optimized.mean_jaccard),
            "null_mean_jaccard": float(rep.null.mean_jaccard),
            "mean_cosine": float(rep.optimized.mean_cosine),
            "null_mean_cosine": float(rep.null.mean_cosine), "same_as_start": rep.same_as_start,
            "mean_step_cosine": float(rep.mean_step_cosine),
            "freq_ids": rep.optimized.frequencies.token_id.tolist()[:5],
            "freq_counts": rep.optimized.frequencies["count"].tolist()[:5]}


def measure(name, lm) -> dict:
    """The pinned numbers of case `name`, computed as _run does."""
    cfg = ActMaxConfig(**CASES[name][1])
    if "repro" in name:
        return measure_repro(run_repro(lm, ReproConfig(actmax=cfg, seed=cfg.seed)))
    return measure_actmax(maximize(lm, cfg))
