"""Issue 30 (a class never waits on a default) and issue 31's activation-maximization inputs:
per-method defaults, the cheaper token-method step (same tokens and scores as scoring every
candidate by a plain forward), patience, bad inputs as one sentence, the finite-result guard,
the cost model, and the page switching to a method's defaults."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from lab import actmax, estimate, hooks
from lab.actmax import ActMaxConfig
from lab.actmax import discrete as D
from lab.actmax.config import METHOD_DEFAULTS, method_defaults
from lab.actmax.result import check_finite
from lab.actmax.target import Scores, evaluate


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg_tiny(**kw) -> ActMaxConfig:
    return ActMaxConfig(**{"hook": hooks.resid_post(1), "index": 5, "steps": 12,
                           "candidates": 24, "corpus_top": 0, "bf16_rank": 0, **kw})


# ---------------------------------------------------------------- defaults per method

@pytest.mark.parametrize("method", list(METHOD_DEFAULTS))
def test_a_method_takes_its_own_defaults_and_keeps_explicit_values(method):
    cfg = ActMaxConfig(method=method)
    for name, value in method_defaults(method).items():
        assert getattr(cfg, name) == value, name
    explicit = ActMaxConfig(method=method, steps=37, candidates=16, top_k=9, bf16_rank=0)
    assert (explicit.steps, explicit.candidates, explicit.top_k, explicit.bf16_rank) == (37, 16, 9, 0)
    assert ActMaxConfig(method=method) == ActMaxConfig(method=method, **method_defaults(method))
    assert hash(cfg) == hash(ActMaxConfig(method=method))


def test_bf16_rank_follows_the_cpu_gate(monkeypatch):
    monkeypatch.setenv("LAB_ACTMAX_BF16", "1")
    assert ActMaxConfig(method="discrete").bf16_rank == 8
    assert ActMaxConfig(method="epo", candidates=3, epo_lams=(0.0, 1.0, 2.0)).bf16_rank == 3
    assert ActMaxConfig(method="continuous").bf16_rank == 0
    monkeypatch.setenv("LAB_ACTMAX_BF16", "0")
    assert ActMaxConfig(method="discrete").bf16_rank == 0


# ---------------------------------------------------------------- the cheaper step

def _reference_score(lm, target, ids, cands, fluent, lam, keep=0):
    """Every candidate through a plain batched forward: no shared prefix, no shared
    predictions, the whole body for the cross-entropy."""
    assert keep == 0
    return evaluate(lm, target, cands.flatten(0, 1), fluent)


@pytest.mark.parametrize("method, kw", [
    ("discrete", {}), ("discrete", {"lam": 0.5}),
    ("epo", {"epo_lams": (0.0, 0.5, 2.0)}), ("epo", {"epo_lams": (0.0, 1.0), "hook": "hook_embed"}),
    ("discrete", {"lam": 1.0, "hook": hooks.mlp_post(0), "n_tokens": 3, "restarts": 2}),
])
def test_the_step_finds_the_same_prompts_with_the_same_scores_as_scoring_every_candidate(
        tiny, monkeypatch, method, kw):
    cfg = cfg_tiny(method=method, **kw)
    fast = actmax.run(tiny, cfg)
    monkeypatch.setattr(D, "score", _reference_score)
    ref = actmax.run(tiny, cfg)
    np.testing.assert_array_equal(fast.prompts.ids, ref.prompts.ids)
    np.testing.assert_allclose(fast.prompts.activation, ref.prompts.activation, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.history.target, ref.history.target, rtol=1e-5, atol=1e-6)
    if cfg.fluent:
        np.testing.assert_allclose(fast.history.ce, ref.history.ce, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fast.prompts.ce, ref.prompts.ce, rtol=1e-5, atol=1e-5)
    if method == "epo":
        np.testing.assert_array_equal(fast.frontier.ids, ref.frontier.ids)


def test_patience_stops_when_the_best_prompt_stays_and_says_so(tiny):
    rec = D.discrete(tiny, cfg := cfg_tiny(method="discrete", steps=400, patience=3),
                     actmax.target_of(tiny, cfg))
    st = rec.state()
    assert st["steps_done"] < 400 and "did not change for 3 steps" in rec.stopped
    full = D.discrete(tiny, c2 := dataclasses.replace(cfg, patience=0, steps=st["steps_done"]),
                      actmax.target_of(tiny, c2))
    assert torch.equal(full.ids, rec.ids)         # the same path up to where it stopped


# ---------------------------------------------------------------- bad inputs (issue 31)

@pytest.mark.parametrize("args, msg", [
    (["--lr", "1e30"], "lr must be greater than 0 and at most 1"),
    (["--method", "pez", "--lam", "1e38"], "lam must be between 0 and 100"),
    (["--method", "discrete", "--epo-lams", "nan,inf"], "epo_lams must be finite fluency weights"),
    (["--method", "discrete", "--candidates", "8", "--bf16-rank", "100000"],
     "bf16_rank re-scores the best N of the candidates: it must be at most candidates (8)"),
    (["--corpus-top", "1000000"], "corpus_top must be between 0 and 100"),
    (["--method", "epo", "--epo-lams=0,200"], "epo_lams must be finite fluency weights between 0 and 100"),
])
def test_bad_actmax_inputs_are_one_sentence_and_exit_2(capsys, args, msg):
    from lab.cli import main
    assert main(["actmax", "--model", "tiny-gpt2", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_help_states_the_upper_bounds(capsys):
    from lab.cli import main
    with pytest.raises(SystemExit):
        main(["actmax", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("at most 1)", "at most 100)", "at most candidates", "at most 1024", "each 0..100"):
        assert text in out, text


@pytest.mark.parametrize("method, setting", [("continuous", "lr (0.001)"), ("pez", "lam (0)"),
                                             ("discrete", "lam (0)"), ("epo", "epo_lams (0, 0.5, 2)")])
def test_a_non_finite_run_ends_with_a_sentence_naming_the_setting(tiny, method, setting):
    res = actmax.run(tiny, cfg_tiny(method=method, steps=3, candidates=12))
    check_finite(res.config, res.history, res.prompts, res.best_cosine)      # finite: passes
    bad = res.history.copy()
    bad.loc[bad.step == 2, "target"] = math.nan
    with pytest.raises(ValueError, match=r"non-finite \(nan or infinity\) at step 2: lower .*"
                       + setting.replace("(", r"\(").replace(")", r"\)")):
        check_finite(res.config, bad)


def test_the_run_itself_refuses_a_nan_result(tiny, monkeypatch):
    real = D.objective
    monkeypatch.setattr(D, "objective", lambda s, lam: real(Scores(s.target * math.inf, *s[1:]), lam))
    with pytest.raises(ValueError, match="went non-finite"):
        actmax.run(tiny, cfg_tiny(method="discrete", steps=2))


# ---------------------------------------------------------------- the estimate

@pytest.mark.parametrize("method", ["continuous", "discrete", "epo"])
def test_the_estimate_is_within_2x_of_a_measured_run(tiny, method):
    import time
    cfg = cfg_tiny(method=method, steps=60, candidates=30 if method == "epo" else 24)
    est = estimate.estimate(tiny, "actmax", cfg)
    took = []
    for _ in range(2):                       # the faster of two: a neighbour's burst aside
        t0 = time.perf_counter()
        actmax.run(tiny, cfg)
        took.append(time.perf_counter() - t0)
    assert est.seconds > 0 and set(est.parts) >= {"steps", "corpus bar"}
    # within 3x at this size (runs of a few hundred ms on a shared machine); the 2x of the
    # issue is checked on smollm2's defaults by bench/actmax_bench.py
    assert min(took) / 3 <= est.seconds <= max(took) * 3, (est.seconds, took)


def test_every_experiment_has_a_cost_model(tiny):
    from lab import registry
    for name in ("hidden", "lens", "actmax", "repro"):
        exp = registry.get(name)
        cfg = exp.smoke_config() if hasattr(exp, "smoke_config") else exp.config_class()
        assert estimate.estimate(tiny, name, cfg).seconds > 0
    with pytest.raises(ValueError, match="no cost model"):
        estimate.estimate(tiny, "nonexistent", None)


# ---------------------------------------------------------------- the page

def test_the_page_switches_to_a_methods_defaults_and_keeps_a_moved_slider():
    from conftest import app_test
    at = app_test("views/activation_max.py")
    assert at.slider(key="am_steps").value == METHOD_DEFAULTS["continuous"]["steps"]
    at.radio(key="am_method").set_value("epo").run()
    assert not at.exception, at.exception
    assert at.slider(key="am_steps").value == METHOD_DEFAULTS["epo"]["steps"]
    assert at.slider(key="am_candidates").value == METHOD_DEFAULTS["epo"]["candidates"]
    assert any("Estimated time" in c.value for c in at.caption)
    at.slider(key="am_steps").set_value(45).run()          # the student's own value
    at.radio(key="am_method").set_value("discrete").run()
    assert at.slider(key="am_steps").value == 45
    assert at.slider(key="am_candidates").value == METHOD_DEFAULTS["discrete"]["candidates"]
    at.radio(key="am_method").set_value("pez").run()
    assert at.slider(key="am_steps").value == 45 and not at.exception
