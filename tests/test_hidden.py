"""lab.hidden: statistics against numpy/HF references, bad input, the contract (config, run,
record), the CLI, and the page (AppTest)."""
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch

import lab.hooks
from conftest import app_test
from lab import hidden as H
from lab.charts import hidden as charts
from lab.cli import main as cli_main
from lab.experiment import Progress

SHORT = "The cat sat on the mat. It was warm, and the cat was happy."
PAGE = "views/hidden_states.py"


def synthetic(n_states=4, n_tokens=9, d_model=6, seed=0) -> H.HiddenStates:
    """Hand-made states: random values, one planted outlier dimension per state."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_states, n_tokens, d_model)).astype(np.float32)
    values[:, 1:, 3] *= 40.0  # dimension 3 is huge from token 1 on
    labels = ("embed", *(f"block {i}" for i in range(n_states - 2)), "final norm")
    tokens = tuple(f"t{i}" for i in range(n_tokens))
    return H.HiddenStates("synthetic", values, labels, tuple(range(n_tokens)), tokens, " ".join(tokens),
                          n_tokens, n_tokens, 0.0)


@pytest.fixture(scope="module")
def tiny_states(tiny):
    return H.capture_states(tiny, H.default_text())


# ---------------------------------------------------------------- the forward pass

def test_one_forward_pass_captures_every_state(tiny):
    calls = []
    handle = tiny.arch.body_of(tiny.model).register_forward_hook(lambda *a: calls.append(1))
    try:
        states = H.capture_states(tiny, SHORT)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert states.values.shape == (tiny.n_layers + 2, len(tiny.tokenizer(SHORT)["input_ids"]), tiny.d_model)
    assert states.labels == ("embed", "block 0", "block 1", "block 2", "final norm")


@pytest.mark.parametrize("which", ["tiny", pytest.param("smol", marks=pytest.mark.slow)])
def test_states_match_hf_hidden_states(which, request):
    """Parity with HF's own recorder: raw states equal hidden_states[0..n-1] and the
    final-norm state equals HF's last entry (which has the norm applied); the raw last differs."""
    lm = request.getfixturevalue(which)
    states = H.capture_states(lm, SHORT)
    ids = torch.tensor([states.token_ids])
    with torch.no_grad():
        ref = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    n = lm.n_layers
    for i in range(n):
        np.testing.assert_allclose(states.values[i], ref[i][0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states.values[n + 1], ref[n][0].numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(states.values[n], ref[n][0].numpy(), atol=1e-3)


def test_text_longer_than_context_is_truncated(tiny):
    long_text = " ".join([H.default_text()] * 3)
    n_text = len(tiny.tokenizer(long_text)["input_ids"])
    assert n_text > tiny.n_ctx
    states = H.capture_states(tiny, long_text)
    assert states.n_tokens == tiny.n_ctx and states.n_text_tokens == n_text and states.truncated
    cut = H.capture_states(tiny, SHORT, max_tokens=5)
    assert cut.n_tokens == 5 and cut.truncated
    assert cut.used_text == tiny.tokenizer.decode(cut.token_ids)
    assert not H.capture_states(tiny, SHORT).truncated


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \n"])
def test_empty_text_is_one_sentence(tiny, text):
    with pytest.raises(ValueError, match="^The text is empty"):
        H.capture_states(tiny, text)


def test_decode_upload_accepts_text_rejects_binary():
    assert H.decode_upload("Grüße, café\n".encode("utf-8")) == "Grüße, café\n"
    assert H.decode_upload(b"\xef\xbb\xbfhello") == "hello"  # BOM dropped
    for data in (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "café".encode("latin-1"), bytes(range(1, 32)) * 10):
        with pytest.raises(ValueError) as e:
            H.decode_upload(data)
        assert len(str(e.value).splitlines()) == 1 and str(e.value).endswith(".")


# ---------------------------------------------------------------- statistics

def test_r2_symmetric_unit_diagonal_in_unit_interval(tiny_states):
    r2 = H.analyze(tiny_states).matrix("r2").to_numpy()
    assert r2.shape == (tiny_states.n_states, tiny_states.n_states)
    np.testing.assert_allclose(r2, r2.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(r2), 1.0)
    assert (r2 >= 0).all() and (r2 <= 1).all()


def test_covariance_and_r2_equal_numpy_on_a_small_case():
    states = synthetic()
    result = H.analyze(states)
    flat = states.values[:, 1:, :].reshape(states.n_states, -1).astype(np.float64)
    np.testing.assert_allclose(result.matrix("cov").to_numpy(), np.cov(flat), rtol=1e-10)
    np.testing.assert_allclose(result.matrix("r2").to_numpy(), np.corrcoef(flat) ** 2, rtol=1e-10)


def test_summary_moments_equal_numpy():
    states = synthetic(n_tokens=40)
    s = H.analyze(states, H.HiddenConfig(keep_first_token=True)).summary
    flat = states.values.reshape(states.n_states, -1).astype(np.float64)
    centered = flat - flat.mean(1, keepdims=True)
    np.testing.assert_allclose(s["mean"], flat.mean(1), atol=1e-12)
    np.testing.assert_allclose(s["std"], flat.std(1), rtol=1e-10)
    np.testing.assert_allclose(s["min"], flat.min(1))
    np.testing.assert_allclose(s["max"], flat.max(1))
    kurt = (centered ** 4).mean(1) / flat.var(1) ** 2 - 3
    np.testing.assert_allclose(s["excess_kurtosis"], kurt, rtol=1e-9)
    frac = (np.abs(centered) > 2.0 * flat.std(1, keepdims=True)).mean(1)
    s2 = H.analyze(states, H.HiddenConfig(keep_first_token=True, outlier_std=2.0)).summary
    np.testing.assert_allclose(s2["outlier_frac"], frac)
    assert (s2["outlier_frac"] > 0).all()


def test_top_dims_find_the_planted_outlier_dimension():
    result = H.analyze(synthetic())
    first = result.outlier_dims[result.outlier_dims["rank"] == 1]
    assert (first["dim"] == 3).all() and len(first) == 4
    assert all(t.startswith("3 (") for t in result.summary["top_dims"])


def test_excluding_token_0_removes_exactly_one_token_row_per_state(tiny_states):
    kept = H.analyze(tiny_states, H.HiddenConfig(keep_first_token=True))
    dropped = H.analyze(tiny_states)
    assert (kept.summary["tokens"] - dropped.summary["tokens"] == 1).all()
    d = tiny_states.d_model
    per_state = lambda r: r.histogram.groupby("state")["count"].sum()  # noqa: E731
    assert (per_state(kept) - per_state(dropped) == d).all()
    assert dropped.points["token"].min() >= 1
    # the statistics without token 0 are those of the states from token 1 on
    flat = tiny_states.values[:, 1:, :].reshape(tiny_states.n_states, -1)
    np.testing.assert_allclose(dropped.summary["max"], flat.max(1))


@pytest.mark.parametrize("scale", H.BIN_SCALES)
def test_histogram_counts_sum_to_tokens_times_d_model_on_shared_edges(tiny_states, scale):
    result = H.analyze(tiny_states, H.HiddenConfig(bin_scale=scale, n_bins=50))
    hist = result.histogram
    assert (hist.groupby("state")["count"].sum() == result.n_tokens * tiny_states.d_model).all()
    edges = hist.groupby("bin")[["lo", "hi"]].nunique()
    assert (edges == 1).all().all(), "every state uses the same bin edges"
    lo = hist[hist["state"] == 0].sort_values("bin")
    np.testing.assert_allclose(lo["hi"].to_numpy()[:-1], lo["lo"].to_numpy()[1:])  # contiguous
    reference, _ = np.histogram(tiny_states.values[2, 1:, :], np.r_[lo["lo"], lo["hi"].iloc[-1]])
    np.testing.assert_array_equal(hist[hist["state"] == 2].sort_values("bin")["count"], reference)


def test_symlog_edges_are_uniform_on_the_symlog_axis():
    edges = H.bin_edges(-300.0, 500.0, 40, "symlog", constant=0.5)
    f = np.sign(edges) * np.log1p(np.abs(edges) / 0.5)
    np.testing.assert_allclose(np.diff(f), np.diff(f)[0], rtol=1e-6)
    assert edges[0] == -300.0 and edges[-1] == 500.0


def test_points_are_a_bounded_sample_with_each_states_extremes(tiny_states):
    cfg = H.HiddenConfig(points_per_state=50, extremes_per_state=5)
    result = H.analyze(tiny_states, cfg)
    counts = result.points.groupby("state").size()
    assert (counts <= 50).all() and (counts >= 45).all()
    peak = np.abs(tiny_states.values[:, 1:, :]).max(axis=(1, 2))
    np.testing.assert_allclose(result.points.groupby("state")["value"].apply(lambda v: v.abs().max()), peak,
                               rtol=1e-6)
    row = result.points.iloc[0]  # a point's coordinates name its value
    assert tiny_states.values[row.state, row.token, row.dim] == pytest.approx(row.value)
    assert row.token_text == tiny_states.tokens[row.token]
    again = H.analyze(tiny_states, cfg).points
    assert again.equals(result.points), "same seed, same sample"


def test_only_restricts_every_table(tiny_states):
    view = H.analyze(tiny_states).only([1, 4])
    for df in (view.summary, view.histogram, view.points, view.outlier_dims):
        assert set(df["state"]) == {1, 4}
    assert set(view.pairs["state_a"]) == set(view.pairs["state_b"]) == {1, 4} and len(view.pairs) == 4


def test_single_token_without_token_0_is_one_sentence(tiny):
    states = H.capture_states(tiny, "a")
    assert states.n_tokens == 1
    with pytest.raises(ValueError, match="single token"):
        H.analyze(states)
    assert H.analyze(states, H.HiddenConfig(keep_first_token=True)).n_tokens == 1


@pytest.mark.parametrize("bad", [dict(n_bins=1), dict(bin_scale="log"), dict(outlier_std=0),
                                 dict(top_dims=0), dict(points_per_state=3, extremes_per_state=5)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        H.HiddenConfig(**bad)


def test_charts_have_axis_titles(tiny_states):
    result = H.analyze(tiny_states)
    built = [charts.token_scatter(result.points), charts.dim_scatter(result.points, symlog_y=True),
             charts.heatmap(result.pairs, "r2"), charts.heatmap(result.pairs, "cov"),
             charts.spread_chart(result.summary)]
    for chart in built:
        enc = chart.to_dict()["encoding"]
        assert enc["x"]["title"] and enc["y"]["title"]
    grid = charts.histogram_grid(result.histogram, "symlog", result.bin_constant).to_dict()
    assert grid["spec"]["encoding"]["y"]["scale"]["type"] == "log"
    assert grid["spec"]["encoding"]["x"]["scale"]["constant"] == pytest.approx(result.bin_constant)


# ---------------------------------------------------------------- the contract: config, run, record

def test_config_holds_the_inputs_and_checks_them():
    assert H.HiddenConfig().input_text() == H.default_text()  # "" is the bundled paragraph
    assert H.HiddenConfig(text="\ufeffhello").input_text() == "hello"  # a UTF-8 file's BOM dropped
    assert hash(H.HiddenConfig(text=SHORT)) == hash(H.HiddenConfig(text=SHORT))
    for bad, start in [(dict(text="  \n"), "The text is empty"), (dict(text="a\x00b"), "This file looks binary"),
                       (dict(max_tokens=1), "max_tokens must be at least 2")]:
        with pytest.raises(ValueError, match=f"^{start}"):
            H.HiddenConfig(**bad)
    assert H.forward_config(H.HiddenConfig(text=SHORT, max_tokens=9, n_bins=7, seed=4)) == \
        H.HiddenConfig(text=SHORT, max_tokens=9)


def test_hook_points_are_the_lab_hooks_names(tiny):
    assert H.hook_points(2) == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert all(lab.hooks.parse_hook(tiny, n) for n in H.hook_points(tiny.n_layers))


def test_run_is_capture_then_analyze_with_progress(tiny):
    seen: list[Progress] = []
    cfg = H.HiddenConfig(text=SHORT, max_tokens=9, keep_first_token=True, seed=2)
    result = H.run(tiny, cfg, seen.append)
    assert [p.fraction for p in seen] == [0.0, 0.5, 1.0] and seen[-1].partial is result
    kept = H.partial_result(tiny, cfg, seen[1].partial)  # a Stop after the forward keeps it
    assert isinstance(seen[1].partial, H.HiddenStates) and kept.summary.equals(result.summary)
    assert all(p.message for p in seen)
    again = H.analyze(H.capture_states(tiny, SHORT, 9), cfg)
    assert result.summary.equals(again.summary) and result.points.equals(again.points)
    assert result.n_tokens == 9 and result.config is cfg


def test_run_reuses_given_states_without_a_forward(tiny, monkeypatch):
    cfg = H.HiddenConfig(text=SHORT)
    states = H.capture(tiny, H.forward_config(cfg))
    monkeypatch.setattr(lab.hooks, "forward", lambda *a, **k: pytest.fail("the model ran again"))
    result = H.run(tiny, H.HiddenConfig(text=SHORT, bin_scale="linear"), states=states)
    assert result.n_text_tokens == states.n_text_tokens
    other = H.HiddenStates("gpt2", states.values, states.labels, states.token_ids, states.tokens,
                           states.used_text, states.n_text_tokens, states.max_tokens, 0.0)
    with pytest.raises(ValueError, match="captured with gpt2"):
        H.run(tiny, cfg, states=other)


def test_record_is_plain_json_and_frames_are_the_chart_tables(tiny):
    cfg = H.HiddenConfig(text=SHORT, seed=5)
    result = H.run(tiny, cfg)
    rec = result.to_record()
    assert json.loads(json.dumps(rec, allow_nan=False)) == rec
    assert rec["experiment"] == "hidden" and rec["model"] == "tiny-gpt2" and rec["seed"] == 5
    assert rec["config"]["text"] == SHORT and len(rec["cov"]) == len(rec["r2"]) == 5
    assert set(result.frames()) == {"summary", "outlier_dims", "histogram", "pairs", "points"}
    assert result.frames()["points"] is result.points
    brief = result.brief()
    assert brief["tokens"] == f"{result.n_tokens} used of {result.n_text_tokens}, token 0 excluded"
    assert "final norm" in brief["summary per state"]
    constant = H.HiddenStates("c", np.ones((3, 4, 2), np.float32), ("embed", "block 0", "final norm"),
                              (0, 1, 2, 3), ("a", "b", "c", "d"), "abcd", 4, 4, 0.0)
    flat = H.analyze(constant).to_record()  # NaN kurtosis of a constant state: null, not NaN
    assert flat["summary"][0]["excess_kurtosis"] is None
    json.dumps(flat, allow_nan=False)


# ---------------------------------------------------------------- CLI

def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli_main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_cli_json_prints_summary_and_r2(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(SHORT, encoding="utf-8")
    code, out, _ = run_cli("hidden", "--model", "tiny-gpt2", "--text-file", str(f), "--json")
    payload = json.loads(out)
    assert code == 0 and len(payload["summary"]) == 5 and len(payload["r2"]) == 5
    assert payload["summary"][0]["tokens"] == payload["tokens_in_text"] - 1
    code, out, _ = run_cli("hidden", "--model", "tiny-gpt2", "--text-file", str(f), "--keep-first-token", "--json")
    assert json.loads(out)["summary"][0]["tokens"] == payload["tokens_in_text"]


def test_cli_max_tokens_seed_table_and_out(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("\ufeff".encode() + SHORT.encode())  # a BOM, as some editors write
    code, out, _ = run_cli("hidden", "--model", "tiny-gpt2", "--text-file", str(f), "--max-tokens", "5",
                           "--seed", "3", "--json")
    payload = json.loads(out)
    assert code == 0 and payload["tokens_used"] == 4 and payload["truncated"] and payload["seed"] == 3
    code, out, err = run_cli("hidden", "--model", "tiny-gpt2", "--out", str(tmp_path / "o"))
    assert code == 0 and "token 0 excluded" in out and "R^2 (squared Pearson" in out and "final norm" in out
    assert "Done." in err
    assert {p.name for p in (tmp_path / "o").iterdir()} == {
        "record.json", "summary.csv", "outlier_dims.csv", "histogram.csv", "pairs.csv", "points.csv"}
    code, _, err = run_cli("hidden", "--model", "tiny-gpt2", "--max-tokens", "1")
    assert code == 2 and err.strip() == "error: max_tokens must be at least 2, got 1"


def test_cli_bad_files_exit_2_with_one_line(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "empty.txt").write_text("  \n")
    for name in ("bin.txt", "empty.txt", "missing.txt"):
        code, _, err = run_cli("hidden", "--model", "tiny-gpt2", "--text-file", str(tmp_path / name))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, name


# ---------------------------------------------------------------- the page (AppTest)

def chart_data(at, i) -> list[dict]:
    """Rows of the main dataset of the i-th chart (Streamlit ships datasets as Arrow)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
    proto = at.get("vega_lite_chart")[i].proto
    name = json.loads(proto.spec)["data"]["name"]
    data = next(d.data.data for d in proto.datasets if d.name == name)
    return convert_arrow_bytes_to_pandas_df(data).to_dict(orient="records")


@pytest.fixture
def forwards(monkeypatch):
    """Counts the model forwards the page runs; starts with no forward kept anywhere (lab.hidden's
    reuse, a fresh runner: its result cache)."""
    import streamlit as st
    from lab.cache import ResultCache
    st.cache_data.clear()
    st.cache_resource.clear()       # the page's runner (ui.jobs.runner) and its result cache
    monkeypatch.setattr(H, "FORWARDS", ResultCache(H.FORWARD_BYTES))
    calls = []
    real = lab.hooks.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(lab.hooks, "forward", counting)
    return calls


def test_page_renders_default_text_and_layer_selection(tiny, forwards):
    at = app_test(PAGE)
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tokens in the text"] == str(len(tiny.tokenizer(H.default_text())["input_ids"]))
    assert metrics["States"] == "5"
    assert len(at.get("vega_lite_chart")) == 6
    assert {p["state"] for p in chart_data(at, 0)} == {0, 1, 2, 3, 4}
    at.select_slider(key="hidden_layers").set_value((1, 2)).run()
    assert not at.exception
    assert {p["state"] for p in chart_data(at, 0)} == {1, 2, 4}  # blocks 0-1 and the final norm
    assert len(chart_data(at, 4)) == 9  # R^2 heatmap: 3 x 3
    at.checkbox(key="hidden_show_norm").uncheck().run()
    assert {p["state"] for p in chart_data(at, 1)} == {1, 2}
    assert len(forwards) == 1


def test_display_options_never_rerun_the_model(forwards):
    at = app_test(PAGE)
    assert len(forwards) == 1
    at.checkbox(key="hidden_keep_first").check().run()
    at.radio(key="hidden_bins").set_value("linear").run()
    at.checkbox(key="hidden_symlog_y").check().run()
    at.select_slider(key="hidden_layers").set_value((0, 1)).run()
    at.session_state["seed"] = 3  # the sidebar's seed (AppTest does not list sidebar widgets after switch_page)
    at.run()
    assert not at.exception
    assert len(forwards) == 1, "display options must come from the cache"
    at.text_area(key="hidden_text").set_value(SHORT).run()
    assert len(forwards) == 2, "a new text runs the model once more"


def test_page_bad_input_is_one_sentence(forwards):
    at = app_test(PAGE)
    at.text_area(key="hidden_text").set_value("   \n ").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["The text is empty: paste some text or upload a .txt file."]
    assert len(at.get("vega_lite_chart")) == 0
    at.text_area(key="hidden_text").set_value(H.default_text()).run()
    at.number_input(key="hidden_max_tokens").set_value(40).run()
    assert not at.exception and not at.error
    assert any("only the first 40 were used" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Tokens in the statistics"] == "39"
