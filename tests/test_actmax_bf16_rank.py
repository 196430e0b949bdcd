"""The discrete search's bfloat16 ranking (ActMaxConfig.bf16_rank): one rough forward ranks the
candidates, each row's best N are scored again in float32, and only float32 numbers are kept."""
import numpy as np
import pytest
import torch

from lab import actmax, hooks
from lab.actmax import ActMaxConfig
from lab.actmax.discrete import objective, score
from lab.actmax.target import evaluate, random_ids, target_of


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def cfg_tiny(**kw) -> ActMaxConfig:
    return ActMaxConfig(**{"hook": hooks.resid_post(1), "index": 5, "steps": 6,
                           "candidates": 24, "corpus_top": 0, "method": "discrete", **kw})


def _candidates(lm, B=3, n=24, T=5):
    return random_ids(lm, 4, B * n, T, stream=9).view(B, n, T)


@pytest.mark.parametrize("fluent", [False, True])
def test_kept_candidates_carry_float32_scores_and_the_rest_cannot_be_chosen(tiny, fluent):
    goal = target_of(tiny, cfg_tiny())
    cands = _candidates(tiny)
    B, n, T = cands.shape
    lam = torch.full((B,), 0.5 if fluent else 0.0)
    got = score(tiny, goal, cands[:, 0], cands, fluent, lam, keep=4)
    exact = evaluate(tiny, goal, cands.reshape(B * n, T), fluent)
    kept = torch.isfinite(got.target)
    assert kept.view(B, n).sum(1).tolist() == [4] * B
    for a, b in zip(got, exact):                  # float32 numbers, not the bfloat16 ones
        torch.testing.assert_close(a[kept], b[kept], rtol=1e-5, atol=1e-6, equal_nan=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rough = evaluate(tiny, goal, cands.reshape(B * n, T), fluent)
    J = objective(rough, lam.repeat_interleave(n)).view(B, n)
    want = torch.zeros(B, n, dtype=torch.bool).scatter_(1, J.topk(4, dim=1).indices, True)
    assert torch.equal(kept.view(B, n), want)     # the bfloat16 best of each row
    assert (objective(got, lam.repeat_interleave(n))[~kept] == -float("inf")).all()


@pytest.mark.parametrize("method", ["discrete", "epo"])
def test_keeping_every_candidate_walks_the_float32_path(tiny, method):
    kw = {"method": method, "restarts": 2}
    plain = actmax.run(tiny, cfg_tiny(**kw))
    ranked = actmax.run(tiny, cfg_tiny(**kw, bf16_rank=24))
    assert np.array_equal(plain.prompts.ids, ranked.prompts.ids)
    np.testing.assert_allclose(ranked.prompts.activation, plain.prompts.activation, rtol=1e-5)


def test_a_ranked_search_reports_float32_activations_of_its_prompts(tiny):
    res = actmax.run(tiny, cfg_tiny(bf16_rank=3, restarts=2, lam=0.5))
    ids = torch.as_tensor(np.asarray(res.prompts.ids))
    exact = evaluate(tiny, target_of(tiny, cfg_tiny()), ids, fluent=True)
    np.testing.assert_allclose(res.prompts.activation, exact.target.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.prompts.ce, exact.ce.numpy(), rtol=1e-5, atol=1e-6)


def test_bf16_rank_belongs_to_the_token_methods(capsys):
    with pytest.raises(ValueError, match="bf16_rank ranks the candidates of discrete and epo"):
        cfg_tiny(method="continuous", bf16_rank=4)
    with pytest.raises(ValueError, match="bf16_rank must be at least 0"):
        cfg_tiny(bf16_rank=-1)
    from lab.cli import main
    assert main(["actmax", "--model", "tiny-gpt2", "--device", "cpu", "--method", "pez",
                 "--bf16-rank", "4"]) == 2
    err = capsys.readouterr().err
    assert "bf16_rank ranks the candidates" in err and len(err.strip().splitlines()) == 1
