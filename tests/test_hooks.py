import threading

import pytest
import torch

from lab.hooks import capture, forward, hook_names, parse_hook, resid_post, run_with_hooks

TEXT = "The capital of France is Paris, and the capital of Hungary is Budapest."


def _hook_ids(lm):
    return {(name, kind, hid) for name, mod in lm.model.named_modules()
            for kind, d in (("f", mod._forward_hooks), ("p", mod._forward_pre_hooks)) for hid in d}


def _parity(lm):
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        hs = lm.model(ids, output_hidden_states=True).hidden_states
        names = ["hook_embed"] + [f"blocks.{L}.hook_resid_post" for L in range(lm.n_layers)]
        got = run_with_hooks(lm, names, input_ids=ids, stop_early=False)
        assert torch.equal(got["hook_embed"], hs[0])
        for L in range(lm.n_layers - 1):
            assert torch.equal(got[f"blocks.{L}.hook_resid_post"], hs[L + 1]), L
        last = got[f"blocks.{lm.n_layers - 1}.hook_resid_post"]
        assert not torch.allclose(last, hs[-1])  # HF's last entry has the final norm...
        normed = lm.arch.final_norm_of(lm.model)(last)
        torch.testing.assert_close(normed, hs[-1], rtol=0, atol=1e-6)  # ...ours is raw


def test_parity_tiny(tiny):
    _parity(tiny)


def test_parity_smollm2(smol):
    _parity(smol)


@pytest.mark.parametrize("model", ["tiny", "smol"])
def test_mlp_hooks_equal_module_outputs(model, request):
    lm = request.getfixturevalue(model)
    L = 1
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids
    seen = {}
    mlp = lm.arch.mlp_of(lm.model, L)
    h1 = mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o))
    h2 = lm.arch.mlp_out_proj_of(lm.model, L).register_forward_pre_hook(
        lambda m, a: seen.__setitem__("post", a[0]))
    try:
        with torch.no_grad():
            got = run_with_hooks(lm, [f"blocks.{L}.hook_mlp_out", f"blocks.{L}.mlp.hook_post"],
                                 input_ids=ids)
    finally:
        h1.remove()
        h2.remove()
    assert torch.equal(got[f"blocks.{L}.hook_mlp_out"], seen["out"])
    assert torch.equal(got[f"blocks.{L}.mlp.hook_post"], seen["post"])
    assert got[f"blocks.{L}.mlp.hook_post"].shape[-1] == lm.d_mlp
    if lm.arch.family == "gpt2":  # hook_post is GELU(c_fc(ln_2(x))): check from scratch
        block = lm.arch.blocks_of(lm.model)[L]
        with torch.no_grad():
            x = run_with_hooks(lm, [f"blocks.{L - 1}.hook_resid_post"], input_ids=ids)
            resid = x[f"blocks.{L - 1}.hook_resid_post"]
            mid = resid + block.attn(block.ln_1(resid))[0]
            expect = block.mlp.act(block.mlp.c_fc(block.ln_2(mid)))
        torch.testing.assert_close(got[f"blocks.{L}.mlp.hook_post"], expect, rtol=1e-5, atol=1e-5)


def test_stopped_forward_equals_full(tiny, smol):
    for lm in (tiny, smol):
        ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids
        name = "blocks.1.hook_resid_post"
        with torch.no_grad():
            full = run_with_hooks(lm, [name], input_ids=ids, stop_early=False)[name]
            calls = []
            last = lm.arch.blocks_of(lm.model)[-1]
            h = last.register_forward_hook(lambda *a: calls.append(1))
            try:
                stopped = run_with_hooks(lm, [name], input_ids=ids, stop_early=True)[name]
            finally:
                h.remove()
        assert torch.equal(full, stopped)
        assert calls == []  # the last block never ran


def test_no_hooks_remain_also_after_exception(tiny):
    before = _hook_ids(tiny)
    ids = tiny.tokenizer(TEXT, return_tensors="pt").input_ids
    with capture(tiny, hook_names(tiny)) as cache:
        assert _hook_ids(tiny) != before
        forward(tiny, input_ids=ids)
    assert len(cache) == len(hook_names(tiny))
    assert _hook_ids(tiny) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture(tiny, ["blocks.0.hook_resid_post"], stop_early=True):
            raise RuntimeError("boom")
    assert _hook_ids(tiny) == before


def test_bad_hook_names(tiny):
    with pytest.raises(ValueError, match=r"0\.\.2"):
        parse_hook(tiny, "blocks.3.hook_resid_post")
    with pytest.raises(ValueError, match="valid"):
        parse_hook(tiny, "blocks.0.attn.hook_z")


