"""Top-K selection through the bfloat16 pass (lab.sae.select) against the float32 one: the same
latents per row, float32 values, and a training run that follows the float32 run."""
from __future__ import annotations

import pytest
import torch

from lab.sae import SAEConfig, SAETrainer, init_sae
from lab.sae.select import GROUP, LowPrecision, fast_select, top_m, topk_bf16


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _rows(n=2048, d=64, atoms=256, k=8, seed=0):
    """Sparse combinations of unit atoms plus noise (what an SAE should find)."""
    gen = torch.Generator().manual_seed(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, d, generator=gen), dim=1)
    idx = torch.rand(n, atoms, generator=gen).topk(k, dim=1).indices
    x = torch.zeros(n, atoms).scatter_(1, idx, torch.rand(n, k, generator=gen) + 0.5) @ dictionary
    return x + 0.05 * torch.randn(n, d, generator=gen)


def _float32_topk(sae, xs):
    pre = torch.addmm(sae.b_enc, xs - sae.b_dec, sae.W_enc.T)
    idx = pre.topk(sae.k, dim=1).indices.sort(dim=1).values
    return idx, pre.gather(1, idx)


@pytest.mark.parametrize("epochs", [0, 3])
def test_the_bfloat16_ranking_selects_what_float32_selects(epochs, monkeypatch):
    monkeypatch.setenv("LAB_SAE_BF16_SELECT", "0")
    x = _rows()
    cfg = SAEConfig(n_latents=512, k=16, epochs=max(epochs, 1), lr=1e-3, val_fraction=0.0)
    trainer = SAETrainer(x, cfg)
    for _ in range(epochs):
        trainer.epoch()
    sae = trainer.sae
    xs = x / sae.scale
    with torch.no_grad():
        want_idx, want_pre = _float32_topk(sae, xs)
        idx, pre = topk_bf16(xs - sae.b_dec, sae.W_enc, sae.b_enc, sae.k,
                             LowPrecision(sae.n_latents, sae.d_in, 256))
    assert torch.equal(idx, want_idx)                       # every row, every latent
    assert pre.dtype == torch.float32
    torch.testing.assert_close(pre, want_pre, rtol=1e-5, atol=1e-5)


def test_a_bfloat16_ranking_alone_would_not_select_the_same():
    """The float32 re-ranking is what makes it exact: ranking by the bfloat16 values alone
    picks other latents on some rows (so the test above can fail)."""
    x = _rows()
    sae = init_sae(x, SAEConfig(n_latents=512, k=16))
    xs = x / sae.scale
    with torch.no_grad():
        want, _ = _float32_topk(sae, xs)
        pre16 = torch.addmm(sae.b_enc.bfloat16(), (xs - sae.b_dec).bfloat16(), sae.W_enc.bfloat16().T)
        rough = pre16.float().topk(sae.k, dim=1).indices.sort(dim=1).values
    assert not torch.equal(rough, want)


def test_training_with_the_bfloat16_ranking_follows_float32(monkeypatch):
    x = _rows(n=1024)
    cfg = SAEConfig(n_latents=512, k=16, epochs=3, lr=1e-3, batch_size=128)
    runs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("LAB_SAE_BF16_SELECT", flag)
        trainer = SAETrainer(x, cfg)
        assert (trainer.low is not None) == (flag == "1")
        runs[flag] = [trainer.epoch() for _ in range(cfg.epochs)]
    for a, b in zip(runs["0"], runs["1"]):
        assert a["l0"] == b["l0"] and a["dead_fraction"] == b["dead_fraction"]
        assert a["val_nmse"] == pytest.approx(b["val_nmse"], rel=1e-4)


@pytest.mark.parametrize("amx,avx512_bf16,used", [(True, False, True), (False, True, True),
                                                   (False, False, False)])
def test_the_bfloat16_ranking_follows_the_cpus_bfloat16_units(monkeypatch, amx, avx512_bf16, used):
    """On by default where the CPU multiplies bfloat16 natively (AMX or AVX512-BF16: an AMD
    EPYC has only the latter), off where oneDNN would emulate it."""
    from lab.sae import select
    monkeypatch.delenv("LAB_SAE_BF16_SELECT", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    select._fast_bf16.cache_clear()
    try:
        assert fast_select("cpu", 32, 6144) == used
    finally:
        select._fast_bf16.cache_clear()


def test_where_the_bfloat16_ranking_is_used(monkeypatch):
    monkeypatch.setenv("LAB_SAE_BF16_SELECT", "1")
    assert fast_select("cpu", 32, 6144)
    assert not fast_select("cpu", 32, 48)            # 1.5 k candidates are every latent
    assert fast_select("cpu", 32, 49)
    assert not fast_select("cuda", 32, 6144)         # a GPU's float32 pass is not the cost
    assert SAETrainer(_rows(n=64), SAEConfig(activation="relu", n_latents=512, epochs=1)).low is None
    monkeypatch.setenv("LAB_SAE_BF16_SELECT", "0")
    assert not fast_select("cpu", 32, 6144)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("latents,m", [(6144, 48), (4608, 48), (512, 24), (1001, 12), (96, 48)])
def test_top_m_finds_the_values_topk_finds(dtype, latents, m):
    """The grouped two-pass top m against torch.topk: the same values on every row, on
    Gaussian rows, on rows whose largest entries crowd into one group, and with bfloat16's
    many ties (1001 latents do not split into groups, 96 are too few: the plain path)."""
    gen = torch.Generator().manual_seed(latents + m)
    pre = torch.randn(64, latents, generator=gen)
    G = latents // GROUP
    pre[:8, ::max(G, 1)] += 10          # rows 0-7: one whole group (latents 0, G, 2G, ...) on top
    pre[8:16] = pre[8:16].round()       # rows 8-15: ties everywhere
    pre = pre.to(dtype)
    idx = top_m(pre, m)
    assert idx.shape == (64, m)
    assert all(len(set(row)) == m for row in idx.tolist())    # m distinct latents per row
    want = pre.topk(m, dim=1).values
    got = pre.gather(1, idx).sort(dim=1, descending=True).values
    assert torch.equal(got, want)
