"""Circuits invariants on the tiny GPT-2 and a tiny grouped-query Llama."""
from __future__ import annotations

import pytest
import torch

from lab.circuits.core import (CircuitsError, attribution, dla, head_masks, induction, make_pair,
                               patched_metrics, per_patch_resid, cache_run, recovery, sweep)

CLEAN, CORRUPTED = " the store and the house and the", " a store and a house and a"




@pytest.fixture(params=["tiny", "tiny_llama"])
def lm(request):
    return request.getfixturevalue(request.param)


def _pair(lm):
    return make_pair(lm, CLEAN, CORRUPTED, " the", " a")


def _rec(lm, pair, site, masks):
    clean, cc = cache_run(lm, pair.clean, pair)
    corr, _ = cache_run(lm, pair.corrupted, pair)
    return recovery(patched_metrics(lm, pair, site, cc[site], masks), clean, corr)


def test_whole_embeddings_one_nothing_zero_last_resid_one(lm):
    pair = _pair(lm)
    P, d = len(pair.clean), lm.d_model
    masks = torch.stack([torch.ones(P, d, dtype=torch.bool), torch.zeros(P, d, dtype=torch.bool)])
    r = _rec(lm, pair, ("resid", 0), masks)
    assert abs(float(r[0]) - 1) < 1e-5 and abs(float(r[1])) < 1e-5
    s = sweep(lm, pair)
    assert s.clean != pytest.approx(s.corrupted)
    assert abs(float(s.resid[-1, -1]) - 1) < 1e-5
    # the final residual at an earlier position cannot reach the last logits
    assert torch.allclose(s.resid[-1, :-1], torch.zeros(P - 1), atol=1e-5)


def test_heads_agree_with_attention_output(lm):
    pair = _pair(lm)
    s = sweep(lm, pair)
    P = len(pair.clean)
    for layer in range(lm.n_layers):
        hm = head_masks(lm, P, False, lm.device)
        all_heads = _rec(lm, pair, ("z", layer), hm.any(0, keepdim=True))[0]
        whole = torch.ones(1, P, lm.d_model, dtype=torch.bool)
        attn = _rec(lm, pair, ("attn", layer), whole)[0]
        assert abs(float(all_heads) - float(attn)) < 1e-5
        # one head, the sweep's own batched copy, is the same patch run alone
        one = _rec(lm, pair, ("z", layer), hm[1:2])[0]
        assert abs(float(one) - float(s.heads[layer, 1])) < 1e-5


def test_batched_resid_equals_per_patch(lm):
    pair = _pair(lm)
    assert torch.allclose(sweep(lm, pair).resid, per_patch_resid(lm, pair), atol=1e-5)


def test_dla_parts_sum_to_logit_diff(lm):
    pair = _pair(lm)
    parts = dla(lm, pair)
    clean, _ = cache_run(lm, pair.clean, pair)
    assert len(parts) == 2 + lm.n_layers * (lm.config.num_attention_heads + 1)
    assert abs(sum(parts.values()) - clean) <= 1e-4 * max(abs(clean), 1e-3)


def test_attribution_heads_sum_to_attention_output(lm):
    # the output projection is linear, so the gradient estimate of all heads together must
    # equal the attention output's (the bias cancels in clean - corrupted)
    approx = attribution(lm, _pair(lm))
    assert len(approx) == lm.n_layers * (2 + lm.config.num_attention_heads)
    assert any(abs(v) > 1e-4 for v in approx.values())
    for layer in range(lm.n_layers):
        heads = sum(approx[f"L{layer}H{h}"] for h in range(lm.config.num_attention_heads))
        assert heads == pytest.approx(approx[f"attn{layer}"], abs=1e-5)


def test_induction_shapes_and_copy(lm):
    out = induction(lm, n=20, seed=0)
    H = lm.config.num_attention_heads
    assert out["induction"].shape == (lm.n_layers, H) == out["prev"].shape
    assert ((out["induction"] >= 0) & (out["induction"] <= 1)).all()
    assert out["loss"].shape == (39,)
    P = out["patterns"]
    assert torch.allclose(P.sum(-1), torch.ones_like(P.sum(-1)), atol=1e-5)


@pytest.mark.parametrize("clean,corr,ans,wrong,word", [
    (CLEAN, " a", " the", " a", "same token length"),
    (CLEAN, CORRUPTED, " Mary", " a", "exactly one token"),
    (CLEAN, CORRUPTED, " the", " the", "same token"),
    ("", CORRUPTED, " the", " a", "some text"),
])
def test_bad_inputs_one_sentence(tiny, clean, corr, ans, wrong, word):
    with pytest.raises(CircuitsError, match=word) as e:
        make_pair(tiny, clean, corr, ans, wrong)
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")
