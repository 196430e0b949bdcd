"""Steering: the generation loop's invariants (coefficient 0 is the unsteered text, the KV
cache equals a full recompute, hooks are gone after an exception), the vectors against
independent computations, and bad inputs as one sentence (exit 2 from the CLI)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from lab import hooks
from lab.experiment import Cancelled
from lab.steer import (SteerConfig, build_vector, generate, partial_result, prompt_ids,
                       random_like, run, steering, target_token_ids)
from lab.steer.hook import n_hooks

PROMPT = "The old town by the river"


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(params=["tiny", "smol"])
def lm(request):
    return request.getfixturevalue(request.param)


def _ids(lm, text=PROMPT):
    return list(lm.tokenizer(text)["input_ids"])


def _vector(lm, hook):
    g = torch.Generator().manual_seed(1)
    return torch.randn(hooks.width(lm, hook), generator=g)


def _tokens(rows):
    return [r.tokens for r in rows]


# ---------------------------------------------------------------- the invariants

@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_coefficient_zero_is_the_unsteered_generation(lm, sample):
    """A hook that adds 0 times the vector, at every position, repeats the hook-free
    generation token for token, greedy and sampled with the same seed."""
    ids, hook, n = _ids(lm), hooks.resid_post(lm.n_layers // 2), 16
    kw = dict(sample=sample, temperature=1.0, top_p=0.9, seed=7)
    plain = generate(lm, ids, n, **kw)
    zero = generate(lm, ids, n, hook, 0.0 * _vector(lm, hook)[None], **kw)
    assert _tokens(zero) == _tokens(plain) and len(plain[0].tokens) >= 1
    pushed = generate(lm, ids, n, hook, 50.0 * _vector(lm, hook)[None], **kw)
    assert _tokens(pushed) != _tokens(plain), "a large push must change the text"
    if sample:   # the sampler really samples: another seed gives another text
        other = generate(lm, ids, n, **{**kw, "seed": 8})
        assert _tokens(other) != _tokens(plain)


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_run_zero_rows_repeat_unsteered(tiny, sample):
    """In a whole run (all rows one batch), steered and control at 0 are the unsteered text,
    and the unsteered row equals a generation with no hook at all."""
    cfg = SteerConfig(prompt=PROMPT, sweep=(0.0, 3.0), alpha=30.0, max_new_tokens=12,
                      sample=sample, seed=3)
    r = run(tiny, cfg)
    base = r.arm("unsteered").row.tokens
    assert r.arm("steered", 0.0).row.tokens == base == r.arm("control", 0.0).row.tokens
    alone = generate(tiny, prompt_ids(tiny, cfg), 12, sample=sample, temperature=1.0,
                     top_p=cfg.top_p, seed=3)[0].tokens
    assert alone == base
    assert r.arm("steered", 30.0).row.tokens != base


def test_kv_cache_equals_full_recompute(lm):
    """32 greedy tokens with the KV cache equal 32 full recomputes of the whole sequence,
    steered (the hook also adds at the cached prompt positions) and not."""
    ids, hook = _ids(lm), hooks.resid_post(0)
    deltas = torch.stack([torch.zeros(lm.d_model), 3.0 * _vector(lm, hook)])
    cached = generate(lm, ids, 32, hook, deltas, use_cache=True)
    full = generate(lm, ids, 32, hook, deltas, use_cache=False)
    assert _tokens(cached) == _tokens(full)
    assert all(len(r.tokens) == 32 or r.finished for r in cached)
    np.testing.assert_allclose(cached[1].logp, full[1].logp, atol=2e-3)


def test_hooks_removed_after_an_exception_mid_generation(lm):
    before = n_hooks(lm)
    hook = hooks.mlp_out(0)
    seen = []

    def boom(step, rows):
        seen.append(step)
        if step == 3:
            assert n_hooks(lm) == before + 1     # the steering hook is live mid-generation
            raise RuntimeError("stop here")
    with pytest.raises(RuntimeError, match="stop here"):
        generate(lm, _ids(lm), 10, hook, _vector(lm, hook)[None], on_token=boom)
    assert seen == [1, 2, 3] and n_hooks(lm) == before
    plain = generate(lm, _ids(lm), 4)            # and the model is unsteered again
    assert _tokens(plain) == _tokens(generate(lm, _ids(lm), 4, hook, 0 * _vector(lm, hook)[None]))


def test_a_stop_ends_the_run_within_a_token_and_keeps_a_result(tiny):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=20, sweep=(1.0,))
    before, events = n_hooks(tiny), []

    def stop(p):
        events.append(p)
        if p.done == 5:
            raise Cancelled
    with pytest.raises(Cancelled):
        run(tiny, cfg, stop)
    assert n_hooks(tiny) == before
    assert [p.done for p in events][-1] == 5      # no token after the Stop
    kept = partial_result(tiny, cfg, events[-1].partial)
    assert not kept.complete and kept.steps_done == 5
    assert all(len(a.row.tokens) == 5 or a.row.finished for a in kept.arms)
    assert all(a.perplexity is not None and a.perplexity > 0 for a in kept.arms)
    json.dumps(kept.to_record())


def test_tokens_stream_as_progress(tiny):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=8, sweep=())
    events = []
    r = run(tiny, cfg, events.append)
    token_events = [p for p in events if p.unit == "token" and 0 < p.done < 8]
    texts = [p.partial.arm("steered").text for p in token_events]
    assert len(token_events) == 7
    assert all(len(p.partial.arm("steered").row.tokens) == p.done for p in token_events)
    assert texts[-1] != texts[0] and r.arm("steered").text.startswith(texts[-1][:1])
    assert events[-1].partial is r and r.complete


def test_the_hook_adds_the_vector_at_every_position(lm):
    """Captured after the steering hook, the activation is x + delta at every position, for
    each hook kind (and x itself where the row's delta is 0)."""
    ids = torch.tensor([_ids(lm)] * 2)
    for hook in (hooks.EMBED, hooks.resid_post(0), hooks.mlp_out(lm.n_layers - 1),
                 hooks.mlp_post(0)):
        v = _vector(lm, hook)
        deltas = torch.stack([torch.zeros_like(v), 2.0 * v])
        with torch.no_grad():
            base = hooks.run_with_hooks(lm, [hook], input_ids=ids, detach=True)[hook]
            with steering(lm, hook, deltas):
                pushed = hooks.run_with_hooks(lm, [hook], input_ids=ids, detach=True)[hook]
        if hook == hooks.EMBED:   # capture reads block 0's input before the steering pre-hook
            continue
        assert torch.equal(pushed[0], base[0])
        torch.testing.assert_close(pushed[1] - base[1], (2.0 * v).expand_as(base[1]),
                                   atol=1e-4, rtol=1e-4)


def test_the_hook_ignores_other_threads(tiny):
    ids = torch.tensor([_ids(tiny)])
    with torch.no_grad():
        base = tiny.model(input_ids=ids).logits
        out = {}
        hook = hooks.resid_post(0)
        with steering(tiny, hook, 100.0 * _vector(tiny, hook)[None]):
            t = threading.Thread(target=lambda: out.setdefault("x", tiny.model(input_ids=ids).logits))
            t.start()
            t.join()
            mine = tiny.model(input_ids=ids).logits
    assert torch.equal(out["x"], base) and not torch.allclose(mine, base)


# ---------------------------------------------------------------- vectors and numbers

def test_contrast_vector_is_the_mean_difference_of_hidden_states(lm):
    """Checked with HF's own hidden_states (entry L + 1 is block L's output), not lab.hooks."""
    layer = lm.n_layers // 2
    cfg = SteerConfig(prompt=PROMPT, hook=hooks.resid_post(layer),
                      contrast=" warm sun; summer|cold winter")
    vec = build_vector(lm, cfg, _ids(lm))
    pre = [lm.tokenizer.get_vocab()["<|endoftext|>"]]

    def mean(texts):
        out = []
        for t in texts:
            ids = pre + list(lm.tokenizer(t)["input_ids"])
            with torch.no_grad():
                hs = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
            out.append(hs[layer + 1][0, 1:].mean(0))
        return torch.stack(out).mean(0)
    expected = mean([" warm sun", " summer"]) - mean(["cold winter"])
    torch.testing.assert_close(vec.steer, expected, atol=1e-4, rtol=1e-4)
    assert vec.control.norm().item() == pytest.approx(vec.norm, rel=1e-5)
    assert abs(torch.nn.functional.cosine_similarity(vec.control, vec.steer, dim=0)) < 0.5


def test_random_control_is_seeded():
    v = torch.arange(10, dtype=torch.float32)
    assert torch.equal(random_like(v, 3), random_like(v, 3))
    assert not torch.equal(random_like(v, 3), random_like(v, 4))


def test_sae_latent_vector_is_its_decoder_row(tiny, tmp_path):
    from lab.sae.saelens import SAELensSAE, save_saelens
    sae = SAELensSAE(tiny.d_model, 16)
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(16, tiny.d_model))
        sae.W_enc.copy_(sae.W_dec.T)
    hook = hooks.mlp_out(1)
    save_saelens(sae, tmp_path / "sae", hook, tiny.name)
    cfg = SteerConfig(prompt=PROMPT, sae=str(tmp_path / "sae"), latent=5, max_new_tokens=4,
                      sweep=())
    vec = build_vector(tiny, cfg, _ids(tiny))
    assert vec.hook == hook and torch.equal(vec.steer, sae.W_dec[5])
    r = run(tiny, cfg)
    assert r.hook == hook and r.to_record()["sae_folder"] == str(tmp_path / "sae")
    with pytest.raises(ValueError, match="out of range"):
        build_vector(tiny, SteerConfig(sae=str(tmp_path / "sae"), latent=16), _ids(tiny))
    with pytest.raises(ValueError, match="the SAE reads"):
        build_vector(tiny, SteerConfig(sae=str(tmp_path / "sae"), latent=1,
                                       hook=hooks.resid_post(0)), _ids(tiny))


