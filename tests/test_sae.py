"""lab.sae, lab.selectivity, lab.sae_text, the sae CLI and the page (AppTest), on tiny configs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lab import sae as lsae
from lab.sae_text.capture import text_activations
from lab import sae_text
from lab import selectivity as lsel
from lab.charts import sae as charts
from lab.experiment import build
from lab.paths import read_text
from lab.sae import SAEConfig, SparseAutoencoder, init_sae, train_sae
from lab.sae.kernels import _DenseCode
from lab.sae.train import _step, _Tally


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, and on a
    busy 2-core machine it made each step ~40x slower (137 ms vs 3 ms measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sae(activation="topk", tied=True, d_in=16, n_latents=64, k=4, dtype=torch.float64):
    x = torch.randn(200, d_in) * 2 + 0.5
    sae = init_sae(x, SAEConfig(n_latents=n_latents, k=k, activation=activation, tied=tied)).to(dtype)
    return sae, x.to(dtype)


# ---------------------------------------------------------------- the model

def test_topk_keeps_at_most_k_nonzeros_per_row():
    sae, x = _sae(k=5)
    z = sae.encode(x)
    assert z.shape == (200, 64)
    assert (z != 0).sum(1).max() <= 5
    assert (z >= 0).all()
    assert (z != 0).sum(1).float().mean() > 3   # and it does use them


def test_tied_means_one_shared_parameter():
    tied, _ = _sae(tied=True)
    untied, _ = _sae(tied=False)
    assert tied.W_dec is None and tied.decoder_weight is tied.W_enc
    names = dict(tied.named_parameters())
    assert set(names) == {"W_enc", "b_enc", "b_dec"}
    assert sum(p.numel() for p in tied.parameters()) == 64 * 16 + 64 + 16
    assert sum(p.numel() for p in untied.parameters()) == 2 * 64 * 16 + 64 + 16
    with torch.no_grad():   # changing the encoder changes the decoder: same storage
        tied.W_enc[3, 2] += 1.0
    assert tied.decoder_weight[3, 2] == tied.W_enc[3, 2]


@pytest.mark.parametrize("activation", ["topk", "relu"])
@pytest.mark.parametrize("tied", [True, False])
def test_sparse_step_gradients_equal_dense_autograd(activation, tied):
    sae, x = _sae(activation, tied)
    if activation == "relu":   # make the ReLU code sparse enough for the sparse step
        with torch.no_grad():
            sae.b_enc.fill_(-1.0)
    xs = x / sae.scale
    code = sae.active_code(xs)
    assert code is not None
    if activation == "relu":   # ragged: rows have different numbers of active latents
        assert code.crow.diff().min() < code.crow.diff().max()
    recon, vals = sae.sparse_forward(xs, code)
    loss, _ = lsae.loss_terms(sae, xs, recon, vals, l1=0.05)
    sparse = torch.autograd.grad(loss, list(sae.parameters()))
    recon_d, z = lsae.dense_forward(sae, xs)
    loss_d, _ = lsae.loss_terms(sae, xs, recon_d, z, l1=0.05)
    dense = torch.autograd.grad(loss_d, list(sae.parameters()))
    assert torch.allclose(loss, loss_d, atol=1e-12)
    for (name, _), a, b in zip(sae.named_parameters(), sparse, dense):
        assert b.abs().max() > 0, name
        assert (a - b).abs().max() < 1e-10, name


@pytest.mark.parametrize("tied", [True, False])
def test_dense_relu_step_gradients_equal_dense_autograd(tied):
    sae, x = _sae("relu", tied)
    xs = x / sae.scale
    recon, z = _DenseCode.apply(xs, sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec)
    loss, _ = lsae.loss_terms(sae, xs, recon, z, l1=0.05)
    fast = torch.autograd.grad(loss, list(sae.parameters()))
    recon_d, z_d = lsae.dense_forward(sae, xs)
    loss_d, _ = lsae.loss_terms(sae, xs, recon_d, z_d, l1=0.05)
    dense = torch.autograd.grad(loss_d, list(sae.parameters()))
    assert 0.2 < float((z > 0).float().mean()) < 0.8          # a dense code: the dense step
    assert torch.allclose(loss, loss_d, atol=1e-12)
    for (name, _), a, b in zip(sae.named_parameters(), fast, dense):
        assert b.abs().max() > 0, name
        assert (a - b).abs().max() < 1e-10, name


def test_relu_code_too_dense_takes_the_dense_step():
    sae, x = _sae("relu")
    with torch.no_grad():
        sae.b_enc.fill_(5.0)         # every latent active
    assert sae.active_code(x / sae.scale) is None
    with torch.no_grad():
        sae.b_enc.fill_(-1.5)        # a few latents per row: ragged rows, only positive entries
    code = sae.active_code(x / sae.scale)
    counts = code.crow.diff()
    assert counts.min() < counts.max() and (code.pre > 0).all()
    z = sae.encode(x)
    assert torch.equal(counts, (z > 0).sum(1)) and torch.equal(code.cols, z.nonzero()[:, 1])
    with torch.no_grad():
        sae.b_enc.fill_(-50.0)       # nothing active: a valid empty code, zero reconstruction
    code = sae.active_code(x / sae.scale)
    assert code.cols.numel() == 0
    recon, vals = sae.sparse_forward(x / sae.scale, code)
    assert torch.allclose(recon, sae.b_dec.expand_as(recon))


@pytest.mark.parametrize("activation", ["topk", "relu"])
def test_loss_falls_on_repeated_steps_on_one_batch(activation):
    x = torch.randn(64, 16)
    cfg = SAEConfig(n_latents=64, k=4, activation=activation, l1=1e-3, lr=1e-2, epochs=1,
                    batch_size=64, val_fraction=0.0)
    sae = init_sae(x, cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, fused=True)
    losses = []
    for _ in range(30):
        tally = _Tally(sae.n_latents)
        _step(sae, opt, x / sae.scale, cfg, tally, dense=False)
        losses.append(tally.loss)
    assert losses[-1] < 0.7 * losses[0]
    assert all(b < a + 1e-6 for a, b in zip(losses[:5], losses[1:6]))


@pytest.mark.parametrize("tied", [True, False])
def test_save_load_round_trips_to_identical_outputs(tmp_path, tied):
    x = torch.randn(100, 16)
    sae, _ = train_sae(x, SAEConfig(n_latents=48, k=4, tied=tied, epochs=2, lr=1e-3))
    sae.save(tmp_path / "s", metadata={"model": "none"})
    back = SparseAutoencoder.load(tmp_path / "s")
    assert back.config_dict() == sae.config_dict()
    assert float(back.scale) == float(sae.scale) != 1.0
    r1, z1 = sae(x)
    r2, z2 = back(x)
    assert torch.equal(r1, r2) and torch.equal(z1, z2)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["metadata"] == {"model": "none"}
    assert len(lsae.to_zip_bytes(sae)) > 1000


@pytest.mark.parametrize("tied", [True, False])
def test_recovers_known_sparse_dictionary(tied):
    """Data built from 48 unit atoms in 24 dims, 3 active per row: the decoder's atoms should
    line up with the true ones (mean over true atoms of the best cosine; measured 0.98 tied,
    0.99 untied)."""
    gen = torch.Generator().manual_seed(0)
    n_atoms, d, k, n = 48, 24, 3, 2000
    atoms = torch.randn(n_atoms, d, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.rand(n, n_atoms, generator=gen).argsort(1)[:, :k]
    coef = torch.rand(n, k, generator=gen) + 0.5
    x = torch.zeros(n, n_atoms).scatter_(1, idx, coef) @ atoms
    cfg = SAEConfig(n_latents=96, k=k, tied=tied, epochs=20, lr=3e-3, batch_size=128)
    sae, hist = train_sae(x, cfg)
    dec = sae.decoder_weight.detach()
    cos = (atoms @ (dec / dec.norm(dim=1, keepdim=True)).T).max(1).values
    print(f"mean max cosine of true atoms: {cos.mean():.3f}, min {cos.min():.3f}")
    assert cos.mean() > 0.95 and cos.min() > 0.9
    assert hist.query("split == 'val'")["nmse"].iloc[-1] < 0.2


def test_unit_decoder_false_leaves_the_untied_decoder_rows_free():
    """Both start from the same unit atoms; only unit_decoder=True keeps them at norm 1, and
    the free one still learns (the first epochs' step of 1e-2 moves norms by ~10%)."""
    x = torch.randn(600, 12) * 3
    norms, nmse = {}, {}
    for unit in (True, False):
        cfg = SAEConfig(n_latents=48, k=4, tied=False, unit_decoder=unit, epochs=6, lr=1e-2)
        sae, hist = train_sae(x, cfg)
        norms[unit] = sae.W_dec.detach().norm(dim=1)
        nmse[unit] = hist.query("split == 'train'")["nmse"].tolist()
    torch.testing.assert_close(norms[True], torch.ones(48))
    assert (norms[False] - 1).abs().max() > 0.05
    assert nmse[False][-1] < nmse[False][0] and abs(nmse[False][-1] - nmse[True][-1]) < 0.1


def test_history_is_tidy_and_on_epoch_reports_each_epoch():
    x = torch.randn(120, 8)
    rows = []
    sae, hist = train_sae(x, SAEConfig(n_latents=32, k=2, epochs=4, lr=1e-3), on_epoch=rows.append)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert list(hist.columns) == ["epoch", "split", "loss", "mse", "nmse", "l0", "dead_fraction"]
    assert len(hist) == 8 and set(hist["split"]) == {"train", "val"}
    assert (hist["l0"] == 2).all()
    assert hist["dead_fraction"].between(0, 1).all()
    assert pd.DataFrame(lsae.history_frame(rows)).equals(hist)


def test_interrupted_training_keeps_the_model_so_far():
    x = torch.randn(120, 8)
    cfg = SAEConfig(n_latents=32, k=2, epochs=50, lr=1e-2)
    sae = init_sae(x, cfg)
    before = sae.W_enc.detach().clone()

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae(x, cfg, on_epoch=stop_after_two, sae=sae)
    assert not torch.equal(before, sae.W_enc)


def test_latent_stats_classes():
    sae, x = _sae("relu", dtype=torch.float32)
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)
        sae.b_enc[0] = 1e3     # always on
        sae.b_enc[1] = -1e3    # dead
    stats = lsae.latent_stats(sae, x)
    assert {"latent", "density", "max", "mean", "cls"} <= set(stats.columns)
    assert stats.loc[0, "cls"] == "always-on" and stats.loc[0, "density"] == 1.0
    assert stats.loc[1, "cls"] == "dead" and stats.loc[1, "max"] == 0
    z = lsae.encode_rows(sae, x)
    assert np.allclose(stats["density"], (z > 0).float().mean(0).numpy())
    counts = lsae.class_counts(stats)
    assert sum(counts.values()) == 64 and counts["dead"] >= 1 and counts["always-on"] >= 1


