"""lab.laminar on tiny-gpt2: one forward captures every layer, a fresh SAE per layer, one row
per layer, seeded reproducibility, progress, the cost model, the CLI, and the page (AppTest)."""
from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import torch

from conftest import app_test
from lab import corpus, laminar, registry
from lab.experiment import replace_paths
from lab.hooks import mlp_out, run_with_hooks
from lab.laminar import train as laminar_train
from lab.sae import init_sae

TINY = laminar.preset("tiny")
FIXTURES = Path(__file__).parent / "fixtures" / "wiki"


@pytest.fixture(scope="module")
def ids(tiny):
    return corpus.tokenize(tiny.tokenizer, corpus.bundled_article().text)


def _windows(tiny, n=4, T=16):
    return torch.randint(0, tiny.vocab_size, (n, T), generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- capture

def test_capture_is_one_forward_per_batch_for_all_layers(tiny):
    calls = []
    handle = tiny.arch.blocks_of(tiny.model)[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        acts = laminar.capture_mlp_out(tiny, _windows(tiny), forward_batch=2)
    finally:
        handle.remove()
    assert len(calls) == 2                       # 4 windows / 2 per forward, not x 3 layers
    assert acts.shape == (3, 4 * 15, tiny.d_model)  # position 0 of each window dropped
    for layer in range(3):                        # equals a per-layer reference forward
        ref = run_with_hooks(tiny, [mlp_out(layer)], input_ids=_windows(tiny),
                             detach=True)[mlp_out(layer)]
        assert torch.allclose(acts[layer], ref[:, 1:].reshape(-1, tiny.d_model), atol=1e-6)


def test_capture_refuses_windows_longer_than_context(tiny):
    with pytest.raises(ValueError, match="exceed tiny-gpt2's context of 1024"):
        laminar.capture_mlp_out(tiny, torch.zeros(1, 1025, dtype=torch.long))


# ---------------------------------------------------------------- the sweep

def test_one_row_per_layer(tiny, ids):
    rows = laminar.sweep(tiny, ids, TINY)
    assert list(rows.columns) == laminar.COLUMNS
    assert rows["layer"].tolist() == [0, 1, 2]
    assert rows["relative_depth"].tolist() == [0.0, 0.5, 1.0]
    assert (rows["model"] == "tiny-gpt2").all()
    assert (rows["n_tokens"] == TINY.n_tokens).all() and TINY.n_tokens == 2 * 15
    assert (rows["n_latents"] == 2 * tiny.d_model).all()
    assert rows["density"].between(0, 1).all() and (rows["density"] > 0).all()
    assert rows["dead_fraction"].between(0, 1).all()
    assert (rows["mse"] > 0).all() and (rows["nmse"] > 0).all() and rows["val_nmse"].notna().all()
    assert (rows["seconds"] > 0).all()
    # normalized MSE is the raw MSE over the layer's variance: raw differs more across layers
    assert not rows["mse"].equals(rows["nmse"])


def test_fresh_sae_per_layer(tiny, ids, monkeypatch):
    seen = []
    real = laminar_train.train_sae

    def spy(acts, cfg, on_epoch=None, sae=None):
        seen.append((sae, sae.W_enc.detach().clone(), acts))
        return real(acts, cfg, on_epoch=on_epoch, sae=sae)

    monkeypatch.setattr(laminar_train, "train_sae", spy)
    laminar.sweep(tiny, ids, TINY)
    assert len(seen) == 3 and len({id(s) for s, _, _ in seen}) == 3
    scfg = TINY.sae
    for j, (sae, w0, acts) in enumerate(seen):
        assert torch.equal(w0, init_sae(acts, scfg).W_enc)    # starts from the seeded init...
        if j:
            assert not torch.equal(w0, seen[j - 1][0].W_enc)  # ...not from the last layer's SAE


def test_same_seed_same_rows_other_seed_other_rows(tiny, ids):
    a = laminar.sweep(tiny, ids, TINY).drop(columns="seconds")
    b = laminar.sweep(tiny, ids, TINY).drop(columns="seconds")
    c = laminar.sweep(tiny, ids, replace(TINY, seed=1)).drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)
    assert not a["nmse"].equals(c["nmse"])


def test_layers_subset_and_windows_input(tiny):
    rows = laminar.sweep(tiny, _windows(tiny, 2, 12), replace(TINY, layers=(2,)))
    assert rows["layer"].tolist() == [2] and rows["relative_depth"].tolist() == [1.0]
    assert rows["n_tokens"].tolist() == [2 * 11]
    with pytest.raises(ValueError, match="layer 5 out of range"):
        laminar.sweep(tiny, _windows(tiny), replace(TINY, layers=(0, 5)))


def test_layers_arrive_one_by_one_and_progress_moves(tiny, ids):
    progress = []
    laminar.sweep(tiny, ids, TINY, on_progress=progress.append)
    assert all(p.partial is not None for p in progress)
    partial = list({len(p.partial): p.partial for p in progress}.values())
    assert [len(rows) for rows in partial] == [0, 1, 2, 3]   # the rows so far, layer by layer
    assert [rows["layer"].iloc[-1] for rows in partial[1:]] == [0, 1, 2]
    assert all(p.unit == "layer" and p.total == 1 + 3 for p in progress)   # capture counts as one
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[0].message.startswith("Capturing") and progress[-1].message.startswith("layer 2:")
    assert all("left" in p.message for p in progress[:-1])   # the ETA, from the first batch on
    assert "Layer 2: SAE epoch 1/2 (2/3 layers done" in progress[-2].message
    assert "3/3 layers done" in progress[-1].message


def test_stopping_keeps_finished_layers(tiny, ids):
    kept = []

    class Stop(Exception):
        pass

    def on_progress(p):
        if p.partial is not None:
            kept.append(p.partial)
            if len(p.partial.rows) == 2:
                raise Stop  # what a click on Stop does to the running script

    with pytest.raises(Stop):
        laminar.run(tiny, TINY, on_progress)
    assert kept[-1].rows["layer"].tolist() == [0, 1]
    assert not kept[-1].finished and kept[-1].n_layers == 3
    assert registry.get("laminar").partial_result(tiny, TINY, kept[-1]) is kept[-1]


def test_topk_density_is_k_over_latents(tiny, ids):
    cfg = replace_paths(TINY, {"sae.activation": "topk", "sae.k": 8})
    rows = laminar.sweep(tiny, ids, cfg)
    assert (rows["density"] <= 8 / 128 + 1e-6).all() and (rows["l0"] <= 8 + 1e-6).all()
    assert (rows["density"] > 0.5 * 8 / 128).all()


@pytest.mark.parametrize("changes, message", [
    ({"sae.activation": "gelu"}, "activation must be one of"),
    ({"window_len": 1}, "window_len must be at least 2"),
    ({"sae.epochs": 0}, "epochs must be at least 1"),
    ({"sae.lr": float("nan")}, "lr must be a finite number"),       # lab.sae's wording now
    ({"layers": (1, 1)}, "layers must be distinct"),
    ({"sae.val_fraction": 1.0}, "val_fraction must be below 1"),   # lab.sae's wording now
    ({"url": "LED", "text": "Some prose."}, "not both"),
])
def test_config_is_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        replace_paths(TINY, changes)
    with pytest.raises(ValueError, match="unknown preset"):
        laminar.preset("huge")


def test_presets_match_the_issue():
    full = laminar.PRESETS["full"]
    assert (full.n_windows, full.window_len, full.sae.epochs, full.sae.activation) == (10, 1024, 75, "relu")
    assert laminar.PRESETS["quick"] == laminar.LaminarConfig() and "seed" not in laminar.PRESETS  # the defaults are quick
    quick = laminar.PRESETS["quick"]
    assert quick.n_tokens < full.n_tokens and quick.sae.epochs < full.sae.epochs
    assert quick.sae.expansion < full.sae.expansion


def test_one_seed_reaches_the_sae():
    cfg = replace(TINY, seed=7)
    assert cfg.sae.seed == 7 and cfg == replace_paths(TINY, {"seed": 7, "sae.seed": 3})


# ---------------------------------------------------------------- cost model and shape

def test_estimate_is_flops_over_measured_rates(tiny):
    f_rate, s_rate = laminar.measure_rates(tiny, TINY)
    assert f_rate > 0 and s_rate > 0 and math.isfinite(f_rate + s_rate)
    est = laminar.estimate(tiny, TINY, (f_rate, s_rate))
    assert est.n_layers == 3
    assert est.total_seconds == pytest.approx(est.capture_seconds + 3 * est.layer_seconds)
    assert est.layer_gflop * 1e9 == laminar.sae_flops(30, 64, 128, 2, 0.1)
    # twice the tokens or epochs: twice the SAE work
    assert laminar.sae_flops(60, 64, 128, 2, 0.1) == pytest.approx(2 * laminar.sae_flops(30, 64, 128, 2, 0.1))
    assert laminar.forward_flops(tiny, 2, 16) > laminar.forward_flops(tiny, 1, 16)


def test_shape_summary():
    layers = list(range(6))
    rows = pd.DataFrame({"model": "m", "layer": layers, "relative_depth": [i / 5 for i in layers],
                         "density": [0.01, 0.02, 0.04, 0.05, 0.08, 0.1],
                         "nmse": [0.5, 0.3, 0.1, 0.12, 0.3, 0.6]})
    flat = rows.assign(model="n", nmse=[0.6, 0.5, 0.4, 0.3, 0.2, 0.1], density=[0.1] * 6)
    s = laminar.shape_summary(pd.concat([rows, flat])).set_index("model")
    assert s.loc["m", "density_vs_depth_rho"] == pytest.approx(1.0)
    assert s.loc["m", "nmse_u_shaped"] and s.loc["m", "nmse_min_layer"] == 2
    assert not s.loc["n", "nmse_u_shaped"]
    text = laminar.describe_shape(s.reset_index().iloc[0].to_dict())
    assert "density rises with depth" in text and "is U-shaped" in text


def test_layer_axis_spans_the_whole_model_from_the_first_layer():
    """A live sweep's first row already gets the model's full, integer layer axis."""
    from lab.charts import laminar as lcharts
    first = pd.DataFrame({"model": ["m"], "layer": [0], "n_layers": [30], "relative_depth": [0.0],
                          "density": [0.01], "nmse": [0.1], "val_nmse": [0.2]})
    for chart in (lcharts.density_chart(first), lcharts.nmse_chart(first)):
        x = chart.to_dict()["encoding"]["x"]
        assert x["scale"]["domain"] == [0, 29] and x["axis"]["format"] == "d"
    both = pd.concat([first, first.assign(model="big", n_layers=36)])
    assert lcharts.density_chart(both).to_dict()["encoding"]["x"]["scale"]["domain"] == [0, 35]
    depth = lcharts.density_chart(first, "relative_depth").to_dict()["encoding"]["x"]
    assert depth["scale"]["domain"] == [0, 1]


def test_export_json(tiny, ids):
    result = laminar.run(tiny, TINY)
    out = json.loads(json.dumps(result.to_record()))
    assert out == result.to_record()                          # plain JSON values only
    assert len(out["rows"]) == 3 and out["config"]["seed"] == 0 and out["model"] == "tiny-gpt2"
    assert "torch" in out["versions"] and out["corpus"]["source"] == "bundled"
    assert out["config"]["sae"]["epochs"] == 2 and out["shape"][0]["layers"] == 3
    assert set(result.frames()) == {"layers", "shape"}
    assert result.brief()["layer 2"].startswith("density ")


# ---------------------------------------------------------------- CLI

# the old --preset tiny, as the generated flags (the CLI takes every config field)
TINY_FLAGS = ("--n-windows", "2", "--window-len", "16", "--expansion", "2", "--epochs", "2",
              "--batch-size", "16")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lab", "laminar", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_tiny_csv_json(tmp_path):
    r = _cli("--model", "tiny-gpt2", *TINY_FLAGS, "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert [row["layer"] for row in payload["rows"]] == [0, 1, 2]
    assert payload["corpus"]["source"] == "bundled"
    assert pd.read_csv(tmp_path / "layers.csv")["layer"].tolist() == [0, 1, 2]
    assert json.loads((tmp_path / "record.json").read_text())["config"]["n_windows"] == 2
    assert r.stderr.count("layer ") == 3   # one progress line per layer


def test_cli_bad_input_is_one_line(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Light-emitting diodes make light. " * 20)
    for args, why in ((["--url", "http://en.wikipedia.org/wiki/LED"], "plain http"),
                      (["--text-file", str(short)], "what fits"),   # the full preset's 10 x 1024
                      (["--epochs", "0"], "epochs must be at least 1")):
        r = _cli("--model", "tiny-gpt2", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and why in r.stderr, r.stderr
    r = _cli("--model", "tiny-gpt2", "--text-file", str(short), *TINY_FLAGS,
             "--n-windows", "50", "--fit", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["n_windows"] < 50


# ---------------------------------------------------------------- the page

def _small(at):
    at.number_input(key="lam_windows_quick").set_value(2)
    at.number_input(key="lam_len_quick").set_value(24)
    at.number_input(key="lam_epochs_quick").set_value(2)
    return at


def _texts(at) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "error", "warning", "info")
                    for e in getattr(at, kind))


def test_page_runs_a_tiny_sweep_and_draws_all_layers():
    at = app_test("views/laminar.py")
    assert not at.exception
    assert "Estimated time" in _texts(at)
    assert at.metric[0].label == "Tokens (tiny-gpt2)" and at.metric[2].value == "bundled"
    _small(at).button(key="lam_run").click()
    at.run()
    assert not at.exception
    run = next(r["result"] for r in at.session_state["runs:laminar"] if r["result"].model == "tiny-gpt2")
    assert run.finished and run.rows["layer"].tolist() == [0, 1, 2]
    assert "Wall time" in _texts(at) and "for 3 layers" in _texts(at)
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) == 4
    titles = [" ".join(s["encoding"]["y"]["title"]) for s in specs]   # two-line axis titles
    assert titles[0].startswith("density") and titles[1].startswith("normalized MSE")
    # Streamlit ships chart data beside the spec, as Arrow
    rows = [pa.ipc.open_stream(d.data.data).read_all().num_rows
            for c in at.get("vega_lite_chart") for d in c.proto.datasets]
    assert rows[0] == 3 and rows[1] == 6  # density per layer; nmse: train + held out per layer
    assert "tiny-gpt2: density" in _texts(at)
    # relative depth on the x-axis
    at.radio(key="lam_x").set_value("relative depth").run()
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert spec["encoding"]["x"]["field"] == "relative_depth" and not at.exception


def test_page_bad_inputs_say_one_sentence_and_stay_usable():
    at = app_test("views/laminar.py")
    at.radio(key="lam_source").set_value("Wikipedia article").run()
    at.text_input(key="lam_article").set_value("https://example.com/wiki/LED").run()
    at.button(key="lam_fetch").click().run()
    assert not at.exception
    assert any("not on the allow-list" in e.value for e in at.error)
    assert at.metric[2].value == "bundled"            # the bundled text serves instead
    assert at.button(key="lam_run") is not None         # still usable
    # a corpus too short for the preset: say so, offer what fits, and take the offer
    at.radio(key="lam_source").set_value("Paste or upload").run()
    at.text_area(key="lam_paste").set_value("LEDs make light from current. " * 40).run()
    at.radio(key="lam_preset").set_value("full").run()
    assert any("what fits" in w.value for w in at.warning) and not at.exception
    offer = [b for b in at.button if b.key and b.key.startswith("lam_fit_")][0]
    offer.click().run()
    assert not any("what fits" in w.value for w in at.warning)
    assert "Estimated time" in _texts(at)


@pytest.fixture
def wiki_server(monkeypatch):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(FIXTURES))
    handler.log_message = lambda *a: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("LAB_ALLOWED_HOSTS", "127.0.0.1")
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def test_page_fetches_an_article(wiki_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    at = app_test("views/laminar.py")
    at.radio(key="lam_source").set_value("Wikipedia article").run()
    at.text_input(key="lam_article").set_value(f"{wiki_server}/led.html").run()
    assert any("Not fetched yet" in i.value for i in at.info)
    at.button(key="lam_fetch").click().run()
    assert not at.exception and not at.error
    assert at.metric[2].value == "live" and at.metric[3].value == "1187000001"
    at.text_input(key="lam_article").set_value(f"{wiki_server}/no_body.html").run()
    at.button(key="lam_fetch").click().run()
    assert any("no mw-body-content" in e.value for e in at.error) and not at.exception


def test_cli_preset_then_flags_adjust_it():
    import json
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "lab", "laminar", "--model", "tiny-gpt2", "--device",
                        "cpu", "--preset", "tiny", "--epochs", "1", "--quiet", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["config"]
    assert (cfg["n_windows"], cfg["window_len"], cfg["sae"]["epochs"]) == (2, 16, 1)


def test_without_ray_configured_ray_is_not_imported():
    code = ("import sys; from lab.models import load_model; from lab import laminar; "
            "laminar.run(load_model('tiny-gpt2', 'cpu'), laminar.preset('tiny')); "
            "print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# ---------------------------------------------------------------- on a GPU (marked `gpu`)
# Deselected by default; `python -m pytest -m gpu` on a machine with CUDA runs them. Tolerances:
# float32 on CUDA vs the CPU differs by summation order only (rtol 1e-3 on the tiny sweep's few
# steps); TF32 multiplies with a 10-bit mantissa (rtol 1e-2, the tf32 field's stated bound).
# Not yet run: no GPU was at hand when they were written (they pass with "cuda" read as "cpu").

def _cuda():
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them where there is one)"
    return torch.device("cuda")


def _close(a: pd.DataFrame, b: pd.DataFrame, rtol: float) -> None:
    cols = ["density", "dead_fraction", "mse", "nmse", "val_nmse", "l0"]
    assert a["layer"].tolist() == b["layer"].tolist()
    for c in cols:
        assert a[c].tolist() == pytest.approx(b[c].tolist(), rel=rtol, abs=1e-6), c


GPU_CASES = [{}, {"sae.activation": "topk", "sae.k": 8},                # dense ReLU; sparse Top-K
             {"sae.l1": 1.0, "sae.lr": 3e-2, "sae.epochs": 6}]          # ReLU that goes sparse


@pytest.mark.gpu
@pytest.mark.parametrize("changes", GPU_CASES)
def test_gpu_sweep_matches_the_cpu(tiny, ids, changes):
    _cuda()
    cfg = replace_paths(TINY, changes)
    cpu = laminar.sweep(tiny, ids, cfg)
    gpu = laminar.sweep(tiny, ids, replace(cfg, sae_device="cuda"))
    _close(gpu, cpu, rtol=1e-3)
    again = laminar.sweep(tiny, ids, replace(cfg, sae_device="cuda"))   # deterministic on CUDA
    pd.testing.assert_frame_equal(gpu.drop(columns="seconds"), again.drop(columns="seconds"))
    streamed = laminar.sweep(tiny, ids, replace(cfg, sae_device="cuda", memory_fraction=1e-12))
    pd.testing.assert_frame_equal(gpu.drop(columns="seconds"), streamed.drop(columns="seconds"))
    tf32 = laminar.sweep(tiny, ids, replace(cfg, sae_device="cuda", tf32=True))
    _close(tf32, gpu, rtol=1e-2)


@pytest.mark.gpu
def test_gpu_model_and_activations_on_the_device():
    from lab.models import load_model
    lm = load_model("tiny-gpt2", str(_cuda()))
    acts = laminar.capture_mlp_out(lm, _windows(lm), device=lm.device)
    assert acts.is_cuda
    result = laminar.run(lm, TINY)          # auto: the SAEs train where the model is
    assert result.finished and len(result.rows) == 3


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["topk", "relu"])
@pytest.mark.parametrize("tied", [True, False])
def test_gpu_sparse_step_gradients_equal_dense_autograd(activation, tied):
    from lab.sae import SAEConfig, dense_forward, loss_terms
    x = (torch.randn(200, 16) * 2 + 0.5).double().to(_cuda())   # test_sae's batch, on CUDA
    sae = init_sae(x.cpu().float(), SAEConfig(n_latents=64, k=4, activation=activation, tied=tied))
    sae = sae.double().to(x.device)
    if activation == "relu":   # sparse enough for the sparse step
        with torch.no_grad():
            sae.b_enc.fill_(-1.0)
    xs = x / sae.scale
    code = sae.active_code(xs)
    recon, vals = sae.sparse_forward(xs, code)
    sparse = torch.autograd.grad(loss_terms(sae, xs, recon, vals, 0.05)[0], list(sae.parameters()))
    recon_d, z = dense_forward(sae, xs)
    dense = torch.autograd.grad(loss_terms(sae, xs, recon_d, z, 0.05)[0], list(sae.parameters()))
    for (name, _), a, b in zip(sae.named_parameters(), sparse, dense):
        assert a.is_cuda and (a - b).abs().max() < 1e-10, name


def test_page_offers_the_device_and_the_cluster_when_one_is_configured(monkeypatch):
    at = app_test("views/laminar.py")
    from lab.models import available_devices
    assert at.radio(key="lam_sae_device").options == available_devices()   # auto, cpu, (cuda, mps)
    assert not [c for c in at.checkbox if c.key == "lam_cluster"]   # no cluster configured
    assert "on cpu" in _texts(at)                                     # the estimate's device
    at.radio(key="lam_sae_device").set_value("cpu").run()
    assert not at.exception and "Estimated time" in _texts(at)
    monkeypatch.setenv("LAB_RAY_ADDRESS", "127.0.0.1:6379")
    at.run()
    cluster = at.checkbox(key="lam_cluster")
    assert "127.0.0.1:6379" in cluster.help
    cluster.check().run()
    assert "On the cluster the layers train side by side" in _texts(at) and not at.exception


def test_the_speed_probe_is_keyed_only_on_what_changes_the_speed(tiny):
    from dataclasses import replace
    from lab.registry import for_config
    key = laminar.rates_config(tiny, TINY)
    assert for_config(key).name == "laminar-rates"
    same = replace(TINY, sae=replace(TINY.sae, epochs=TINY.sae.epochs + 7, lr=3e-4, seed=9))
    assert laminar.rates_config(tiny, same) == key          # epochs, lr, seed: no new probe
    wider = replace(TINY, sae=replace(TINY.sae, batch_size=TINY.sae.batch_size * 2))
    assert laminar.rates_config(tiny, wider) != key
    f_rate, s_rate = for_config(key).run(tiny, key)
    assert f_rate > 0 and s_rate > 0


def test_run_options_are_out_of_the_key_and_a_run_folder_always_runs(tiny, tmp_path):
    from dataclasses import replace
    from lab.cache import DiskCache
    from lab.runner import Runner
    on_ray = replace(TINY, ray="local", ray_cpus=1, memory_fraction=0.25)
    assert on_ray == TINY and hash(on_ray) == hash(TINY)
    disk = DiskCache(tmp_path / "disk")
    disk.put(("tiny-gpt2", "cpu", "laminar", TINY), "the in-process sweep")
    assert disk.get(("tiny-gpt2", "cpu", "laminar", on_ray)) == "the in-process sweep"
    runner = Runner(load=lambda m, d: tiny, workers=1, threads_per_job=None, disk=disk)
    served = runner.submit("tiny-gpt2", "cpu", on_ray, "alice")
    assert served.status == "done" and served.result == "the in-process sweep"   # Ray never started
    writes = replace(TINY, run_dir=str(tmp_path / "run"))
    assert writes == TINY and writes.writes_files
    ran = runner.submit("tiny-gpt2", "cpu", writes, "bob")
    assert ran.wait(120) and ran.status == "done", ran.error
    assert (tmp_path / "run" / "run.json").exists() and ran.result != "the in-process sweep"


def test_the_cli_serves_the_same_sweep_on_ray_from_the_disk_cache(tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "LAB_CACHE_DIR": str(tmp_path)}
    args = [sys.executable, "-m", "lab", "laminar", "--model", "tiny-gpt2", "--preset", "tiny",
            "--cache", "--json"]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(args + ["--ray", "local"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert "served from the disk cache" in second.stderr and "served" not in first.stderr
    assert json.loads(second.stdout)["rows"] == json.loads(first.stdout)["rows"]