def test_numbers_target_mass_perplexity_and_scores(tiny):
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=10, sweep=(2.0,), target=("the", "river"))
    r = run(tiny, cfg)
    un = r.arm("unsteered")
    # the cached generation's log-probs equal the unsteered full forward's for its own tokens
    np.testing.assert_allclose(un.row.logp, un.logp_unsteered, atol=1e-4)
    # target mass by hand at the first new token
    ids = torch.tensor([prompt_ids(tiny, cfg)])
    with torch.no_grad():
        p = torch.softmax(tiny.model(input_ids=ids).logits[0, -1], -1)
    targets = target_token_ids(tiny.tokenizer, cfg.target)
    assert un.row.p_target[0] == pytest.approx(float(p[targets].sum()), rel=1e-4)
    for a in r.arms:
        assert 0.0 <= a.target_mass <= 1.0
        assert a.perplexity == pytest.approx(math.exp(-np.mean(a.logp_unsteered)))
    c, t = r.frames()["continuations"], r.frames()["tokens"]
    assert list(c.columns) == ["arm", "alpha", "text", "target_mass", "perplexity"]
    assert list(t.columns) == ["arm", "alpha", "pos", "token", "logp", "logp_unsteered"]
    assert len(c) == 1 + 2 * len(cfg.alphas()) == 3 and set(c["arm"]) == {"unsteered", "steered", "control"}
    assert len(t) == sum(len(a.row.tokens) for a in r.arms) and t["logp_unsteered"].notna().all()