@pytest.mark.parametrize("kwargs, words", [
    (dict(k=0), "k must be at least 1"), (dict(n_latents=0), "n_latents must be between 1 and"),
    (dict(lr=float("nan")), "lr must be a finite"), (dict(lr=float("inf")), "lr must be a finite"),
    (dict(n_latents=8, k=9), "cannot exceed"), (dict(activation="gelu"), "activation must be"),
    (dict(val_fraction=1.0), "val_fraction")])
def test_config_rejects_bad_values_in_one_sentence(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SAEConfig(**kwargs)


def test_k_larger_than_default_latents_is_caught_when_width_is_known():
    with pytest.raises(ValueError, match="cannot exceed"):
        init_sae(torch.randn(20, 4), SAEConfig(k=40))      # 8 x 4 = 32 latents


# ---------------------------------------------------------------- activations of a text

def test_text_activations_on_tiny(tiny):
    text = read_text("palinka.txt")
    ta = text_activations(tiny, text, 1)
    kept = text_activations(tiny, text, 1, drop_first=False)
    assert ta.hook == "blocks.1.hook_mlp_out" and ta.acts.shape == (ta.n_tokens, tiny.d_model)
    assert kept.n_tokens == ta.n_tokens + 1 and ta.positions[0] == 1
    assert torch.equal(kept.acts[1:], ta.acts)
    assert all(t == text[a:b] for t, (a, b) in zip(kept.tokens, kept.spans))
    unique = dict.fromkeys(kept.spans)   # byte pieces of one character share a span
    assert "".join(text[a:b] for a, b in unique) == text[:kept.spans[-1][1]]
    post = text_activations(tiny, text, 0, site="mlp_post")
    assert post.acts.shape[1] == tiny.d_mlp
    with pytest.raises(ValueError, match="empty"):
        text_activations(tiny, "   ", 0)
    with pytest.raises(ValueError, match="at least 8"):
        text_activations(tiny, "Hi there.", 0)
    with pytest.raises(ValueError, match="out of range"):
        text_activations(tiny, text, tiny.n_layers)


def test_data_warning_only_when_tokens_are_few():
    assert "0.05 tokens per latent" in lsae.data_warning(230, 4608)
    assert lsae.data_warning(100_000, 4608) is None


# ---------------------------------------------------------------- selectivity

def test_word_mask_counts_every_sub_token_and_multiword_names(tiny):
    text = "Wine from Romania, and Czech Republic beer; romanian is not a match."
    enc = tiny.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    spans = enc["offset_mapping"]
    mask, missing = lsel.word_mask(text, spans, ["Romania", "Czech Republic", "Narnia"])
    marked = "".join(text[s:e] for (s, e), m in zip(spans, mask) if m)
    assert marked.replace(" ", "") == "RomaniaCzechRepublic"
    assert mask.sum() > 3              # the tiny tokenizer splits these names into pieces
    assert missing == ["Narnia"]


def test_label_tokens_errors_name_the_words():
    spans = [(0, 5), (6, 11)]
    cfg = lsel.SelectivityConfig(target=("Narnia", "Gondor"), control=("hello",))
    with pytest.raises(ValueError, match="Narnia, Gondor"):
        lsel.label_tokens("hello world", spans, cfg)
    with pytest.raises(ValueError, match="same tokens"):
        lsel.label_tokens("hello world", spans, lsel.SelectivityConfig(target=("hello",),
                                                                        control=("hello",)))
    with pytest.raises(ValueError, match="empty"):
        lsel.SelectivityConfig(target=())


def _planted(n=300, n_latents=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = np.zeros(n, bool)
    spots = np.linspace(1, n - 2, 8).astype(int)     # 8 target tokens spread over the text
    target[spots] = True
    control = np.zeros(n, bool)
    control[spots[:5] + 1] = True
    z = torch.rand(n, n_latents, generator=gen) * (torch.rand(n, n_latents, generator=gen) < 0.3)
    z[:, 0] = 0.0
    z[torch.as_tensor(target), 0] = 5.0        # latent 0 fires on the targets
    return z, target, control


def test_permutation_pvalues_uniform_for_label_blind_latents_small_for_a_planted_one():
    z, target, control = _planted()
    cfg = lsel.SelectivityConfig(n_shuffles=1000, seed=1)
    res = lsel.selectivity_from_masks(z, target, control, cfg)
    tab = res.table.set_index("latent")
    assert tab.loc[0, "rank"] == 1 and tab.loc[0, "survives"]
    assert tab.loc[0, "p"] <= 2 / 1001 and tab.loc[0, "p_fwer"] < 0.01
    blind = tab.drop(index=0)["p"].to_numpy()
    # uniform-ish: mean near 1/2, about 5% below 0.05, deciles all populated
    assert 0.4 < blind.mean() < 0.6
    assert (blind < 0.05).mean() < 0.1
    hist = np.histogram(blind, bins=10, range=(0, 1))[0]
    assert hist.min() > 0.4 * len(blind) / 10
    assert tab.drop(index=0)["survives"].sum() <= 2
    assert res.null_max.shape == (1000,)
    assert res.survivors_in_top(5) >= 1 and "survive" in res.sentence()


@pytest.mark.parametrize("pool", ["text", "labelled"])
def test_null_scores_shape_and_true_labels_reproduce_observed(pool):
    z, target, control = _planted(n=60, n_latents=30)
    target[:] = False
    target[[1, 2]] = True
    control[:] = False
    control[[3, 4]] = True
    cfg = lsel.SelectivityConfig(n_shuffles=2000, pool=pool)
    null = lsel.null_scores(z, target, control, cfg)
    assert null.shape == (2000, 30)
    obs = lsel.scores(z, torch.as_tensor(target), torch.as_tensor(control), cfg.eps)
    # with 2 of 4 labelled tokens there are only 6 labellings: the true one must be drawn
    if pool == "labelled":
        assert torch.isclose(null, obs, rtol=1e-5).all(1).any()


def test_token_latent_frame_and_charts_have_titled_axes():
    z, target, control = _planted(n=20, n_latents=6)
    tokens = [f"t{i}" for i in range(20)]
    frame = lsel.token_latent_frame(z, tokens, [0, 3], target, control)
    assert len(frame) == 40 and set(frame["role"]) <= {"target", "control", "other"}
    assert frame.query("latent == 0 and position == 10")["activation"].item() == 5.0
    hist = pd.DataFrame([{"epoch": e, "split": s, "loss": 1 / e, "mse": 1.0, "nmse": 1 / e,
                          "l0": 3.0, "dead_fraction": 0.1} for e in (1, 2) for s in ("train", "val")])
    stats = pd.DataFrame({"density": [0.0, 0.01, 0.5, 1.0], "cls": ["dead", "s", "s", "a"]})
    res = lsel.selectivity_from_masks(z, target, control, lsel.SelectivityConfig(n_shuffles=1000))
    for chart in (charts.training_curves(hist), charts.density_histogram(stats),
                  charts.token_latent_heatmap(frame), charts.null_max_chart(res.null_max, res.top())):
        spec = json.dumps(chart.to_dict())
        assert '"title"' in spec
    dens = charts.density_histogram(stats).to_dict()
    assert "1 dead" in json.dumps(dens["title"])


def test_analyze_on_tiny_end_to_end(tiny):
    res = sae_text.run(tiny, build(sae_text.SAETextConfig, {
        "layer": 2, "sae.n_latents": 128, "sae.k": 8, "sae.epochs": 3, "sae.lr": 1e-3,
        "selectivity.n_shuffles": 1000}))
    ta = text_activations(tiny, read_text("palinka.txt"), 2)
    s = res.summary()
    assert s["n_tokens"] == ta.n_tokens and s["n_latents"] == 128
    assert s["dead_latents"] + s["always-on_latents"] + s["selective_latents"] == 128
    assert s["n_target_tokens"] > 3 and s["n_control_tokens"] > 3
    assert res.warning is not None       # ~560 tokens for 128 latents: too few


# ---------------------------------------------------------------- CLI

def test_cli_sae_json_and_bad_input(capsys):
    from lab.cli import main
    rc = main(["sae", "--model", "tiny-gpt2", "--layer", "1", "--epochs", "2", "--n-latents", "64",
               "--k", "4", "--quiet", "--top", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n_latents"] == 64 and len(out["top_latents"]) == 3
    assert {"train", "val"} == set(out["final"]) and out["n_shuffles"] == 1000
    for argv, words in ([["--layer", "7"], "out of range"], [["--layer", "0", "--k", "0"], "k must"],
                        [["--layer", "0", "--target", "Narnia"], "Narnia"],
                        [["--layer", "0", "--lr", "inf"], "finite"]):
        assert main(["sae", "--model", "tiny-gpt2", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1


WORDS = ("Palinka is a fruit brandy. Hungary and Romania both make it from plums; in Hungary "
         "the law protects the name. Greece has tsipouro, also made from fruit, and the "
         "alcohol is strong. Romania calls its plum brandy tuica, and Hungary exports it.")


def test_cli_flags_of_the_old_command_and_out_folder(tmp_path, capsys):
    """--text-file, --site, --no-drop-first (was --keep-first), --no-tied (was --untied),
    --n-shuffles (was --shuffles); --out (was --save) writes the tables and a loadable SAE."""
    from lab.cli import main
    text = tmp_path / "t.txt"
    text.write_text(WORDS, encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["sae", "--model", "tiny-gpt2", "--device", "cpu", "--text-file", str(text),
               "--layer", "0", "--site", "mlp_post", "--no-drop-first", "--epochs", "1",
               "--n-latents", "32", "--k", "2", "--no-tied", "--n-shuffles", "50", "--quiet",
               "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "hook: blocks.0.mlp.hook_post" in printed and "survive" in printed
    names = {p.name for p in out.iterdir()}
    assert {"record.json", "history.csv", "latents.csv", "selectivity.csv",
            "sae.safetensors", "config.json"} <= names
    back = SparseAutoencoder.load(out)
    assert back.n_latents == 32 and not back.tied and back.d_in == 4 * 64   # d_mlp of tiny
    meta = json.loads((out / "config.json").read_text())["metadata"]
    assert meta["hook"] == "blocks.0.mlp.hook_post" and meta["dropped_first_token"] is False
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["text"] == WORDS and record["n_shuffles"] == 50


def _small(**paths):
    return build(sae_text.SAETextConfig, {"layer": 1, "sae.n_latents": 64, "sae.k": 4,
                                          "sae.epochs": 5, "selectivity.n_shuffles": 100, **paths})


def test_run_reports_epochs_and_a_stop_keeps_the_sae_so_far(tiny):
    from lab.experiment import Cancelled
    cfg, seen = _small(), []

    def stop_at_two(p):
        seen.append(p)
        if p.done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        sae_text.run(tiny, cfg, stop_at_two)
    assert [p.done for p in seen] == [0, 1, 2] and {p.unit for p in seen} == {"epoch"}
    assert seen[-1].message.startswith("Epoch 2/5: loss")
    state = seen[-1].partial
    kept = sae_text.partial_result(tiny, cfg, state)
    assert kept.epochs_done == 2 and not kept.finished and kept.sae is not state.sae
    full = sae_text.run(tiny, cfg)
    assert full.finished and kept.history.equals(full.history.head(4))   # the same 2 epochs
    assert json.loads(json.dumps(kept.to_record()))["epochs_done"] == 2


def test_rescore_changes_the_word_lists_without_retraining(tiny):
    res = sae_text.run(tiny, _small(seed=4, **{"sae.epochs": 2}))
    other = res.rescore(lsel.SelectivityConfig(target=("Hungary",), n_shuffles=100))
    assert other.sae is res.sae and other.z is res.z and other.stats is res.stats
    assert other.config.selectivity.seed == 4 and other.config.selectivity.target == ("Hungary",)
    assert 0 < other.selectivity.n_target < res.selectivity.n_target
    assert other.to_record()["config"]["selectivity"]["target"] == ["Hungary"]
    assert res.rescore(res.config.selectivity).selectivity.table.equals(res.selectivity.table)
    with pytest.raises(ValueError, match="Narnia"):
        res.rescore(lsel.SelectivityConfig(target=("Narnia",)))


def test_a_rescore_is_a_runner_job_keyed_on_the_run_and_the_word_lists(tiny):
    from lab.registry import for_config
    from lab.runner import Runner
    res = sae_text.run(tiny, _small(seed=4, **{"sae.epochs": 2}))
    sel = lsel.SelectivityConfig(target=("Hungary",), n_shuffles=100)
    cfg = sae_text.rescore_config(res, sel)
    assert for_config(cfg).name == "sae-rescore" and hash(cfg) == hash(sae_text.rescore_config(res, sel))
    runner = Runner(load=lambda m, d: tiny, workers=1, threads_per_job=None)
    a = runner.submit("tiny-gpt2", "cpu", cfg, "alice", reuse={"result": res})
    assert a.wait(30) and a.status == "done", a.error
    assert a.result.selectivity.table.equals(res.rescore(sel).selectivity.table)
    b = runner.submit("tiny-gpt2", "cpu", cfg, "bob", reuse={"result": res})
    assert b.status == "done" and b.result is a.result            # served from the cache
    other = sae_text.run(tiny, _small(seed=5, **{"sae.epochs": 2}))
    with pytest.raises(ValueError, match="another run"):
        sae_text.rescore_run(tiny, cfg, result=other)


def test_configs_hold_the_rules(tiny):
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        SAEConfig(epochs=0)
    with pytest.raises(ValueError, match="site must be one of"):
        sae_text.SAETextConfig(site="resid_post")
    with pytest.raises(ValueError, match="cannot exceed"):
        SparseAutoencoder(8, 4, k=5)                    # the model asks the config
    cfg = sae_text.SAETextConfig(seed=7)
    assert cfg.sae.seed == cfg.selectivity.seed == 7   # one seed
    default = min(6, tiny.n_layers - 1)
    assert cfg.layer_of(tiny) == default and sae_text.layer_value(default, tiny.n_layers) is None
    with pytest.raises(ValueError, match="out of range"):
        sae_text.SAETextConfig(layer=tiny.n_layers).layer_of(tiny)


# ---------------------------------------------------------------- the page (AppTest)

def test_page_trains_and_shows_results():
    from conftest import app_test
    at = app_test("views/sae_text.py")
    assert not at.exception
    at.number_input(key="sae_epochs").set_value(3)
    at.select_slider(key="sae_mult").set_value(2)
    at.button(key="sae_train").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    labels = {m.label: m.value for m in at.metric}
    assert {"Dead", "Always-on", "Selective", "Train nMSE", "Val nMSE"} <= set(labels)
    assert int(labels["Dead"]) + int(labels["Always-on"]) + int(labels["Selective"]) == 128
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) == 4                                  # curves, density, null, heatmap
    heat = specs[-1]
    assert heat["vconcat"][0]["encoding"]["y"]["title"] == "latent (index)"
    assert len(heat["vconcat"]) == -(-563 // 48)       # 563 tokens wrapped in lines of 48
    table = at.dataframe[0].value
    assert {"latent", "score", "p", "p_fwer", "n_chance", "survives"} <= set(table.columns)
    assert any("survive the control" in s.value for s in [*at.success, *at.error])
    assert any("tokens per latent" in w.value for w in at.warning)
    # the other null: labels swapped between the two lists only
    at.radio(key="sae_pool").set_value("labelled")
    at.run()
    assert not at.exception
    assert any("survive the control" in s.value for s in [*at.success, *at.error])
    # a second run stays in the session next to the first
    at.number_input(key="sae_epochs").set_value(2)
    at.button(key="sae_train").click()
    at.run()
    assert not at.exception
    assert len(at.selectbox(key="sae_view").options) == 2
    # a word list with no token in the text: one sentence naming the words
    at.text_input(key="sae_target").set_value("Narnia, Gondor")
    at.run()
    assert not at.exception
    assert any("Narnia, Gondor" in e.value for e in at.error)


def test_page_rejects_empty_text():
    from conftest import app_test
    at = app_test("views/sae_text.py")
    at.radio(key="sae_source").set_value("Paste")
    at.run()
    at.button(key="sae_train").click()
    at.run()
    assert not at.exception
    assert any("empty" in e.value for e in at.error)


def test_page_trains_a_relu_l1_sae():
    from conftest import app_test
    at = app_test("views/sae_text.py")
    at.radio(key="sae_activation").set_value("relu")
    at.number_input(key="sae_epochs").set_value(2)
    at.select_slider(key="sae_mult").set_value(1)
    at.run()
    at.button(key="sae_train").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    labels = {m.label: m.value for m in at.metric}
    assert float(labels["L0"]) > 0 and int(labels["Selective"]) > 0
    assert "relu" in " ".join(c.value for c in at.caption)
