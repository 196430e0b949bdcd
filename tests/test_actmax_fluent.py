"""Fluent activation maximization (issue 12): pez, discrete (GCG-style), EPO-lite, MLP-neuron
and SAE-latent targets, and the corpus's best windows as the bar. Mechanics on tiny-gpt2;
the parity checks also on SmolLM2 (slow)."""
import json

import numpy as np
import pytest
import torch

from lab import actmax, hooks
from lab.actmax import ActMaxConfig
from lab.actmax.bar import cached_bar, corpus_bar, short_windows
from lab.actmax.discrete import one_hot_gradient, swap_candidates
from lab.actmax.epo import pareto
from lab.actmax.prompts import measure
from lab.actmax.repro import ReproConfig
from lab.actmax.target import allowed_tokens, evaluate, evaluate_swaps, random_ids, target_of
from lab.experiment import Cancelled
from lab.scan import scan_corpus


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)      # tiny workloads: two spin-waiting threads are slower than one
    yield
    torch.set_num_threads(n)


def cfg_tiny(**kw) -> ActMaxConfig:
    return ActMaxConfig(**{"hook": hooks.resid_post(1), "index": 5, "steps": 8, "lr": 1e-2,
                           "candidates": 32, "corpus_top": 0, **kw})


def _private(name: str):
    """A private model copy for plain-HF references (output_hidden_states leaves HF's recorder
    hooks on a model; the shared fixtures stay hook-free)."""
    from lab.models import load_model
    return load_model(name, "cpu")


def _hf_reference(ref, hook: str, index: int, ids: torch.Tensor):
    """(target mean over positions [N], cross-entropy [N]) from HF's own forward: hidden_states
    for a residual hook, a plain torch hook on the MLP's down projection for a neuron."""
    kind, layer = actmax.hook_kind(hook), actmax.hook_layer(hook)
    seen = {}
    handle = None
    if kind == "mlp_post":
        proj = ref.arch.mlp_out_proj_of(ref.model, layer)
        handle = proj.register_forward_pre_hook(lambda m, args: seen.update(h=args[0]))
    try:
        with torch.no_grad():
            out = ref.model(input_ids=ids, output_hidden_states=True)
    finally:
        if handle is not None:
            handle.remove()
    h = seen["h"] if kind == "mlp_post" else out.hidden_states[layer + 1]
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].transpose(1, 2), ids[:, 1:],
                                           reduction="none").mean(1)
    return h[..., index].mean(1), ce


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("kw, msg", [
    ({"method": "gcg"}, "method must be one of continuous, pez, discrete, epo"),
    ({"lam": -1.0}, "lam must be between 0 and 100"),
    ({"lam": 0.5}, "lam is the fluency weight of pez and discrete"),
    ({"method": "epo", "lam": 0.5}, "lam is the fluency weight of pez and discrete"),
    ({"method": "discrete", "top_k": 0}, "top_k must be at least 1"),
    ({"method": "discrete", "candidates": 0}, "candidates must be between 1 and 1024"),
    ({"method": "discrete", "candidates": 5000}, "candidates must be between 1 and 1024"),
    ({"method": "epo", "epo_lams": (1.0,)}, "epo_lams must be two or more different"),
    ({"method": "epo", "epo_lams": (0.0, -1.0)}, "epo_lams must be finite fluency weights between 0 and 100"),
    ({"method": "epo", "epo_lams": (0.0, 1.0, 2.0), "candidates": 2}, "candidates must be at least 3"),
    ({"method": "discrete", "lam": 1.0, "n_tokens": 1}, "n_tokens must be at least 2"),
    ({"corpus_top": -1}, "corpus_top must be between 0 and 100"),
])
def test_bad_values_are_one_sentence(kw, msg):
    with pytest.raises(ValueError, match=msg) as e:
        cfg_tiny(**kw)
    assert str(e.value).count(". ") == 0 and "\n" not in str(e.value)