def test_target_token_ids_are_word_starts(smol):
    ids = target_token_ids(smol.tokenizer, ["love"])
    assert smol.tokenizer(" love")["input_ids"][0] in ids
    assert smol.tokenizer(" Love")["input_ids"][0] in ids


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kw, words", [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"hook": "blocks.x.nope"}, "unknown hook"),
    ({"alpha": float("nan")}, "alpha must be a finite number"),
    ({"sweep": (1.0, float("inf"))}, "sweep coefficient"),
    ({"max_new_tokens": 0}, "max_new_tokens must be"),
    ({"contrast": "|Hate"}, "side A is empty"),
    ({"contrast": " Love|  "}, "side B is empty"),
    ({"contrast": " Love; |Hate"}, "prompt 2 of side A is empty"),
    ({"contrast": "Love"}, "two sides"),
    ({"sae": "default"}, "needs a latent"),
    ({"target": ()}, "target word list is empty"),
    ({"top_p": 0.0}, "top_p must be"),
])
def test_bad_config_is_one_sentence(kw, words):
    with pytest.raises(ValueError, match=words) as e:
        SteerConfig(**kw)
    assert "\n" not in str(e.value)


def test_bad_input_at_run_is_one_sentence(tiny):
    with pytest.raises(ValueError, match="out of range"):
        run(tiny, SteerConfig(hook="blocks.9.hook_resid_post"))
    with pytest.raises(ValueError, match="context"):
        run(tiny, SteerConfig(max_new_tokens=256, prompt="word " * 900))


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "lab", "steer", "--model", "tiny-gpt2",
                           "--device", "cpu", "--threads", "1", "--quiet", *argv],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv", [
    ["--prompt", ""], ["--hook", "blocks.7.hook_resid_post"], ["--alpha", "nan"],
    ["--max-new-tokens", "0"], ["--max-new-tokens", "256", "--prompt", "word " * 900],
    ["--contrast", " Love|"],
], ids=["empty-prompt", "unknown-hook", "alpha-nan", "zero-tokens", "above-context",
        "empty-contrast"])
