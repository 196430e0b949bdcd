"""The logit lens and attention patterns: parity with HF (eager attention, the model's own
logits) on GPT-2 tiny, SmolLM2 and an untied tiny Llama; the run's tables and records; two
threads on one shared model; the CLI and the page."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from conftest import app_test
from lab import hooks
from lab.experiment import Cancelled, field_of
from lab.lens import LensConfig, capture_lens, lens_chunks, run

TEXT = "The capital of France is Paris, and the capital of Hungary is Budapest."
MODELS = ["tiny", pytest.param("smol", marks=pytest.mark.slow), "tiny_llama"]




def _eager_copy(lm):
    """A separate copy of the same weights with HF's eager attention (which returns weights)."""
    cfg = lm.model.config.__class__.from_dict(lm.model.config.to_dict())
    cfg._attn_implementation = "eager"
    copy = type(lm.model)(cfg).eval()
    copy.load_state_dict(lm.model.state_dict())
    return copy


def _ids(lm, text=TEXT):
    return lm.tokenizer(text, return_tensors="pt").input_ids


@pytest.mark.parametrize("which", MODELS)
def test_attention_pattern_equals_hf_eager_and_rows_sum_to_1(which, request):
    lm = request.getfixturevalue(which)
    assert lm.model.config._attn_implementation != "eager"  # the shared model keeps its kernel
    ids = _ids(lm)
    names = [hooks.pattern(b) for b in range(lm.n_layers)]
    with torch.no_grad():
        got = hooks.run_with_hooks(lm, names, input_ids=ids, stop_early=False)
        ref = _eager_copy(lm)(ids, output_attentions=True).attentions
    for b, name in enumerate(names):
        assert got[name].shape == (1, lm.config.num_attention_heads, ids.shape[1], ids.shape[1])
        torch.testing.assert_close(got[name].sum(-1), torch.ones(got[name].shape[:-1]),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(got[name], ref[b], rtol=0, atol=1e-5)
        assert torch.all(got[name].triu(1) == 0)  # causal: nothing from the future
    assert lm.model.config._attn_implementation != "eager"


@pytest.mark.parametrize("which", MODELS)
def test_lens_at_the_last_layer_is_the_models_own_logits(which, request):
    lm = request.getfixturevalue(which)
    ids = _ids(lm)
    states = capture_lens(lm, LensConfig(text=TEXT))
    with torch.no_grad():
        logits = lm.model(ids).logits[0]                                   # [pos, vocab]
        lens = lm.arch.read_out(lm.model, states.resid)                    # [layer, pos, vocab]
    assert lens.shape[0] == lm.n_layers + 1
    assert torch.equal(lens[-1].argmax(-1), logits.argmax(-1))
    assert (lens[-1] - logits).abs().max().item() < 1e-4
    chunk = list(lens_chunks(lm, states.resid, states.token_ids, top_k=3))[-1]
    assert np.array_equal(chunk.top_ids[-1, :, 0], logits.argmax(-1).numpy())
    p = logits.softmax(-1)[torch.arange(len(ids[0]) - 1), ids[0, 1:]]
    np.testing.assert_allclose(chunk.p_true[-1], p.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(chunk.kl[-1], 0, atol=1e-5)


def test_tied_and_untied_unembedding(tiny, tiny_llama):
    assert tiny.arch.tied(tiny.model)
    assert not tiny_llama.arch.tied(tiny_llama.model)
    assert tiny_llama.arch.unembed_of(tiny_llama.model).weight.shape == (tiny_llama.vocab_size, 64)


def test_chunking_over_layers_changes_nothing(tiny):
    states = capture_lens(tiny, LensConfig(text=TEXT))
    one = list(lens_chunks(tiny, states.resid, states.token_ids, 4))
    many = list(lens_chunks(tiny, states.resid, states.token_ids, 4, budget=1))
    assert len(one) == 1 and len(many) == tiny.n_layers + 1
    for name in ("p_true", "rank", "kl", "top_ids", "top_p"):
        np.testing.assert_allclose(getattr(one[0], name),
                                   np.concatenate([getattr(c, name) for c in many]), rtol=1e-5, atol=1e-7)


def test_run_tables_record_and_progress(tiny):
    events = []
    r = run(tiny, LensConfig(text=TEXT, top_k=4), events.append)
    n, L = r.n_tokens, tiny.n_layers + 1
    assert [e.done for e in events][0] == 0 and events[-1].fraction == 1
    assert r.complete and r.p_true.shape == (L, n - 1) and r.top_ids.shape == (L, n, 4)
    assert (r.rank >= 1).all() and np.allclose(r.kl[-1], 0, atol=1e-5)
    assert np.all(np.diff(r.top_p, axis=-1) <= 1e-7)            # sorted, most likely first
    frames = r.frames()
    assert len(frames["lens"]) == L * n and len(frames["top_tokens"]) == L * n * 4
    assert frames["lens"]["rank"].isna().sum() == L              # the last position has no next token
    assert len(frames["attention_sink"]) == tiny.n_layers * r.n_heads
    assert ((frames["attention_sink"]["token0"] > 0) & (frames["attention_sink"]["token0"] <= 1)).all()
    record = r.to_record()
    assert json.loads(json.dumps(record)) == record
    assert record["experiment"] == "lens" and record["tokens_used"] == n
    s = r.settle()
    top1 = r.rank == 1
    assert s["correct"] == int(top1[-1].sum()) and s["positions"] == n - 1
    pat = r.pattern(1, 0, 3, 8)
    assert set(pat["key"]) == {0, 3, 4, 5, 6, 7} and (pat["key"] <= pat["query"]).all()
    assert r.top_table(2).shape == (L, 3 + 4)
    assert isinstance(r.brief(), dict)


def test_settle_layer_definition(tiny):
    """`settled` = from which layer the true token stays top-1; `first` = the first time it is."""
    r = run(tiny, LensConfig(text=TEXT, top_k=1))
    rank = np.array([[5, 4, 1, 1], [1, 3, 1, 2], [1, 1, 1, 4], [2, 1, 1, 1]])  # [layer, pos]
    fake = type(r)(**{**r.__dict__, "rank": rank, "p_true": np.zeros((4, 4)),
                      "token_ids": (0,) * 5, "tokens": ("a",) * 5})
    s = fake.settle()
    # positions 1, 2, 3 are top-1 at the last layer; they stay from layers 2, 0, 3; first 2, 0, 0
    assert s["correct"] == 3 and s["settled_median"] == 2
    assert s["settled_mean"] == pytest.approx(5 / 3, abs=1e-3)
    assert s["first_mean"] == pytest.approx(2 / 3, abs=1e-3)


def test_a_stop_keeps_the_layers_read(tiny):
    seen = []

    def stop_after_first_chunk(p):
        seen.append(p)
        if p.partial is not None:
            raise Cancelled
    cfg = LensConfig(text=TEXT)
    with pytest.raises(Cancelled):
        run(tiny, cfg, stop_after_first_chunk)
    kept = seen[-1].partial
    assert kept.n_layers_done >= 1 and json.dumps(kept.to_record())


def test_config_checks():
    with pytest.raises(ValueError, match="top_k"):
        LensConfig(top_k=0)
    with pytest.raises(ValueError, match="max_tokens"):
        LensConfig(max_tokens=10_000)
    with pytest.raises(ValueError, match="empty"):
        LensConfig(text="   ")
    assert "Unused" in field_of(LensConfig, "seed").help
    assert LensConfig().input_text().startswith("Every autumn")
    hash(LensConfig(text=TEXT))


@pytest.mark.parametrize("which", ["tiny", pytest.param("smol", marks=pytest.mark.slow)])
def test_two_threads_lens_and_activation_capture(which, request, monkeypatch):
    """The lens in thread A, an activation-maximization-style capture (gradients through
    inputs_embeds) in thread B, on one shared model. Ordered by events: B's forward and
    backward run while A's lens hooks (residual stream and attention patterns) are live,
    then A's forward runs while B's hooks are live. Each gets exactly its own numbers."""
    lm = request.getfixturevalue(which)
    cfg = LensConfig(text=TEXT, max_tokens=12, top_k=3)
    name = hooks.resid_post(1)
    x0 = torch.randn(1, 5, lm.d_model, generator=torch.Generator().manual_seed(0)) * 0.05

    def activation_step():
        x = x0.clone().requires_grad_(True)
        act = hooks.run_with_hooks(lm, [name], inputs_embeds=x)[name]
        act[..., 3].mean().backward()
        return act.detach(), x.grad

    alone_lens, alone_act = run(lm, cfg), activation_step()
    a_in_forward, b_done, b_open, a_done = (threading.Event() for _ in range(4))
    real_forward, tid = hooks.forward, {}

    def paused_forward(*args, **kwargs):   # thread A waits with its hooks registered
        if threading.get_ident() == tid.get("a"):
            a_in_forward.set()
            assert b_done.wait(60), "thread B never ran"
        return real_forward(*args, **kwargs)
    monkeypatch.setattr(hooks, "forward", paused_forward)
    seen: dict = {}

    def thread_a():
        tid["a"] = threading.get_ident()
        assert b_open.wait(60)
        seen["lens"] = run(lm, cfg)
        a_done.set()

    def thread_b():
        with torch.no_grad(), hooks.capture(lm, [name]) as cache:  # B's hooks live while A runs
            b_open.set()
            assert a_in_forward.wait(60)
            seen["b_cache_during_a"] = dict(cache)
        seen["act"] = activation_step()            # while A sits in its forward, hooks on
        b_done.set()

    threads = [threading.Thread(target=f) for f in (thread_a, thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert a_done.is_set(), "thread A did not finish"
    assert seen["b_cache_during_a"] == {}
    assert torch.equal(seen["act"][0], alone_act[0]) and torch.equal(seen["act"][1], alone_act[1])
    got = seen["lens"]
    for field in ("p_true", "rank", "kl", "top_ids", "patterns", "token0"):
        assert np.array_equal(getattr(got, field), getattr(alone_lens, field)), field


def _hook_ids(lm):
    return {(n, id(h)) for n, m in lm.model.named_modules()
            for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())}


def test_pattern_hooks_are_removed_also_after_an_exception(tiny):
    before = _hook_ids(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.capture(tiny, [hooks.pattern(0), hooks.pattern(2)]):
            assert _hook_ids(tiny) != before
            raise RuntimeError("boom")
    assert _hook_ids(tiny) == before
    with pytest.raises(ValueError, match=r"0\.\.2"):
        hooks.parse_point(tiny, hooks.pattern(3))
    with pytest.raises(ValueError, match="valid"):   # parse_hook itself is unchanged
        hooks.parse_hook(tiny, hooks.pattern(0))


def test_cli_text_file_json_and_out(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "lab", "lens", "--model", "tiny-gpt2", "--device",
                        "cpu", "--text-file", str(tmp_path / "t.txt"), "--top-k", "2", "--json",
                        "--quiet", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["config"]["text"] == TEXT and record["config"]["top_k"] == 2
    assert len(record["p_true"]) == 4 and record["settle"]["positions"] == record["tokens_used"] - 1
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["attention_blocks.csv", "attention_patterns.npy", "attention_sink.csv",
                   "layers.csv", "lens.csv", "record.json", "top_tokens.csv"]


@pytest.fixture
def keep_torch_threads():
    """The job runner's worker calls torch.set_num_threads(1), and every thread started later
    in this process inherits that (the main thread does not): restore it, or a later test that
    compares a main-thread forward bitwise with a new thread's (test_hooks) sees float noise."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_page_runs_and_draws_every_chart(keep_torch_threads):
    at = app_test("views/lens.py")
    assert not at.exception and at.info          # before Run: what to do
    at.button(key="lens_run").click().run()
    assert not at.exception, at.exception
    assert len(_charts(at)) == 6
    at.slider(key="lens_block").set_value(2).run()
    at.slider(key="lens_head").set_value(1).run()
    at.radio(key="lens_metric").set_value("kl").run()
    at.slider(key="lens_window").set_value((10, 30)).run()
    assert not at.exception and len(_charts(at)) == 6


def _charts(at) -> list:
    out, todo = [], [at.main]
    while todo:
        node = todo.pop()
        if getattr(node, "type", "") == "vega_lite_chart":
            out.append(node)
        todo += list(getattr(node, "children", {}).values())
    return out
