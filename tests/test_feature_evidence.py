"""Feature evidence a class can trust (issue 25): held-out text really held out, an explicit
corpus in the job's key, the pick and the test on different texts, controls like the target,
target tokens as they occur, warnings in the record, and the SAELens fixes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lab import hooks
from lab.cache import DiskCache
from lab.corpus.sources import (Source, default_sources, held_out, resolve, split_text,
                                text_hash)
from lab.feature import FeatureConfig, run
from lab.feature.causal import target_token_ids
from lab.feature.config import PLACES
from lab.feature.store import corpus_config, corpus_sae
from lab.sae.load import read_sae as load_sae
from lab.sae.saelens import SAELensSAE, check_fits, save_saelens


# ---------------------------------------------------------------- sources and splits

def test_a_split_is_contiguous_and_shares_no_sentence():
    text = resolve("rivers.txt").text
    train, held = split_text(text)
    assert train and held and text.split() == (train + " " + held).split()
    assert held not in train and train[-40:] not in held
    assert 0.1 < len(held) / len(text) < 0.35
    assert resolve("rivers.txt:held-out").text == held and resolve("rivers.txt:train").text == train


def test_held_out_leaves_out_what_the_sae_was_trained_on():
    srcs = [resolve(n) for n in default_sources()]
    palinka = [{"name": "palinka.txt", "sha256": resolve("palinka.txt").sha256}]
    kept, left, notes = held_out(srcs, palinka)
    assert [s.name for s in left] == ["palinka.txt"]
    assert "palinka.txt left out: the SAE was trained on it" in notes
    assert "palinka.txt" not in [s.name for s in kept] and len(kept) == len(srcs) - 1
    # the corpus SAE trained on the train parts: each text contributes its held-out part only
    parts = [{"name": f"{n}:train", "sha256": resolve(f"{n}:train").sha256} for n in default_sources()]
    kept, left, notes = held_out(srcs, parts)
    assert [s.name for s in kept] == [f"{n}:held-out" for n in default_sources()]
    assert {s.sha256 for s in left} == {p["sha256"] for p in parts}
    # a text the lab cannot split is matched by hash alone; unknown training data keeps all
    extra = Source("extra", "Some text about Hungary.")
    assert held_out([extra], [{"sha256": text_hash("Some text about Hungary.  ")}])[0] == []
    kept, left, notes = held_out(srcs, None)
    assert len(kept) == len(srcs) and "training data unknown" in notes[0]


def test_a_bad_source_is_one_sentence():
    for name, match in [("nowhere.txt", "no corpus source"), ("leds.txt:test", "train or held-out"),
                        ("article:Nowhere", "no fetched article")]:
        with pytest.raises(ValueError, match=match) as e:
            resolve(name)
        assert "\n" not in str(e.value)


def test_the_sources_are_in_the_job_key_and_a_cached_article_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    disk = DiskCache(tmp_path / "results")
    a, b = FeatureConfig(), FeatureConfig(sources=("leds.txt", "rivers.txt"))
    assert a != b and disk._path(("m", "cpu", "feature", a)) != disk._path(("m", "cpu", "feature", b))
    before = FeatureConfig()
    (tmp_path / "articles").mkdir()
    (tmp_path / "articles" / "x.json").write_text(json.dumps({"title": "Hungary", "text": "Hungary " * 80}))
    assert FeatureConfig() == before           # fetching an article does not change the default job
    pinned = resolve("article:Hungary")
    assert pinned.name.startswith("article:Hungary@") and resolve(pinned.name).text == pinned.text


# ---------------------------------------------------------------- target tokens

@pytest.mark.parametrize("model", ["tiny", pytest.param("smol", marks=pytest.mark.slow)])
def test_target_ids_are_never_a_single_letter(model, request):
    lm = request.getfixturevalue(model)
    text = resolve("palinka.txt").text + "\n" + resolve("rivers.txt").text
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    from lab.feature.causal import word_starts
    starts = word_starts(text, [tuple(s) for s in enc["offset_mapping"]], PLACES)
    occurring = [i for i, s in zip(enc["input_ids"], starts) if s]
    ids = target_token_ids(lm.tokenizer, PLACES, occurring)
    pieces = [lm.tokenizer.decode([i]).strip() for i in ids]
    assert all(len(p) > 1 for p in pieces), pieces       # tiny-gpt2's BPE: every one is cut
    if model == "smol":
        assert len(ids) >= 30 and " Hungary" in [lm.tokenizer.decode([i]) for i in ids]
    assert target_token_ids(lm.tokenizer, ("A",), lm.tokenizer(" A", add_special_tokens=False)["input_ids"])


def test_word_starts_mark_the_first_piece_only():
    from lab.feature.causal import word_starts
    spans = [(0, 3), (3, 8), (8, 12)]          # "In", " Hung", "ary"
    assert list(word_starts("In Hungary", spans, ("Hungary",))) == [False, True, False]


# ---------------------------------------------------------------- a run on tiny-gpt2

@pytest.fixture(scope="module")
def default_run(tiny):
    return run(tiny, FeatureConfig(n_control=20))


def _assert_held_out(res, folder):
    trained = {t["sha256"] for t in load_sae(folder).training_data}
    names = {r["name"]: r for r in res.corpus["sources"]}
    used = set(res.top["source"])
    assert used and all(names[n]["role"] == "held out" for n in used)
    assert all(names[n]["sha256"] not in trained for n in used)
    for r in res.corpus["sources"]:
        assert len(r["sha256"]) == 64 and r["tokens"] > 0


def test_the_default_view_shows_held_out_examples_only(tiny, default_run):
    res = default_run
    folder = corpus_sae(tiny, 0)
    assert res.sae_source == folder
    _assert_held_out(res, folder)
    assert res.texts["select_from"] == "the SAE's training text" and res.texts["independent"]
    rec = json.loads(json.dumps(res.to_record()))
    assert rec["corpus"]["sources"] and rec["ranks"] and rec["verdict"] == res.verdict
    assert rec["controls"]["n"] == 20 and len(res.effects) == 21


def test_controls_are_like_the_target(default_run):
    c = default_run.controls
    assert abs(c["median_density"] / c["target_density"] - 1) <= 0.25
    assert abs(c["median_mean_active"] / c["target_mean_active"] - 1) <= 0.25
    for measure in ("mean_kl", "edit_size"):
        r = default_run.ranks[measure]
        assert r["of"] == 20 and 1 <= r["rank"] <= 21 and r["beats"] == 21 - r["rank"]


def test_the_corpus_sae_is_sized_to_its_data(tiny):
    meta = json.loads(open(f"{corpus_sae(tiny, 0)}/config.json").read())["metadata"]
    cfg = json.loads(open(f"{corpus_sae(tiny, 0)}/cfg.json").read())
    assert meta["n_tokens"] / corpus_config(meta["n_tokens"], 0).n_latents >= 20
    assert [t["name"] for t in meta["training_data"]] == [f"{n}:train" for n in default_sources()]
    assert cfg["prepend_bos"] is False and cfg["training_data"] == meta["training_data"]


def test_the_palinka_sae_is_one_name_away(tiny):
    res = run(tiny, FeatureConfig(sae=":palinka", n_control=3, k=5))
    assert "palinka.txt left out: the SAE was trained on it" in res.corpus["notes"]
    assert "palinka.txt" not in set(res.top["source"])
    assert any("tokens per latent" in w for w in res.warnings)      # 230 tokens, 4608 latents
    assert res.to_record()["warnings"] == list(res.warnings)


def test_one_text_for_pick_and_test_is_said(tiny):
    text = "Hungary and Romania and Greece make fruit spirits. " * 8
    res = run(tiny, FeatureConfig(sae=":palinka", select_text=text, text=text, n_control=2, k=3))
    assert not res.texts["independent"] and "not independent" in res.brief()["texts"]


def test_the_training_text_table_is_separate(tiny):
    res = run(tiny, FeatureConfig(sae=":palinka", include_training=True, n_control=1, k=3))
    assert set(res.train_examples["source"]) == {"palinka.txt"}
    assert "palinka.txt" not in set(res.top["source"])
    assert "training_text_examples" in res.frames()


@pytest.mark.slow
def test_the_default_view_on_smollm2(smol):
    res = run(smol, FeatureConfig())
    _assert_held_out(res, corpus_sae(smol, 0))
    c = res.controls
    assert c["n"] >= 20
    assert abs(c["median_density"] / c["target_density"] - 1) <= 0.25
    assert abs(c["median_mean_active"] / c["target_mean_active"] - 1) <= 0.25
    assert res.verdict and res.ranks["target_effect"]["of"] >= 20
    assert all(len(t.strip()) > 1 for t in res.target_tokens)


# ---------------------------------------------------------------- SAELens fixes

def _sae(d_in=64, n=32, hook="blocks.1.hook_mlp_out"):
    sae = SAELensSAE(d_in, n, "relu")
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
    return sae


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lab", "feature", "--model", "tiny-gpt2",
                           "--device", "cpu", "--quiet", *args], capture_output=True, text=True,
                          timeout=300)


def test_nan_weights_are_refused_in_one_sentence(tmp_path):
    sae = _sae()
    with torch.no_grad():
        sae.W_enc[3, 4] = float("nan")
        sae.b_dec[0] = float("inf")
    save_saelens(sae, tmp_path / "nan", hooks.mlp_out(1), "tiny-gpt2")
    with pytest.raises(ValueError, match="W_enc has 1 NaN or infinite"):
        load_sae(str(tmp_path / "nan"))
    r = _cli("--sae", str(tmp_path / "nan"))
    assert r.returncode == 2 and "NaN" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_prepend_bos_is_written_as_done_and_honoured(tmp_path, tiny):
    save_saelens(_sae(), tmp_path / "lab", hooks.mlp_out(1), "tiny-gpt2")
    cfg = json.loads((tmp_path / "lab" / "cfg.json").read_text())
    assert cfg["prepend_bos"] is False and load_sae(str(tmp_path / "lab")).prepend_bos is False
    cfg["prepend_bos"] = True
    (tmp_path / "lab" / "cfg.json").write_text(json.dumps(cfg))
    with_bos = load_sae(str(tmp_path / "lab"))
    assert with_bos.prepend_bos
    del cfg["prepend_bos"]                     # SAELens's default when a folder says nothing
    (tmp_path / "lab" / "cfg.json").write_text(json.dumps(cfg))
    assert load_sae(str(tmp_path / "lab")).prepend_bos
    from lab.feature.run import bos_token as _bos
    tiny.tokenizer.bos_token = tiny.tokenizer.bos_token or tiny.tokenizer.eos_token
    assert _bos(tiny, with_bos) == tiny.tokenizer.bos_token_id


def test_a_bos_sae_sees_the_bos_first(tmp_path, tiny):
    """Honoured on load: with prepend_bos the causal text's forward starts with the BOS."""
    from lab.feature.run import text_run
    save_saelens(_sae(), tmp_path / "b", hooks.mlp_out(1), "tiny-gpt2")
    cfg = json.loads((tmp_path / "b" / "cfg.json").read_text())
    (tmp_path / "b" / "cfg.json").write_text(json.dumps({**cfg, "prepend_bos": True}))
    loaded = load_sae(str(tmp_path / "b"))
    if tiny.tokenizer.bos_token_id is None:
        pytest.fail("tiny-gpt2's tokenizer has no BOS token to test with")
    base = text_run(tiny, loaded, "Hungary and Romania.", 64, 1)
    assert int(base.ids[0, 0]) == tiny.tokenizer.bos_token_id