def test_cli_bad_input_exits_2_with_one_line(argv):
    r = _cli(*argv)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_out_writes_continuations_and_tokens(tmp_path):
    r = _cli("--prompt", "Once upon a time", "--contrast", " Love| Hate", "--alpha", "3",
             "--max-new-tokens", "5", "--sweep", "0,1", "--sample", "--seed", "2",
             "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    c = pd.read_csv(tmp_path / "continuations.csv")
    t = pd.read_csv(tmp_path / "tokens.csv", keep_default_na=False)
    assert list(c.columns) == ["arm", "alpha", "text", "target_mass", "perplexity"]
    assert list(t.columns) == ["arm", "alpha", "pos", "token", "logp", "logp_unsteered"]
    assert sorted(c["alpha"][c["arm"] == "steered"]) == [0.0, 1.0, 3.0]
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["config"]["sample"] is True and record["config"]["seed"] == 2
    assert "steered beats control" in r.stdout


def test_the_shared_runner_queues_it_and_a_detach_stops_it_within_a_token(tiny):
    """In a class: the job goes through lab.runner like any other; when its only session
    leaves (Stop), the next token's progress report ends it, hooks removed."""
    import time
    from lab.runner import Runner
    runner = Runner(load=lambda m, d: tiny, workers=1, threads_per_job=1)
    before = n_hooks(tiny)
    cfg = SteerConfig(prompt=PROMPT, max_new_tokens=256, sweep=tuple(float(a) for a in range(12)))
    handle = runner.submit(tiny.name, "cpu", cfg, "s1")
    t0 = time.monotonic()
    while (handle.progress is None or handle.progress.done < 3) and time.monotonic() - t0 < 60:
        time.sleep(0.001)
    at = handle.progress.done
    handle.detach()
    assert handle.wait(30)
    assert handle.status == "cancelled", handle.status
    assert handle.progress.done <= at + 2 < 256     # a token or so after the Stop, not the end
    assert n_hooks(tiny) == before
