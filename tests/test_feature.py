"""The feature view: the SAE splice (unedited = the model's own logits, bit for bit, on GPT-2
and Llama alike), ablation and steering, hooks that never leak, and the run through its
contract (latent picking, controls, examples, bad input in one sentence)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pandas as pd
import pytest
import torch

from lab import hooks
from lab.experiment import Cancelled
from lab.feature import Edit, FeatureConfig, edited_logits, keep_sae, logits, partial_result, run
from lab.feature.examples import mark_targets
from lab.feature.splice import splice
from lab.sae import SparseAutoencoder
from lab.sae.load import read_sae as load_sae
from lab.sae.saelens import LoadedSAE, SAELensSAE


def _loaded(lm, hook: str, n: int = 96, seed: int = 0, activation: str = "relu") -> LoadedSAE:
    """A random SAE for `hook` of `lm` whose latents fire on about half of the tokens."""
    d_in = hooks.width(lm, hook)
    gen = torch.Generator().manual_seed(seed)
    sae = SAELensSAE(d_in, n, activation, k=8 if activation == "topk" else None)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, n, generator=gen) / d_in ** 0.5)
        sae.W_dec.copy_(torch.randn(n, d_in, generator=gen) / d_in ** 0.5)
    return LoadedSAE(sae.to(lm.device), hook, d_in, n, "test")


def _ids(lm, text="Pálinka is distilled in Hungary, Romania and Greece from fruit."):
    return torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])


def _n_hooks(lm) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())


def _check_splice(lm, hook_names):
    ids = _ids(lm)
    base = logits(lm, ids)
    for hook in hook_names:
        loaded = _loaded(lm, hook)
        for skip in (True, False):
            assert torch.equal(edited_logits(lm, loaded, ids, Edit("none"), skip), base), hook
        # a latent that never fires: ablating it changes nothing, exactly
        with torch.no_grad():
            loaded.sae.b_enc[3] = -1e6
        assert torch.equal(edited_logits(lm, loaded, ids, Edit("ablate", 3)), base), hook
        # one that always fires: ablating it changes the logits
        with torch.no_grad():
            loaded.sae.b_enc[5] = 50.0
        assert not torch.allclose(edited_logits(lm, loaded, ids, Edit("ablate", 5)), base), hook
        # the reconstruction alone (no error term) is not the model's output
        assert not torch.allclose(edited_logits(lm, loaded, ids, Edit("reconstruct")), base), hook
    assert _n_hooks(lm) == 0


def test_splice_without_edit_is_exact_on_gpt2(tiny):
    _check_splice(tiny, [hooks.EMBED, hooks.resid_post(0), hooks.mlp_out(1), hooks.mlp_post(2)])


@pytest.mark.slow
def test_splice_without_edit_is_exact_on_smollm2(smol):
    _check_splice(smol, [hooks.EMBED, hooks.resid_post(3), hooks.mlp_out(6), hooks.mlp_post(2)])


def test_steering_moves_the_output_along_the_decoder_direction(tiny):
    ids = _ids(tiny)
    loaded = _loaded(tiny, hooks.resid_post(1))
    base = logits(tiny, ids)
    small = edited_logits(tiny, loaded, ids, Edit("steer", 7, 0.5))
    big = edited_logits(tiny, loaded, ids, Edit("steer", 7, 20.0))
    assert torch.equal(small[0], base[0]) and torch.equal(big[0], base[0])   # position 0 untouched
    assert (big - base)[1:].abs().mean() > (small - base)[1:].abs().mean() > 0


def test_hooks_are_removed_on_error_and_ignore_other_threads(tiny):
    loaded = _loaded(tiny, hooks.resid_post(0))
    ids = _ids(tiny)
    base = logits(tiny, ids)

    def boom(x):
        raise RuntimeError("patch failed")
    with pytest.raises(RuntimeError):
        with splice(tiny, loaded.hook, boom):
            logits(tiny, ids)
    assert _n_hooks(tiny) == 0
    seen = {}
    with splice(tiny, loaded.hook, lambda x: x * 0):        # this thread's forwards only
        t = threading.Thread(target=lambda: seen.update(out=logits(tiny, ids)))
        t.start()
        t.join()
        assert not torch.allclose(logits(tiny, ids), base)
    assert torch.equal(seen["out"], base)
    assert _n_hooks(tiny) == 0


@pytest.fixture(scope="module")
def sae_folder(tiny, tmp_path_factory):
    """A lab SAE trained briefly on tiny-gpt2's block 1 MLP output, kept the page's way."""
    from lab.sae_text import SAETextConfig, run as train
    from lab.sae import SAEConfig
    res = train(tiny, SAETextConfig(layer=1, sae=SAEConfig(epochs=3, expansion=2)))
    return res, keep_sae(res.sae, res.metadata())


def test_keep_sae_names_the_folder_by_its_weights(sae_folder):
    res, folder = sae_folder
    assert keep_sae(res.sae, res.metadata()) == folder
    assert load_sae(folder).hook == res.acts.hook


def test_run_on_a_kept_sae(tiny, sae_folder):
    res, folder = sae_folder
    cfg = FeatureConfig(sae=folder, n_control=3, k=5, corpus="Hungary and Romania. " * 60)
    events = []
    out = run(tiny, cfg, events.append)
    assert events[-1].fraction == pytest.approx(1.0) and out.finished
    assert out.picked and 0 <= out.latent < res.sae.n_latents
    eff = out.effects
    assert list(eff["role"]) == ["target", "control", "control", "control"]
    assert eff["latent"].is_unique and out.latent not in set(eff["latent"][1:])
    assert len(out.top) == 5 and out.top["activation"].is_monotonic_decreasing
    assert "extra text (config)" in out.corpus["names"]
    assert set(out.output["direction"]) == {"promoted", "suppressed"}
    assert out.kl["position"].max() == out.text_tokens - 1
    record = out.to_record()
    assert json.loads(json.dumps(record)) == record
    assert all(isinstance(f, pd.DataFrame) and len(f) for f in out.frames().values())
    assert "causal" in out.brief() and out.recon_kl is not None and out.recon_kl > 0
    again = run(tiny, cfg)
    assert again.latent == out.latent and list(again.effects["latent"]) == list(eff["latent"])
    torch.testing.assert_close(torch.tensor(again.effects["mean_kl"].values),
                               torch.tensor(eff["mean_kl"].values))


def test_a_stop_during_the_scan_keeps_the_windows_scanned(tiny, sae_folder):
    _, folder = sae_folder
    cfg = FeatureConfig(sae=folder, latent=1, n_control=1, k=3)
    seen = []

    def stop(p):
        seen.append(p)
        if "Scanning" in p.message:
            raise Cancelled
    with pytest.raises(Cancelled):
        run(tiny, cfg, stop)
    kept = partial_result(tiny, cfg, seen[-1].partial)
    assert not kept.finished and 0 < kept.examples["windows_done"] < kept.corpus["windows"]
    assert len(kept.effects) == 0 and json.dumps(kept.to_record())   # the scan comes first


def test_bad_input_is_one_sentence(tiny, sae_folder):
    _, folder = sae_folder
    for kwargs, match in [({"latent": 10 ** 6}, "out of range"),
                          ({"latent": None, "target": ("Atlantis",)}, "none of the target words")]:
        with pytest.raises(ValueError, match=match) as e:
            run(tiny, FeatureConfig(sae=folder, **kwargs))
        assert "\n" not in str(e.value)
    for kwargs, match in [({"target": ()}, "target word list is empty"),
                          ({"text": "   "}, "only whitespace"), ({"mode": "zero"}, "mode must be"),
                          ({"latent": -1}, "latent must be"), ({"alpha": float("nan")}, "alpha")]:
        with pytest.raises(ValueError, match=match):
            FeatureConfig(**kwargs)
    r = subprocess.run([sys.executable, "-m", "lab", "feature", "--model", "tiny-gpt2", "--device",
                        "cpu", "--sae", folder, "--latent", "99999", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "out of range" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_prints_examples_output_and_ablation(tiny, sae_folder, tmp_path):
    _, folder = sae_folder
    text = tmp_path / "t.txt"
    text.write_text("Greece and Hungary make fruit spirits; Romania does too.")
    r = subprocess.run([sys.executable, "-m", "lab", "feature", "--model", "tiny-gpt2", "--device",
                        "cpu", "--sae", folder, "--latent", "2", "--text-file", str(text),
                        "--n-control", "2", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for key in ("top 20 examples", "output effect, promoted", "causal", "among the controls"):
        assert key in r.stdout, r.stdout


def test_target_words_in_examples():
    top = pd.DataFrame({"before": [" in Hung", " to", " the"], "token": ["ary", " Czech", " fruit"],
                        "after": [" and", " Republic", "."]})
    out = mark_targets(top, ("Hungary", "Czech Republic"))
    assert list(out["word"]) == ["Hungary", "Czech", "fruit"]
    assert list(out["target"]) == [True, True, False]


def test_a_lab_sae_and_its_saelens_copy_give_the_same_feature_numbers(tiny, tmp_path):
    """The lab format is converted on load; the SAELens files of the same SAE agree."""
    sae = SparseAutoencoder(hooks.width(tiny, hooks.mlp_out(1)), 128, k=8)
    sae.save(tmp_path / "both", {"hook": hooks.mlp_out(1), "model": tiny.name})
    a, b = load_sae(str(tmp_path / "both")), None
    (tmp_path / "lab").mkdir()
    for name in ("config.json", "sae.safetensors"):
        (tmp_path / "lab" / name).write_bytes((tmp_path / "both" / name).read_bytes())
    b = load_sae(str(tmp_path / "lab"))
    x = torch.randn(20, a.d_in)
    torch.testing.assert_close(a.sae.encode(x), b.sae.encode(x))
