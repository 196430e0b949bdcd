"""Same seed -> the same numbers as before the contract refactor.

Every number here was computed with commit 0bedec2 (the pre-change lab/laminar.py, run from a
worktree of that commit on tiny-gpt2 and smollm2-135m, CPU): `laminar.sweep(lm, ids, cfg)` over
the bundled LED text, with the old flat config fields (epochs, activation, k) now under
`cfg.sae`. The old `preset("seed")` is `preset("full")`.
"""
from __future__ import annotations

import pytest
import torch

from lab import corpus, laminar

RTOL = 1e-6
COLS = ("density", "dead_fraction", "mse", "nmse", "val_nmse", "l0")

TINY_RELU = {   # preset("tiny"): 2 x 16 tokens, ReLU + L1, 2x latents, 2 epochs, seed 0
    "density": [0.5057291984558105, 0.49687498807907104, 0.49270832538604736],
    "dead_fraction": [0.0, 0.0, 0.0],
    "mse": [4.884114137181701e-05, 5.633879920138646e-05, 4.7154395014050755e-05],
    "nmse": [0.4860316422061048, 0.4901762500941785, 0.44975340040324197],
    "val_nmse": [0.6864163499271233, 0.5935228664496467, 0.6523758576752522],
    "l0": [64.51851851851852, 63.77777777777778, 63.629629629629626]}
TINY_TOPK = {   # preset("tiny", activation="topk", k=8, seed=3, layers=(0, 2))
    "density": [0.0625000074505806, 0.0625],
    "dead_fraction": [0.15625, 0.1796875],
    "mse": [6.365878946543268e-05, 6.535942814256492e-05],
    "nmse": [0.6400827782275108, 0.6419047146480236],
    "val_nmse": [0.9335205752509436, 1.0286402465166664],
    "l0": [8.0, 8.0]}
QUICK_SMALL = {   # preset("quick", n_windows=3, window_len=24, epochs=3, seed=1)
    "density": [0.4941123127937317, 0.5020380616188049, 0.50169837474823],
    "dead_fraction": [0.0, 0.0, 0.0],
    "mse": [5.1069832507690174e-05, 5.1634634365240236e-05, 4.7169964843401967e-05],
    "nmse": [0.47732580621571274, 0.4546993818367946, 0.46681272821423664],
    "val_nmse": [0.4698236357699267, 0.4742449428225213, 0.49237932719490424],
    "l0": [63.62903225806452, 64.30645161290323, 64.54838709677419]}
SMOL_TINY = {   # smollm2-135m, preset("tiny", layers=(0, 15, 29), window_len=32)
    "density": [0.4227990508079529, 0.43332773447036743, 0.43927812576293945],
    "dead_fraction": [0.0, 0.0, 0.0],
    "mse": [1.19623149693304, 0.592742087908868, 78.75220239508575],
    "nmse": [0.3697891646702455, 0.3850052358812833, 0.3945501906213271],
    "val_nmse": [0.4720730700042951, 0.4587668643379533, 0.3300469743498845],
    "l0": [520.9821428571429, 532.7678571428571, 530.0]}
# Estimate(...).capture_gflop, .layer_gflop per old preset name on each model
FLOPS = {"tiny-gpt2": {"tiny": (0.013996032, 0.005996544), "quick": (0.491913216, 2.812411904),
                       "full": (8.44234752, 282.25241088)},
         "smollm2-135m": {"tiny": (6.814715904, 0.485720064), "quick": (222.034526208, 227.805364224),
                          "full": (2537.43464448, 22862.44528128)}}


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