def test_cli_methods_and_targets(capsys):
    from lab.cli import main
    for method, hook in (("pez", "blocks.1.hook_resid_post"), ("discrete", "blocks.1.mlp.hook_post")):
        assert main(["actmax", "--model", "tiny-gpt2", "--method", method, "--hook", hook,
                     "--index", "7", "--steps", "3", "--candidates", "16", "--corpus-top", "2",
                     "--device", "cpu", "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["config"]["method"] == method and len(out["prompts"]) == 1
        p = out["prompts"][0]
        assert len(p["ids"]) == 5 and isinstance(p["survives_retokenize"], bool)
        assert out["bar"]["best"] == max(w["activation"] for w in out["bar"]["windows"])
    assert main(["actmax", "--model", "tiny-gpt2", "--method", "epo", "--steps", "2",
                 "--hook", "blocks.0.hook_resid_post", "--index", "3", "--candidates", "10",
                 "--epo-lams", "0,1", "--corpus-top", "0", "--device", "cpu", "--quiet"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["method"] == "epo" and "frontier" in lines and "prompt_ce" in lines


@pytest.mark.parametrize("args, msg", [
    (["--method", "gcg"], "invalid choice: 'gcg'"),
    (["--method", "continuous", "--lam", "1"], "lam is the fluency weight"),
    (["--method", "discrete", "--candidates", "0"], "candidates must be between 1 and 1024"),
    (["--method", "epo", "--epo-lams", "1"], "epo_lams must be two or more"),
    (["--sae", "/nonexistent/sae", "--hook", "blocks.1.hook_resid_post"], "/nonexistent/sae"),
])
def test_cli_bad_values_are_one_line(capsys, args, msg):
    from lab.cli import main
    assert main(["actmax", "--model", "tiny-gpt2", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- scoring real tokens

def test_batched_candidate_evaluation_equals_each_alone(tiny):
    for hook, fluent in ((hooks.resid_post(1), False), (hooks.mlp_post(1), True)):
        goal = target_of(tiny, cfg_tiny(hook=hook))
        ids = random_ids(tiny, 0, 23, 5, stream=9)
        batched = evaluate(tiny, goal, ids, fluent, batch=10)     # three forwards, one ragged
        for i in range(len(ids)):
            alone = evaluate(tiny, goal, ids[i:i + 1], fluent)
            for a, b in zip(alone, batched):
                torch.testing.assert_close(a[0], b[i], rtol=1e-5, atol=1e-6, equal_nan=True)
    assert torch.isnan(evaluate(tiny, goal, ids[:2], fluent=False).ce).all()


def _one_swap_candidates(lm, ids, n, seed=0):
    """[B, n, T]: each a copy of its prompt with one random position set to a random token;
    every fifth candidate left unchanged (a no-op swap must score as its prompt)."""
    B, T = ids.shape
    cands = ids.unsqueeze(1).repeat(1, n, 1)
    g = torch.Generator().manual_seed(seed)
    new = random_ids(lm, seed, 1, B * n, stream=7)[0].view(B, n)
    for b in range(B):
        for j in range(n):
            if j % 5:
                cands[b, j, torch.randint(T, (1,), generator=g)] = new[b, j]
    return cands


@pytest.mark.parametrize("hook, fluent", [(hooks.resid_post(1), False), (hooks.mlp_post(1), True),
                                          ("hook_embed", False), ("hook_embed", True)])
def test_prefix_shared_evaluation_equals_evaluating_every_candidate(tiny, hook, fluent):
    goal = target_of(tiny, cfg_tiny(hook=hook))
    ids = random_ids(tiny, 3, 4, 6, stream=9)
    cands = _one_swap_candidates(tiny, ids, 30)
    shared = evaluate_swaps(tiny, goal, ids, cands, fluent, batch=7)   # ragged chunks
    plain = evaluate(tiny, goal, cands.flatten(0, 1), fluent)
    for a, b in zip(shared, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert not torch.isnan(shared.ce).any() if fluent else torch.isnan(shared.ce).all()


@pytest.mark.slow
def test_prefix_shared_evaluation_equals_evaluating_every_candidate_on_smollm2(smol):
    goal = target_of(smol, ActMaxConfig(hook=hooks.resid_post(7), index=91, method="discrete"))
    ids = random_ids(smol, 3, 2, 5, stream=9)
    cands = _one_swap_candidates(smol, ids, 12)
    for fluent in (False, True):
        shared = evaluate_swaps(smol, goal, ids, cands, fluent)
        plain = evaluate(smol, goal, cands.flatten(0, 1), fluent)
        for a, b in zip(shared, plain):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("method, hook", [("discrete", hooks.resid_post(1)),
                                          ("discrete", hooks.mlp_post(0)),
                                          ("pez", hooks.resid_post(0))])
def test_reported_activation_is_a_plain_hf_forward_on_the_ids(tiny, method, hook):
    res = actmax.run(tiny, cfg_tiny(method=method, hook=hook, index=9, restarts=2))
    ids = torch.as_tensor(res.prompts.ids)
    act, ce = _hf_reference(_private("tiny-gpt2"), hook, 9, ids)
    np.testing.assert_allclose(res.prompts.activation, act.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.prompts.ce, ce.numpy(), rtol=1e-5, atol=1e-6)
    assert list(res.prompts.text) == tiny.tokenizer.batch_decode(ids.tolist())
    np.testing.assert_allclose(res.gap.snapped, res.prompts.activation, rtol=1e-5, atol=1e-6)
    json.dumps(res.to_record())


@pytest.mark.slow
def test_reported_activation_is_a_plain_hf_forward_on_smollm2(smol):
    cfg = ActMaxConfig(hook=hooks.resid_post(7), index=91, method="discrete", steps=2,
                       candidates=16, corpus_top=0)
    res = actmax.run(smol, cfg)
    ids = torch.as_tensor(res.prompts.ids)
    ref = _private("smollm2-135m")
    act, ce = _hf_reference(ref, cfg.hook, 91, ids)
    np.testing.assert_allclose(res.prompts.activation, act.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.prompts.ce, ce.numpy(), rtol=1e-4, atol=1e-4)
    goal = target_of(smol, replace_hook(cfg, hooks.mlp_post(5)))
    cands = random_ids(smol, 1, 12, 5, stream=9)
    batched = evaluate(smol, goal, cands, fluent=True, batch=5)
    for i in (0, 7, 11):
        alone = evaluate(smol, goal, cands[i:i + 1], fluent=True)
        torch.testing.assert_close(alone.target[0], batched.target[i], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(alone.ce[0], batched.ce[i], rtol=1e-4, atol=1e-4)


def replace_hook(cfg, hook):
    from dataclasses import replace
    return replace(cfg, hook=hook)


def test_one_hot_gradient_predicts_the_swaps_first_order_change(tiny):
    # d loss / d one-hot[t, v] ~ loss(swap t -> v) - loss(current): the gradient ranks swaps.
    goal = target_of(tiny, cfg_tiny())
    ids = random_ids(tiny, 3, 1, 5, stream=9)
    grad, cur = one_hot_gradient(tiny, goal, ids, torch.zeros(1), fluent=False)
    assert grad.shape == (1, 5, tiny.vocab_size)
    torch.testing.assert_close(cur.target, evaluate(tiny, goal, ids).target, rtol=1e-5, atol=1e-6)
    gens = [torch.Generator().manual_seed(0)]
    cands = swap_candidates(ids, grad, allowed_tokens(tiny), 8, 40, gens)
    changed = (cands[0] != ids).sum(-1)
    assert cands.shape == (1, 40, 5) and (changed <= 1).all()
    top = (-grad.masked_fill(~allowed_tokens(tiny), float("inf"))).topk(8, dim=-1).indices[0]
    for c in cands[0]:
        pos = (c != ids[0]).nonzero()
        if len(pos):
            p = int(pos[0])
            assert int(c[p]) in top[p].tolist() and allowed_tokens(tiny)[c[p]]
    moved = [(i, int((c != ids[0]).nonzero()[0])) for i, c in enumerate(cands[0]) if (c != ids[0]).any()]
    exact = evaluate(tiny, goal, cands[0]).target - cur.target
    predicted = [float(grad[0, p, ids[0, p]] - grad[0, p, cands[0, i, p]]) for i, p in moved]
    assert np.corrcoef([float(exact[i]) for i, _ in moved], predicted)[0, 1] > 0.3


def test_a_prompt_that_does_not_survive_retokenizing_is_flagged(tiny):
    tok = tiny.tokenizer
    goal = target_of(tiny, cfg_tiny())
    single = [i for i in range(len(tok)) if allowed_tokens(tiny)[i] and len(tok.decode([i])) == 1]
    pair = next([a, b] for a in single for b in single
                if tok(tok.decode([a, b]), add_special_tokens=False)["input_ids"] != [a, b])
    fine = tok("the light", add_special_tokens=False)["input_ids"]
    p = measure(tiny, goal, [pair, fine[:2]])
    assert p.survives.tolist() == [False, True]


# ---------------------------------------------------------------- the methods

def test_discrete_answers_with_the_best_prompt_it_visited(tiny):
    res = actmax.run(tiny, cfg_tiny(method="discrete", restarts=3, steps=15))
    best = res.history.groupby("restart").target.max().to_numpy()
    np.testing.assert_allclose(res.prompts.activation, best, rtol=1e-5, atol=1e-6)
    assert (res.prompts.activation > res.initial).all()
    assert (res.prompts.activation > res.gap.random.max()).all()
    moves = res.history.sort_values("step").groupby("restart").target.diff().dropna()
    assert (moves != 0).mean() > 0.5            # the walk moves every step (no no-op swaps)
    # discrete's rows start from their own seeded prompts: restart r does not depend on others
    one = actmax.run(tiny, cfg_tiny(method="discrete", restarts=1, steps=15))
    assert one.prompts.ids.tolist() == res.prompts.ids[:1].tolist()
    assert (res.start_ids != res.prompts.ids).any()


def test_a_fluency_weight_lowers_the_cross_entropy(tiny):
    plain = actmax.run(tiny, cfg_tiny(method="discrete", restarts=2, steps=20))
    fluent = actmax.run(tiny, cfg_tiny(method="discrete", restarts=2, steps=20, lam=1.0))
    assert fluent.prompts.ce.mean() < plain.prompts.ce.mean()
    assert fluent.history.ce.notna().all() and plain.history.ce.isna().all()


def test_pez_runs_every_forward_on_real_tokens_and_keeps_the_best(tiny):
    res = actmax.run(tiny, cfg_tiny(method="pez", restarts=2, steps=25))
    best = res.history.groupby("restart").target.max().to_numpy()
    np.testing.assert_allclose(res.prompts.activation, best, rtol=1e-5, atol=1e-6)
    assert res.embeds.shape == (2, 5, tiny.d_model)             # the continuous copy
    assert allowed_tokens(tiny)[torch.as_tensor(res.prompts.ids)].all()


def test_epo_population_and_frontier(tiny):
    cfg = cfg_tiny(method="epo", restarts=2, steps=12, candidates=30, epo_lams=(0.0, 0.5, 2.0))
    res = actmax.run(tiny, cfg)
    assert len(res.prompts) == 6 and res.prompts.lam.tolist() == [0.0, 0.5, 2.0] * 2
    assert res.prompts.restart.tolist() == [0, 0, 0, 1, 1, 1]
    act = res.prompts.activation.reshape(2, 3)
    assert (act[:, 0] >= act.max(1) - 1e-6).all()                # lam 0 holds the pool's best
    f = res.frontier
    assert len(f) >= 1
    for i in range(len(f)):          # no frontier prompt is beaten on both counts by another
        assert not ((f.activation > f.activation[i] + 1e-6) & (f.ce < f.ce[i] - 1e-6)).any()
    assert res.frames()["frontier"].shape[0] == len(f)
    json.dumps(res.to_record())


def test_pareto_on_a_hand_made_case():
    act = torch.tensor([1.0, 3.0, 2.0, 3.0, 0.5])
    ce = torch.tensor([1.0, 4.0, 2.0, 5.0, 0.2])
    assert pareto(act, ce).tolist() == [4, 0, 2, 1]               # by cross-entropy


def test_a_stopped_discrete_run_keeps_its_prompts(tiny):
    cfg = cfg_tiny(method="discrete", steps=30, restarts=2)
    kept = []

    def on_progress(p):
        kept.append(p.partial)
        if p.done == 4:
            raise Cancelled
    with pytest.raises(Cancelled):
        actmax.run(tiny, cfg, on_progress)
    res = actmax.partial_result(tiny, cfg, kept[-1])
    assert res.steps_done == 4 and len(res.prompts) == 2
    ids = torch.as_tensor(res.prompts.ids)
    np.testing.assert_allclose(res.prompts.activation, evaluate(tiny, target_of(tiny, cfg), ids).target,
                               rtol=1e-5)


# ---------------------------------------------------------------- the bar

def test_the_bar_is_the_best_window_of_the_corpus(tiny):
    cfg = cfg_tiny(corpus_top=3, n_tokens=4)
    goal = target_of(tiny, cfg)
    corpus = scan_corpus(tiny)
    ids, source = short_windows(corpus, 4)
    assert len(ids) == len(torch.unique(ids, dim=0)) and len(source) == len(ids)
    n_stretches = sum(sum(s == name for s in corpus.source) * 64 - 3 for name in corpus.names)
    assert len(ids) <= n_stretches
    bar = corpus_bar(tiny, cfg, goal)
    assert bar.top == pytest.approx(float(evaluate(tiny, goal, ids).target.max()), rel=1e-5)
    w = bar.windows()
    assert w["rank"].tolist() == [1, 2, 3] and w.activation.is_monotonic_decreasing
    again = evaluate(tiny, goal, torch.as_tensor(bar.best.ids), fluent=True)
    np.testing.assert_allclose(bar.best.activation, again.target, rtol=1e-5)
    assert len(bar.contexts) == 3 and (bar.contexts.position > 0).all()
    assert cached_bar(tiny, cfg) is bar and corpus_bar(tiny, cfg, goal) is bar
    res = actmax.run(tiny, cfg)
    assert res.bar is bar and "corpus's best windows" in set(res.gap_frame().source)


# ---------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("method", ["pez", "discrete"])
def test_reproducibility_of_token_methods(tiny, method):
    from lab.actmax import repro
    cfg = ReproConfig(actmax=cfg_tiny(method=method, restarts=3, steps=10), seed=1)
    rep = repro.run(tiny, cfg)
    assert rep.optimized.token_ids.tolist() == rep.maximized.prompts.ids.tolist()
    assert rep.optimized.n_total == rep.null.n_total == 15
    assert rep.same_as_start == int((rep.maximized.start_ids == rep.maximized.prompts.ids).sum())
    assert allowed_tokens(tiny)[torch.as_tensor(rep.null.token_ids)].all()
    json.dumps(rep.to_record())
    with pytest.raises(ValueError, match="epo's rows are a population"):
        ReproConfig(actmax=cfg_tiny(method="epo", restarts=2))


# ---------------------------------------------------------------- an SAE latent

def test_an_sae_latent_is_a_target(tiny, tmp_path):
    from lab.sae.saelens import SAELensSAE, save_saelens
    sae = SAELensSAE(tiny.d_model, 96)
    g = torch.Generator().manual_seed(0)
    for name in ("W_enc", "W_dec"):
        getattr(sae, name).data = torch.randn(getattr(sae, name).shape, generator=g) * 0.3
    folder = str(save_saelens(sae, tmp_path / "sae", hooks.resid_post(1)))
    for method in ("continuous", "discrete"):
        cfg = cfg_tiny(sae=folder, index=17, method=method, corpus_top=2)
        assert cfg.unit == "latent" and cfg.target == "latent 17"
        res = actmax.run(tiny, cfg)
        assert (res.final > res.initial).all()
    ids = torch.as_tensor(res.prompts.ids)
    h = hooks.run_with_hooks(tiny, [cfg.hook], input_ids=ids)[cfg.hook]
    np.testing.assert_allclose(res.prompts.activation, sae.encode(h)[..., 17].mean(1).numpy(),
                               rtol=1e-5, atol=1e-6)
    cfg_tiny(sae=folder, index=96).check(tiny)        # the config reads no weights: run does
    with pytest.raises(ValueError, match=r"valid 0\.\.95"):
        target_of(tiny, cfg_tiny(sae=folder, index=96))
    with pytest.raises(ValueError, match="set hook to blocks.1.hook_resid_post"):
        target_of(tiny, cfg_tiny(sae=folder, hook=hooks.resid_post(0)))


# ---------------------------------------------------------------- the pages (AppTest)

def _chart_frames(at) -> list:
    import pyarrow as pa
    out = []
    for c in at.get("vega_lite_chart"):
        out.append([pa.ipc.open_stream(d.data.data).read_pandas() for d in c.proto.datasets])
    return out


def _page(path: str, prefix: str, **sliders):
    from conftest import app_test
    at = app_test(path)
    for key, value in sliders.items():
        widget = at.radio(key=f"{prefix}_{key}") if key == "method" else at.slider(key=f"{prefix}_{key}")
        widget.set_value(value)
        at.run()
    return at


def test_activation_max_page_discrete_shows_prompts_and_the_bar():
    at = _page("views/activation_max.py", "am", method="discrete", layer=1, index=5, steps=10,
               candidates=16)
    assert at.select_slider(key="am_lr").disabled                  # discrete has no Adam
    at.button(key="am_run").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Best prompt's activation"]) > float(metrics["Start activation"])
    assert "Corpus's best window" in metrics and "nats" in metrics["Its cross-entropy"]
    tables = [d.value for d in at.dataframe]
    assert any("survives_retokenize" in t.columns and len(t) == 1 for t in tables)
    assert any("source" in t.columns and len(t) == 5 for t in tables)        # the bar's windows
    sources = set().union(*(set(f.source) for fs in _chart_frames(at) for f in fs if "source" in f))
    assert {"optimized prompts (real tokens)", "corpus's best windows", "random tokens"} <= sources
    assert any("Look for: whether the best prompt beats" in c.value for c in at.caption)
    assert any("search step" in json.dumps(json.loads(c.proto.spec)) for c in at.get("vega_lite_chart"))


def test_activation_max_page_epo_draws_the_frontier():
    at = _page("views/activation_max.py", "am", method="epo", layer=1, index=5, steps=10,
               candidates=24)
    at.button(key="am_run").click().run()
    assert not at.exception, at.exception
    specs = [json.dumps(json.loads(c.proto.spec)) for c in at.get("vega_lite_chart")]
    assert any("cross-entropy of the prompt" in s for s in specs)
    assert any("Look for: the price of fluency" in c.value for c in at.caption)


def test_reproducibility_page_offers_pez_and_discrete():
    at = _page("views/reproducibility.py", "rp", method="discrete", layer=1, index=5, steps=10,
               restarts=3, candidates=16)
    assert at.radio(key="rp_method").options == ["continuous (free vectors)",
                                                 "PEZ (nearest tokens)", "discrete (token swaps)"]
    at.button(key="rp_run").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Unique tokens, optimized"].endswith("of 15")
    assert any("random tokens, like discrete's starts" in m.value for m in at.markdown)


def test_activation_max_page_targets_an_sae_latent(tiny, tmp_path):
    from lab.sae.saelens import SAELensSAE, save_saelens
    folder = str(save_saelens(SAELensSAE(tiny.d_model, 40), tmp_path / "sae", hooks.mlp_out(0)))
    at = _page("views/activation_max.py", "am")
    at.radio(key="am_site").set_value("sae").run()
    assert not at.exception and any("Name an SAE" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "am_run"]         # nothing to run yet
    at.text_input(key="am_sae").input(folder).run()
    assert not at.exception, at.exception
    assert at.slider(key="am_index").label == "Latent" and at.slider(key="am_index").max == 39
    assert any("40 latents" in c.value and "blocks.0.hook_mlp_out" in c.value for c in at.caption)
    at.slider(key="am_steps").set_value(10)
    at.button(key="am_run").click().run()
    assert not at.exception, at.exception
    assert any("SAE " + folder in c.value and "latent" in c.value for c in at.caption)
