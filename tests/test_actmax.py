"""lab.actmax on tiny-gpt2 (mechanics) and one SmolLM2 parity check; the CLI; both pages (AppTest)."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import app_test
from lab import actmax
from lab.actmax import ActMaxConfig


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # These workloads are tiny: on a busy 2-core machine two OpenMP threads spin-wait on
    # each other and run ~20x slower than one. Restored afterwards for other test files.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg_tiny(**kw) -> ActMaxConfig:
    return ActMaxConfig(**{"layer": 2, "dim": 5, "steps": 40, "lr": 1e-2, **kw})


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("kw, msg", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"steps": -5}, "steps must be an integer >= 1"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"lr": -1e-3}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"restarts": 0}, "restarts must be an integer 1..64"),
    ({"restarts": 65}, "restarts must be an integer 1..64"),
    ({"l2": -1.0}, "l2 must be a finite number >= 0"),
    ({"reduce": "max"}, "reduce must be one of"),
    ({"layer": -1}, "layer must be an integer >= 0"),
    ({"dim": 2.5}, "dim must be an integer"),
])
def test_bad_config_says_the_valid_range(kw, msg):
    with pytest.raises(ValueError, match=msg):
        cfg_tiny(**kw)


def test_model_ranges(tiny):
    with pytest.raises(ValueError, match=r"layer 4 out of range for tiny-gpt2: valid 0\.\.3"):
        cfg_tiny(layer=4).check(tiny)
    with pytest.raises(ValueError, match=r"dim 64 out of range for tiny-gpt2: valid 0\.\.63"):
        cfg_tiny(dim=64).check(tiny)
    assert cfg_tiny(layer=3, dim=63).check(tiny).hook == "blocks.2.hook_resid_post"
    assert cfg_tiny(layer=0).hook == "hook_embed"


# ---------------------------------------------------------------- the forward

def _hf_hidden(name, x):
    """HF's own hidden_states, from a private copy: `output_hidden_states` leaves HF's
    recorder hooks on the model, and the shared fixtures must stay hook-free."""
    from lab.models import load_model
    ref = load_model(name, "cpu")
    return ref.model(inputs_embeds=x, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_stopped_forward_equals_hf_hidden_states(tiny, layer):
    x = torch.randn(2, 5, tiny.d_model) * 0.1
    ours = actmax.layer_activations(tiny, layer, inputs_embeds=x)
    ref = _hf_hidden("tiny-gpt2", x)
    if layer < tiny.n_layers:
        torch.testing.assert_close(ours, ref[layer], rtol=1e-5, atol=1e-6)
    else:  # the last entry: HF applies the final norm, we keep the raw residual
        assert not torch.allclose(ours, ref[layer], atol=1e-3)
        torch.testing.assert_close(tiny.arch.final_norm_of(tiny.model)(ours), ref[layer],
                                   rtol=1e-5, atol=1e-6)


def test_stopped_forward_equals_hf_on_smollm2(smol):
    # Llama family: no position vector added, rotary inside attention; check the parity too.
    x = torch.randn(2, 5, smol.d_model) * 0.13
    ref = _hf_hidden("smollm2-135m", x)
    for layer in (0, 4, 8):
        torch.testing.assert_close(actmax.layer_activations(smol, layer, inputs_embeds=x),
                                   ref[layer], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actmax.layer_activations(smol, 0, inputs_embeds=x), x)


def test_forward_stops_after_the_target_block(tiny):
    calls = []
    handle = tiny.arch.blocks_of(tiny.model)[2].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        actmax.layer_activations(tiny, 2, inputs_embeds=torch.randn(1, 5, tiny.d_model))
        assert calls == []          # block 2 never ran for hidden_states[2]
        actmax.layer_activations(tiny, 3, inputs_embeds=torch.randn(1, 5, tiny.d_model))
        assert calls == [1]
    finally:
        handle.remove()


def test_gpt2_adds_position_embeddings_to_inputs_embeds(tiny):
    x = torch.randn(1, 5, tiny.d_model)
    wpe = tiny.model.transformer.wpe.weight[:5]
    torch.testing.assert_close(actmax.layer_activations(tiny, 0, inputs_embeds=x)[0], x[0] + wpe)


# ---------------------------------------------------------------- optimization

def test_final_activation_clearly_exceeds_initial(tiny):
    res = actmax.maximize(tiny, cfg_tiny(restarts=2))
    spread = res.gap.random.std()            # how much the dim varies over random real inputs
    assert (res.final - res.initial > 20 * spread).all(), (res.initial, res.final, spread)
    assert (res.final > res.gap.random.max()).all()
    assert (res.gain > 10).all()
    # the history: steps 0..steps for every restart, target rising overall
    assert list(res.history.columns) == ["step", "restart", "target", "neighbours", "loss"]
    assert len(res.history) == (40 + 1) * 2 and res.history.step.max() == 40
    assert res.steps_done == 40 and res.embeds.shape == (2, 5, 64)
    assert not any(p.grad is not None for p in tiny.model.parameters())   # weights stay frozen
    assert res.history.neighbours.notna().all()


def test_batch_of_restarts_equals_restarts_one_by_one(tiny):
    cfg = cfg_tiny(restarts=3, steps=25)
    starts = actmax.initial_embeddings(tiny, cfg)
    batch_x, batch_hist = actmax.optimize(tiny, cfg)
    for r in range(3):
        x, hist = actmax.optimize(tiny, replace(cfg, restarts=1), start=starts[r:r + 1])
        torch.testing.assert_close(x[0], batch_x[r], rtol=1e-4, atol=1e-6)
        ours = batch_hist[batch_hist.restart == r].target.to_numpy()
        np.testing.assert_allclose(hist.target.to_numpy(), ours, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(batch_x[0], batch_x[1])   # restarts really differ


def test_restart_starts_do_not_depend_on_how_many_run(tiny):
    a = actmax.initial_embeddings(tiny, cfg_tiny(restarts=2))
    b = actmax.initial_embeddings(tiny, cfg_tiny(restarts=5))
    torch.testing.assert_close(a, b[:2])
    assert not torch.allclose(b[0], b[1])
    c = actmax.initial_embeddings(tiny, cfg_tiny(restarts=2, seed=1))
    assert not torch.allclose(a, c)
    std = tiny.W_E.std().item()
    assert abs(b.std().item() - std) < 0.1 * std     # scaled like the real embeddings


def test_reduce_last_uses_the_last_position(tiny):
    cfg = cfg_tiny(reduce="last", steps=3)
    x0 = actmax.initial_embeddings(tiny, cfg)
    _, hist = actmax.optimize(tiny, cfg)
    h = actmax.layer_activations(tiny, 2, inputs_embeds=x0)
    assert hist.target.iloc[0] == pytest.approx(h[0, -1, 5].item(), rel=1e-5)
    assert hist.target.iloc[0] != pytest.approx(h[0, :, 5].mean().item(), rel=1e-3)


def test_on_step_and_a_stop_keep_a_consistent_partial_result(tiny):
    cfg = cfg_tiny(steps=30)
    rec = actmax.Recorder(cfg, tiny.name)

    class Stop(Exception):
        pass

    def on_step(info):
        rec.add(info)
        if info.step == 7:
            raise Stop   # what Streamlit does when the user clicks Stop

    def hooks():
        return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tiny.model.modules()]
    before = hooks()
    with pytest.raises(Stop):
        actmax.optimize(tiny, cfg, on_step=on_step)
    assert hooks() == before          # our hooks are removed on the way out
    res = actmax.summarize(tiny, cfg, rec.embeds, rec.history, rec.seconds)
    assert res.steps_done == 7 and list(res.history.step.unique()) == list(range(8))
    # the kept embeddings are the ones whose activation was recorded last
    again = actmax.layer_activations(tiny, 2, inputs_embeds=rec.embeds)[:, :, 5].mean(1)
    assert res.final[0] == pytest.approx(again.item(), rel=1e-5)
    with pytest.raises(ValueError, match="nothing was computed"):
        actmax.summarize(tiny, cfg, rec.embeds, rec.history.iloc[0:0])


def test_on_step_is_called_once_per_forward(tiny):
    seen = []
    actmax.optimize(tiny, cfg_tiny(steps=6, restarts=2), on_step=seen.append)
    assert [s.step for s in seen] == list(range(7))
    assert seen[0].target.shape == (2,) and seen[0].embeds.shape == (2, 5, 64)


# ---------------------------------------------------------------- decoding and the gap meter

def test_a_tokens_own_embedding_decodes_to_itself(tiny):
    ids = torch.tensor([0, 3, 100, 511])
    got, cos = actmax.nearest(tiny, tiny.W_E[ids] * 3.0)      # scale does not matter
    assert got[:, 0].tolist() == ids.tolist()
    np.testing.assert_allclose(cos[:, 0].numpy(), 1.0, atol=1e-5)
    assert (cos[:, 1] < 0.999).all() and (cos.diff(dim=1) <= 0).all()
    table = actmax.nearest_tokens(tiny, tiny.W_E[ids].reshape(1, 4, -1))
    top = table[table["rank"] == 1]
    assert top.token_id.tolist() == ids.tolist()
    assert top.token.tolist() == actmax.token_texts(tiny, ids)
    assert len(table) == 4 * actmax.TOP_K


def test_gap_meter_feeds_the_nearest_tokens_back(tiny):
    res = actmax.maximize(tiny, cfg_tiny(restarts=2, steps=20))
    ids = torch.as_tensor(res.gap.snapped_ids)
    top = res.nearest[res.nearest["rank"] == 1].sort_values(["restart", "position"])
    assert ids.reshape(-1).tolist() == top.token_id.tolist()
    direct = actmax.layer_activations(tiny, 2, input_ids=ids)[:, :, 5].mean(1)
    np.testing.assert_allclose(res.gap.snapped, direct.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert len(res.gap.random) == actmax.N_RANDOM and res.gap.random.std() > 0
    np.testing.assert_allclose(res.gap.optimum, res.final)
    assert set(res.gap.frame().source) == {"optimized embeddings", "nearest tokens", "random tokens"}


# ---------------------------------------------------------------- reproducibility

def test_token_statistics_on_a_hand_made_case():
    ids = np.array([[1, 2, 3], [1, 4, 4], [5, 6, 7]])
    e = np.eye(2)
    vectors = np.stack([np.stack([e[0]] * 3), np.stack([e[0]] * 3), np.stack([e[1]] * 3)])
    s = actmax.token_statistics(ids, vectors, [f"t{i}" for i in ids.ravel()])
    assert s.n_total == 9 and s.n_unique == 7
    assert s.frequencies.token_id.tolist()[:2] == [1, 4]        # most common first, ties by id
    assert s.frequencies["count"].tolist() == [2, 2, 1, 1, 1, 1, 1]
    assert s.frequencies.token.tolist()[:2] == ["t1", "t4"]
    assert s.frequencies.frequency.sum() == pytest.approx(1.0)
    assert s.jaccard[0, 1] == pytest.approx(1 / 4)              # {1} of {1,2,3,4}
    assert s.jaccard[0, 2] == 0 and s.jaccard[1, 1] == 1
    assert s.mean_jaccard == pytest.approx((1 / 4) * 2 / 6)
    np.testing.assert_allclose(s.cosine, [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-12)
    assert s.mean_cosine == pytest.approx(2 / 6)


def test_reproducibility_of_a_run_and_its_null_control(tiny):
    res = actmax.maximize(tiny, cfg_tiny(restarts=4, steps=30))
    rep = actmax.reproducibility(tiny, res)
    top = res.nearest[res.nearest["rank"] == 1].sort_values(["restart", "position"])
    assert rep.optimized.token_ids.ravel().tolist() == top.token_id.tolist()
    assert rep.optimized.n_total == 20 and rep.null.n_total == 20
    assert rep.optimized.n_unique == len(np.unique(top.token_id))
    # the optimized restarts share a direction (same target); random vectors do not
    assert rep.optimized.mean_cosine > rep.null.mean_cosine + 0.2
    summary = rep.summary()
    assert summary.vectors.tolist() == ["optimized", "null control"]
    assert len(rep.pairs()) == 2 * 16
    null = actmax.random_embeddings(tiny, 0, 4, 5, stream=1)
    assert not torch.allclose(null, actmax.initial_embeddings(tiny, res.config))
    # where each restart started, how far it moved, and whether the moves agree
    torch.testing.assert_close(res.start, actmax.initial_embeddings(tiny, res.config))
    moved = ((res.embeds - res.start).norm(dim=-1) / res.start.norm(dim=-1)).mean(-1)
    np.testing.assert_allclose(res.moved, moved.numpy(), rtol=1e-5)
    start_ids = actmax.nearest(tiny, res.start.reshape(20, -1), 1)[0].reshape(4, 5).numpy()
    assert rep.same_as_start == int((start_ids == rep.optimized.token_ids).sum())
    np.testing.assert_allclose(np.diag(rep.step_cosine), 1.0, atol=1e-9)
    assert rep.mean_step_cosine > 0.5       # same target, same gradient direction
    json.dumps(rep.to_json())


# ---------------------------------------------------------------- the CLI

def test_cli_actmax_and_repro_json(capsys):
    from lab.cli import main
    assert main(["actmax", "--model", "tiny-gpt2", "--layer", "2", "--dim", "5", "--steps", "5",
                 "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["layer"] == 2 and out["model"] == "tiny-gpt2" and out["steps_done"] == 5
    assert len(out["restarts"]) == 1 and out["gap_meter"]["optimum_mean"] == out["restarts"][0]["final"]
    assert main(["repro", "--model", "tiny-gpt2", "--layer", "1", "--dim", "3", "--steps", "5",
                 "--restarts", "3", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    summary = out["reproducibility"]["summary"]
    assert [s["vectors"] for s in summary] == ["optimized", "null control"]
    assert summary[0]["decoded"] == 15 and len(out["reproducibility"]["jaccard"]) == 3


@pytest.mark.parametrize("args, msg", [
    (["actmax", "--model", "tiny-gpt2", "--layer", "7"], "valid 0..3"),
    (["actmax", "--model", "tiny-gpt2", "--layer", "2", "--dim", "90"], "valid 0..63"),
    (["actmax", "--steps", "0"], "steps must be"),
    (["repro", "--lr", "inf"], "lr must be"),
    (["repro", "--restarts", "500"], "restarts must be an integer 1..64"),
])
def test_cli_bad_input_is_one_line(capsys, args, msg):
    from lab.cli import main
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- the pages (AppTest)

def _spec(at, i=0):
    return json.loads(at.get("vega_lite_chart")[i].proto.spec)


def _chart_data(at, i=0):
    """The first dataset of chart i (Streamlit ships chart data as Arrow, beside the spec)."""
    import pyarrow as pa
    proto = at.get("vega_lite_chart")[i].proto
    return pa.ipc.open_stream(proto.datasets[0].data.data).read_pandas()


def test_activation_max_page_runs_and_shows_tokens_and_gap():
    at = app_test("views/activation_max.py")
    assert not at.exception
    assert at.slider(key="am_layer").value == 3        # default 4 clamped to tiny's range
    assert at.slider(key="am_dim").value == 63
    at.slider(key="am_layer").set_value(2)
    at.slider(key="am_dim").set_value(5)
    at.slider(key="am_steps").set_value(20)
    at.select_slider(key="am_lr").set_value(1e-2)
    at.button(key="am_run").click().run()
    assert not at.exception, at.exception
    assert not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Final activation"]) > float(metrics["Start activation"])
    assert 0 < float(metrics["Best cosine to a real token"]) <= 1
    assert "Their nearest tokens, fed back" in metrics
    curves = _spec(at, 0)
    assert curves["encoding"]["x"]["title"] == "Adam step (updates applied)"
    data = _chart_data(at, 0)
    assert data.step.max() == 20 and set(data.series) == {"dim 5 (target)", "neighbouring dims (mean)"}
    tokens = at.dataframe[0].value
    assert len(tokens) == 5 and "nearest 1" in tokens.columns
    assert any("20 of 20 steps" in c.value for c in at.caption)


def test_reproducibility_page_runs_with_null_control():
    at = app_test("views/reproducibility.py")
    assert not at.exception
    assert at.slider(key="rp_restarts").value == 10
    at.slider(key="rp_layer").set_value(2)
    at.slider(key="rp_dim").set_value(5)
    at.slider(key="rp_steps").set_value(10)
    at.slider(key="rp_restarts").set_value(3)
    at.button(key="rp_run").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Unique tokens, optimized"].endswith("of 15")
    assert metrics["Unique tokens, null control"].endswith("of 15")
    specs = [_spec(at, i) for i in range(len(at.get("vega_lite_chart")))]
    assert len(specs) == 5            # curves, unique counts, frequencies, Jaccard, cosine
    assert set(_chart_data(at, 0).restart) == {0, 1, 2}
    unique = _chart_data(at, 1).set_index("vectors")
    assert unique.loc["optimized", "decoded"] == 15


def test_pages_clamp_out_of_range_values_after_a_model_switch():
    at = app_test("views/activation_max.py", model="smollm2-135m")
    at.slider(key="am_layer").set_value(30)
    at.slider(key="am_dim").set_value(575).run()      # valid for SmolLM2, not for tiny-gpt2
    at.session_state["model_name"] = "tiny-gpt2"   # what the sidebar's model picker sets
    at.run()
    assert not at.exception, at.exception
    assert at.slider(key="am_dim").value == 63 and at.slider(key="am_layer").value == 3
