"""Same seed -> the same numbers as before the contract refactor.

Every number here was computed with commit 0bedec2 (the pre-change lab/laminar.py, run from a
worktree of that commit on tiny-gpt2 and smollm2-135m, CPU): `laminar.sweep(lm, ids, cfg)` over
the bundled LED text, with the old flat config fields (epochs, activation, k) now under
`cfg.sae`. The old `preset("seed")` is `preset("full")`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lab import corpus, laminar

RTOL = 1e-6
COLS = ("density", "dead_fraction", "mse", "nmse", "val_nmse", "l0")

# The pinned numbers: tests/golden/pinned.json["laminar"] (tools/regen_golden.py recomputes them
# and prints what changed; a changed number there fails this file).
GOLDEN = json.loads((Path(__file__).parent / "golden" / "pinned.json").read_text())["laminar"]
TINY_RELU = GOLDEN["TINY_RELU"]   # preset("tiny"): 2 x 16 tokens, ReLU + L1, 2x latents, 2 epochs, seed 0
TINY_TOPK = GOLDEN["TINY_TOPK"]   # preset("tiny", activation="topk", k=8, seed=3, layers=(0, 2))
QUICK_SMALL = GOLDEN["QUICK_SMALL"]   # preset("quick", n_windows=3, window_len=24, epochs=3, seed=1)
SMOL_TINY = GOLDEN["SMOL_TINY"]   # smollm2-135m, preset("tiny", layers=(0, 15, 29), window_len=32)
# Estimate(...).capture_gflop, .layer_gflop per old preset name on each model
FLOPS = GOLDEN["FLOPS"]


def _assert_rows(rows, expected, layers, n_tokens):
    assert rows["layer"].tolist() == layers and rows["n_tokens"].tolist() == [n_tokens] * len(layers)
    for col in COLS:
        assert rows[col].tolist() == pytest.approx(expected[col], rel=RTOL, abs=1e-12), col


def test_tiny_relu_through_run(tiny):
    result = laminar.run(tiny, laminar.preset("tiny"))
    _assert_rows(result.rows, TINY_RELU, [0, 1, 2], 30)
    assert result.corpus["source"] == "bundled" and result.corpus["tokens"] == 29628


def test_tiny_topk_other_seed_and_layers(tiny):
    ids = corpus.tokenize(tiny.tokenizer, corpus.bundled_article().text)
    cfg = laminar.preset("tiny", seed=3, layers=(0, 2), **{"sae.activation": "topk", "sae.k": 8})
    _assert_rows(laminar.sweep(tiny, ids, cfg), TINY_TOPK, [0, 2], 30)


def test_quick_preset_small(tiny):
    cfg = laminar.preset("quick", n_windows=3, window_len=24, seed=1, **{"sae.epochs": 3})
    rows = laminar.run(tiny, cfg).rows
    _assert_rows(rows, QUICK_SMALL, [0, 1, 2], 69)
    assert rows["n_latents"].tolist() == [128] * 3


def test_windows_are_placed_as_before(tiny):
    ids = corpus.tokenize(tiny.tokenizer, corpus.bundled_article().text)
    assert corpus.sample_windows(ids, 2, 16, 0).tolist() == [
        [379, 273, 65, 86, 427, 266, 71, 310, 12, 273, 73, 310, 257, 365, 69, 65],
        [325, 89, 12, 304, 328, 79, 85, 433, 84, 221, 266, 263, 77, 79, 85, 83]]
    assert torch.equal(laminar.corpus_windows(ids, laminar.preset("tiny"))[1],
                       corpus.sample_windows(ids, 2, 16, 0))


def _flops(lm):
    for name, (capture, layer) in FLOPS[lm.name].items():
        est = laminar.estimate(lm, laminar.preset(name), (1.0, 1.0))
        assert (est.capture_gflop, est.layer_gflop) == pytest.approx((capture, layer), rel=1e-12)
        assert est.n_layers == lm.n_layers


def test_cost_model_unchanged(tiny):
    _flops(tiny)


@pytest.mark.slow
def test_smollm2(smol):
    _flops(smol)
    rows = laminar.run(smol, laminar.preset("tiny", layers=(0, 15, 29), window_len=32)).rows
    _assert_rows(rows, SMOL_TINY, [0, 15, 29], 62)


# ---- what tools/regen_golden.py records: the same runs as the tests above
def measure_rows(rows) -> dict:
    return {c: [float(v) for v in rows[c]] for c in COLS}


def measure(lm) -> dict:
    """This model's pinned numbers (tiny-gpt2: the three row tables; smollm2: SMOL_TINY), and FLOPS."""
    flops = {name: [est.capture_gflop, est.layer_gflop] for name in FLOPS[lm.name]
             for est in [laminar.estimate(lm, laminar.preset(name), (1.0, 1.0))]}
    if lm.name != "tiny-gpt2":
        rows = laminar.run(lm, laminar.preset("tiny", layers=(0, 15, 29), window_len=32)).rows
        return {"SMOL_TINY": measure_rows(rows), "FLOPS": flops}
    ids = corpus.tokenize(lm.tokenizer, corpus.bundled_article().text)
    topk = laminar.preset("tiny", seed=3, layers=(0, 2), **{"sae.activation": "topk", "sae.k": 8})
    quick = laminar.preset("quick", n_windows=3, window_len=24, seed=1, **{"sae.epochs": 3})
    return {"TINY_RELU": measure_rows(laminar.run(lm, laminar.preset("tiny")).rows),
            "TINY_TOPK": measure_rows(laminar.sweep(lm, ids, topk)),
            "QUICK_SMALL": measure_rows(laminar.run(lm, quick).rows), "FLOPS": flops}