def test_inputs_embeds_and_gradients_flow(tiny):
    x = torch.randn(2, 5, tiny.d_model, requires_grad=True)
    out = run_with_hooks(tiny, ["blocks.1.hook_resid_post"], inputs_embeds=x)
    out["blocks.1.hook_resid_post"][..., 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("model", ["tiny", "smol"])
def test_two_threads_never_see_each_others_activations(model, request):
    """Two sessions share one cached model. Ordered by events, not by timing: thread B's
    forward runs while thread A's capture is open, and A's capture must stay empty; then A's
    own forward fills it with exactly its own activations."""
    lm = request.getfixturevalue(model)
    name = resid_post(1)
    ids = {i: lm.tokenizer(t, return_tensors="pt").input_ids
           for i, t in enumerate(["Pálinka is a fruit brandy from Hungary.",
                                  "Light-emitting diodes turn current into light."])}
    expected = {}

    def alone():   # in a thread too: new threads share a torch thread count, the main one may not
        with torch.no_grad():
            expected[0] = run_with_hooks(lm, [name], input_ids=ids[0])[name]
    ref = threading.Thread(target=alone)
    ref.start()
    ref.join()
    a_open, b_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def thread_a():
        with torch.no_grad(), capture(lm, [name], stop_early=True) as cache:
            a_open.set()
            assert b_done.wait(60), "thread B never ran"
            seen["after_b"] = dict(cache)          # B's forward ran with A's hooks live
            forward(lm, input_ids=ids[0])
            seen["own"] = cache.get(name)

    def thread_b():
        assert a_open.wait(60)
        with torch.no_grad():
            seen["b_out"] = forward(lm, input_ids=ids[1])
        b_done.set()

    threads = [threading.Thread(target=f) for f in (thread_a, thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert seen["b_out"] is not None, "B's forward was stopped by A's stop hook"
    assert seen["after_b"] == {}, "A's capture recorded B's forward"
    assert torch.equal(seen["own"], expected[0])


# ---------------------------------------------------------------- hook points as objects

def test_a_hook_point_is_parsed_without_a_model_and_checked_against_one(tiny):
    from lab.hooks import EMBED, HookPoint, mlp_out, mlp_post
    assert HookPoint.parse(EMBED) == HookPoint(EMBED, "embed", -1)
    assert HookPoint.parse("blocks.7.mlp.hook_post") == HookPoint(mlp_post(7), "mlp_post", 7)
    assert HookPoint.parse(mlp_out(2)).check(tiny).width(tiny) == tiny.d_model
    assert HookPoint.parse(mlp_post(1)).width(tiny) == tiny.d_mlp
    for bad in ("blocks.1.resid", "blocks.-1.hook_resid_post", "blocks.01.hook_resid_post",
                "blocks.0.attn.hook_pattern", "", None):
        with pytest.raises(ValueError, match="hook must be hook_embed or blocks.L.hook_resid_post"):
            HookPoint.parse(bad)
    with pytest.raises(ValueError, match=r"layer 7 out of range for tiny-gpt2: valid 0\.\.2"):
        HookPoint.parse(mlp_post(7)).check(tiny)
    assert parse_hook(tiny, HookPoint.parse(mlp_out(2))) == HookPoint.parse(mlp_out(2))


def test_saelens_names_map_through_lab_hooks():
    from lab import hooks
    assert hooks.from_saelens("blocks.0.hook_resid_pre") == hooks.EMBED
    assert hooks.from_saelens("blocks.3.hook_resid_pre") == resid_post(2)
    assert hooks.from_saelens(hooks.mlp_post(1)) == hooks.mlp_post(1)
    assert hooks.saelens_input_layer("blocks.4.hook_resid_pre") == 4
    assert hooks.saelens_input_layer(resid_post(4)) is None
    assert hooks.to_saelens(hooks.EMBED) == ("blocks.0.hook_resid_pre", 0)
    for bad in ("hook_embed", "blocks.1.attn.hook_z"):
        with pytest.raises(ValueError, match="cannot splice"):
            hooks.from_saelens(bad)


def _code_strings(source: str) -> list[str]:
    """The string constants of a module's code: docstrings (prose) left out."""
    import ast
    tree, docs = ast.parse(source), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.body and isinstance(node.body[0], ast.Expr):
            docs.add(id(node.body[0].value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_hook_names_are_spelled_only_in_lab_hooks():
    """No other module of lab/, ui/ or views/ holds a hook-name pattern or a name template in
    its code: they call lab.hooks (help texts and prose may still name a hook for a student)."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    spelled = re.compile(r"\{layer\}\.(hook_|mlp\.hook|attn\.hook)|hook_resid_post\||"
                         r"\\.\(hook_|mlp\\\.hook_post")
    offenders = [str(p.relative_to(root)) for d in ("lab", "ui", "views")
                 for p in sorted((root / d).rglob("*.py")) if p.name != "hooks.py"
                 if any(spelled.search(t) for t in _code_strings(p.read_text(encoding="utf-8")))]
    assert offenders == []
    assert spelled.search(r"^blocks\.(\d+)\.(hook_resid_post|hook_mlp_out)$")   # what it catches