def test_resid_pre_exists_only_for_existing_blocks(tmp_path, tiny):
    for layer, ok in ((tiny.n_layers - 1, True), (tiny.n_layers, False)):
        save_saelens(_sae(), tmp_path / str(layer), hooks.mlp_out(1), "tiny-gpt2")
        cfg = json.loads((tmp_path / str(layer) / "cfg.json").read_text())
        cfg["hook_name"] = f"blocks.{layer}.hook_resid_pre"
        (tmp_path / str(layer) / "cfg.json").write_text(json.dumps(cfg))
        loaded = load_sae(str(tmp_path / str(layer)))
        if ok:
            check_fits(loaded, tiny)
        else:
            with pytest.raises(ValueError, match="hook_resid_pre exists for those only"):
                check_fits(loaded, tiny)


def test_a_missing_hook_name_is_named(tmp_path):
    save_saelens(_sae(), tmp_path / "h", hooks.mlp_out(1), "tiny-gpt2")
    cfg = json.loads((tmp_path / "h" / "cfg.json").read_text())
    del cfg["hook_name"]
    (tmp_path / "h" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="names no hook point"):
        load_sae(str(tmp_path / "h"))
    r = _cli("--sae", str(tmp_path / "h"))
    assert r.returncode == 2 and "names no hook point" in r.stderr and "None" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
