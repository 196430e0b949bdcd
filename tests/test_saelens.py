"""SAEs in SAELens's folder format: the lab's own SAEs round-trip, a folder written by hand
encodes as its weights say, hook names map to the lab's, bad input is one sentence."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from lab import hooks
from lab.sae import SparseAutoencoder, to_zip_bytes
from lab.sae.load import read_sae as load_sae
from lab.sae.saelens import SAELensSAE, check_fits, lab_hook, save_saelens, saelens_hook


def _lab_sae(activation="topk", tied=True, d_in=16, n=64):
    torch.manual_seed(1)
    sae = SparseAutoencoder(d_in, n, k=4, activation=activation, tied=tied)
    with torch.no_grad():
        sae.scale.fill_(2.5)
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    return sae


@pytest.mark.parametrize("activation,tied", [("topk", True), ("topk", False), ("relu", False)])
def test_a_lab_sae_loads_back_with_identical_encodings(tmp_path, activation, tied):
    sae = _lab_sae(activation, tied)
    sae.save(tmp_path / "s", metadata={"hook": "blocks.1.hook_mlp_out", "model": "tiny-gpt2"})
    assert (tmp_path / "s" / "cfg.json").exists() and (tmp_path / "s" / "sae_weights.safetensors").exists()
    x = torch.randn(50, 16) * 3
    want = sae.encode(x).detach()
    (tmp_path / "lab").mkdir()          # the lab's own two files alone
    for name in ("config.json", "sae.safetensors"):
        (tmp_path / "lab" / name).write_bytes((tmp_path / "s" / name).read_bytes())
    (tmp_path / "sl").mkdir()           # SAELens's two files alone
    for name in ("cfg.json", "sae_weights.safetensors"):
        (tmp_path / "sl" / name).write_bytes((tmp_path / "s" / name).read_bytes())
    # both formats: the lab's first (its metadata says what the SAE was trained on)
    for folder, fmt in ((tmp_path / "s", "lab"), (tmp_path / "sl", "saelens"), (tmp_path / "lab", "lab")):
        loaded = load_sae(str(folder))
        assert loaded.format == fmt and loaded.hook == "blocks.1.hook_mlp_out"
        assert (loaded.d_in, loaded.n_latents, loaded.model) == (16, 64, "tiny-gpt2")
        got = loaded.sae.encode(x)
        assert torch.equal(got > 0, want > 0)                 # the same latents fire
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded.sae(x), sae(x)[0].detach(), rtol=1e-5, atol=1e-5)


def test_the_download_zip_holds_both_formats():
    data = to_zip_bytes(_lab_sae(), {"hook": "blocks.0.hook_mlp_out", "model": "m"})
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == {"config.json", "sae.safetensors", "cfg.json", "sae_weights.safetensors"}


def _write(folder, cfg: dict, weights: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "sae_weights.safetensors"))
    return str(folder)


# a 3 -> 4 SAE small enough to encode by hand
W_ENC = torch.tensor([[1.0, 0.0, -1.0, 2.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
B_ENC = torch.tensor([0.0, -0.5, 0.0, 0.1])
B_DEC = torch.tensor([1.0, 0.0, 0.0])
W_DEC = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10
X = torch.tensor([[2.0, 1.0, 0.5], [1.0, -1.0, 3.0]])


def _by_hand(x, b_dec_in=True):
    pre = (x - (B_DEC if b_dec_in else 0)) @ W_ENC + B_ENC
    return pre


def test_a_hand_written_v6_folder_encodes_as_its_weights_say(tmp_path):
    cfg = {"architecture": "standard", "d_in": 3, "d_sae": 4, "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.1.hook_resid_pre",
                        "model_name": "gpt2"}}
    w = {"W_enc": W_ENC, "b_enc": B_ENC, "W_dec": W_DEC, "b_dec": B_DEC}
    loaded = load_sae(_write(tmp_path / "relu", cfg, w))
    assert loaded.hook == hooks.resid_post(0) and loaded.model == "gpt2"
    torch.testing.assert_close(loaded.sae.encode(X), torch.relu(_by_hand(X)))
    z = loaded.sae.encode(X)
    torch.testing.assert_close(loaded.sae.decode(z), z @ W_DEC + B_DEC)
    torch.testing.assert_close(loaded.sae.decoder_weight, W_DEC)

    top = load_sae(_write(tmp_path / "topk", {**cfg, "architecture": "topk", "k": 1}, w))
    pre = _by_hand(X)
    want = torch.zeros_like(pre).scatter(1, pre.argmax(1, keepdim=True), pre.max(1, keepdim=True).values.relu())
    torch.testing.assert_close(top.sae.encode(X), want)

    thr = torch.tensor([0.5, 0.5, 10.0, 0.0])
    jump = load_sae(_write(tmp_path / "jump", {**cfg, "architecture": "jumprelu"}, {**w, "threshold": thr}))
    torch.testing.assert_close(jump.sae.encode(X), pre * (pre > thr))


def test_a_hand_written_pre_6_folder_with_norms(tmp_path):
    """The flat (SAELens 3-5) layout: hook_point, activation_fn_str/kwargs, no b_dec on input,
    and each runtime normalization as SAELens computes it."""
    w = {"W_enc": W_ENC, "b_enc": B_ENC, "W_dec": W_DEC, "b_dec": B_DEC}
    base = {"d_in": 3, "d_sae": 4, "hook_point": "blocks.0.hook_resid_pre", "apply_b_dec_to_input": False,
            "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2}}
    for norm in ("none", "constant_norm_rescale", "layer_norm"):
        loaded = load_sae(_write(tmp_path / norm, {**base, "normalize_activations": norm}, w))
        assert loaded.hook == hooks.EMBED and loaded.sae.k == 2
        if norm == "constant_norm_rescale":
            xn = X * (3 ** 0.5) / X.norm(dim=-1, keepdim=True)
        elif norm == "layer_norm":
            c = X - X.mean(-1, keepdim=True)
            xn = c / (c.std(-1, keepdim=True) + 1e-5)
        else:
            xn = X
        pre = xn @ W_ENC + B_ENC
        top = pre.topk(2, dim=1)
        want = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
        torch.testing.assert_close(loaded.sae.encode(X), want)
        z = loaded.sae.encode(X)       # decode undoes the normalization: exact for z's own x
        dz = torch.zeros_like(z)
        dz[:, 1] = 1.0
        moved = loaded.sae.decode(z + dz, X) - loaded.sae.decode(z, X)
        torch.testing.assert_close(loaded.sae.out_delta(dz @ W_DEC, X), moved, rtol=1e-5, atol=1e-5)


def test_encode_is_differentiable_in_x():
    sae = SAELensSAE(3, 4)
    with torch.no_grad():
        sae.W_enc.copy_(W_ENC)
    x = X.clone().requires_grad_(True)
    sae.encode(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_hook_names_map_both_ways():
    assert lab_hook("blocks.0.hook_resid_pre") == hooks.EMBED
    assert lab_hook("blocks.5.hook_resid_pre") == hooks.resid_post(4)
    assert lab_hook("blocks.3.hook_mlp_out") == hooks.mlp_out(3)
    assert lab_hook("blocks.3.mlp.hook_post") == hooks.mlp_post(3)
    assert saelens_hook(hooks.EMBED) == ("blocks.0.hook_resid_pre", 0)
    assert saelens_hook(hooks.resid_post(2)) == ("blocks.2.hook_resid_post", 2)
    with pytest.raises(ValueError, match="cannot splice") as e:
        lab_hook("blocks.3.attn.hook_z")
    assert "\n" not in str(e.value)


def test_a_saved_jumprelu_round_trips(tmp_path):
    sae = SAELensSAE(3, 4, "jumprelu")
    with torch.no_grad():
        sae.W_enc.copy_(W_ENC)
        sae.threshold.fill_(0.7)
    save_saelens(sae, tmp_path / "j", hooks.resid_post(1), "gpt2")
    back = load_sae(str(tmp_path / "j"))
    assert back.sae.activation == "jumprelu" and back.hook == hooks.resid_post(1)
    torch.testing.assert_close(back.sae.encode(X), sae.encode(X))


def _one_sentence(exc, match: str):
    msg = str(exc.value)
    assert match in msg and "\n" not in msg and "Traceback" not in msg, msg


def test_bad_input_is_one_sentence_each(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    w = {"W_enc": W_ENC, "b_enc": B_ENC, "W_dec": W_DEC, "b_dec": B_DEC}
    cfg = {"d_in": 3, "d_sae": 4, "hook_name": "blocks.1.hook_mlp_out"}
    cases = [
        (str(tmp_path / "nowhere"), "no folder"),
        ("someone/some-saes/blocks.8.hook_resid_pre", "offline"),
        (str(tmp_path), "neither cfg.json"),
    ]
    bad = tmp_path / "noweights"
    bad.mkdir()
    (bad / "cfg.json").write_text(json.dumps(cfg))
    cases.append((str(bad), "no sae_weights.safetensors"))
    cases.append((_write(tmp_path / "missing", cfg, {k: v for k, v in w.items() if k != "W_dec"}), "no W_dec"))
    cases.append((_write(tmp_path / "shape", {**cfg, "d_sae": 5}, w), "has shape"))
    cases.append((_write(tmp_path / "gated", {**cfg, "architecture": "gated"}, w), "unknown SAE activation"))
    cases.append((_write(tmp_path / "tanh", {**cfg, "activation_fn": "tanh-relu"}, w), "unknown SAE activation"))
    cases.append((_write(tmp_path / "head", {**cfg, "hook_name": "blocks.1.attn.hook_z"}, w), "cannot splice"))
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "cfg.json").write_text("{not json")
    cases.append((str(tmp_path / "json"), "not readable JSON"))
    for source, match in cases:
        with pytest.raises(ValueError) as e:
            load_sae(source)
        _one_sentence(e, match)

    wide = load_sae(_write(tmp_path / "wide", cfg, w))       # 3 wide: tiny-gpt2's are 64
    with pytest.raises(ValueError) as e:
        check_fits(wide, tiny)
    _one_sentence(e, "wide")
    deep = load_sae(_write(tmp_path / "deep", {**cfg, "hook_name": "blocks.40.hook_mlp_out"}, w))
    with pytest.raises(ValueError) as e:
        check_fits(deep, tiny)
    _one_sentence(e, "out of range")


def test_a_damaged_lab_folder_is_one_sentence(tmp_path):
    """The lab's own format (config.json + sae.safetensors): a damaged or empty weights file,
    weights of another size, metadata that is not an object: a ValueError, never a traceback."""
    good = tmp_path / "good"
    _lab_sae().save(good, metadata={"hook": "blocks.1.hook_mlp_out", "model": "tiny-gpt2"})
    cfg = json.loads((good / "config.json").read_text())

    def lab_folder(name, weights=None, config=None):
        f = tmp_path / name
        f.mkdir()
        (f / "config.json").write_text(json.dumps(config or cfg))
        (f / "sae.safetensors").write_bytes((good / "sae.safetensors").read_bytes()
                                            if weights is None else weights)
        return str(f)
    for source, match in [(lab_folder("damaged", b"\x00" * 20), "not a readable lab SAE"),
                          (lab_folder("empty", b""), "not a readable lab SAE"),
                          (lab_folder("wider", config={**cfg, "d_in": 32}), "size mismatch"),
                          (lab_folder("meta", config={**cfg, "metadata": [1]}), "not a JSON object")]:
        with pytest.raises(ValueError) as e:
            load_sae(source)
        _one_sentence(e, match)


def test_the_process_keeps_each_sae_once_and_reads_a_saved_again_folder_again(tmp_path, tiny):
    from lab.hooks import HookPoint
    from lab.sae import load as L
    folders = []
    for i in range(L.MAX_SAES + 1):
        folders.append(str(tmp_path / f"s{i}"))
        _lab_sae().save(folders[-1], metadata={"hook": "blocks.1.hook_mlp_out", "model": "tiny-gpt2"})
    first = L.load_sae(folders[0])
    assert L.load_sae(folders[0]) is first                   # kept: read once per process
    assert L.units(tiny, HookPoint.parse(hooks.mlp_out(1)), folders[0]) == 64
    assert L.units(tiny, HookPoint.parse(hooks.mlp_post(1))) == tiny.d_mlp
    wider = SparseAutoencoder(16, 96, k=4)
    wider.save(folders[0], metadata={"hook": "blocks.1.hook_mlp_out", "model": "tiny-gpt2"})
    again = L.load_sae(folders[0])                            # saved again: read again
    assert again is not first and again.n_latents == 96
    for f in folders[1:]:
        L.load_sae(f)
    assert len(L._CACHE) <= L.MAX_SAES and L.load_sae(folders[0]) is not again   # bounded: dropped
    fits = str(tmp_path / "fits")
    SparseAutoencoder(tiny.d_model, 96, k=4).save(fits, metadata={"hook": hooks.mlp_out(1)})
    assert L.fitting(tiny, fits, HookPoint.parse(hooks.mlp_out(1))).n_latents == 96
    with pytest.raises(ValueError, match="set hook to blocks.1.hook_mlp_out, got blocks.0.hook_mlp_out"):
        L.fitting(tiny, fits, HookPoint.parse(hooks.mlp_out(0)))
