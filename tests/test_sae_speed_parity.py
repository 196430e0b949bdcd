"""The trainer's step without autograd (lab.sae.train._gradients: the kernels' backward written
into the .grad buffers) against plain dense autograd, and against the autograd functions it
replaces, bit for bit."""
from __future__ import annotations

import pytest
import torch

from lab import sae as lsae
from lab.sae import SAEConfig, init_sae
from lab.sae.kernels import _DenseCode, _stable_order
from lab.sae.train import _gradients


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _case(activation, tied, b_enc=None, dtype=torch.float64):
    x = torch.randn(96, 16, dtype=torch.float32) * 2 + 0.5
    cfg = SAEConfig(n_latents=64, k=4, activation=activation, tied=tied, l1=0.05)
    sae = init_sae(x, cfg).to(dtype)
    if b_enc is not None:
        with torch.no_grad():
            sae.b_enc.fill_(b_enc)
    return sae, (x / sae.scale.float()).to(dtype), cfg


def _buffers(sae):
    return [p.grad.clone() for p in sae.parameters()]


# (activation, b_enc, dense flag): Top-K; a sparse ReLU code; a dense one (the dense step)
CASES = [("topk", None, False), ("relu", -1.0, False), ("relu", None, True)]


@pytest.mark.parametrize("activation,b_enc,dense", CASES)
@pytest.mark.parametrize("tied", [True, False])
def test_step_gradients_equal_dense_autograd(activation, b_enc, dense, tied):
    sae, xs, cfg = _case(activation, tied, b_enc)
    loss, mse, vals, cols = _gradients(sae, xs, cfg, dense, None)
    assert (cols is None) == dense
    recon_d, z = lsae.dense_forward(sae, xs)
    loss_d, mse_d = lsae.loss_terms(sae, xs, recon_d, z, cfg.l1)
    ref = torch.autograd.grad(loss_d, list(sae.parameters()))
    assert abs(float(loss) - float(loss_d)) < 1e-12 and abs(float(mse) - float(mse_d)) < 1e-12
    for (name, _), a, b in zip(sae.named_parameters(), _buffers(sae), ref):
        assert b.abs().max() > 0, name
        assert (a - b).abs().max() < 1e-10, name


@pytest.mark.parametrize("activation,b_enc,dense", CASES)
@pytest.mark.parametrize("tied", [True, False])
def test_step_gradients_are_the_autograd_functions_bit_for_bit(activation, b_enc, dense, tied):
    """float32, as the trainer runs: the same roundings as autograd through _SparseCode /
    _DenseCode and loss_terms, so a run without the graph takes the very same steps."""
    sae, xs, cfg = _case(activation, tied, b_enc, torch.float32)
    pre = torch.full((128, sae.n_latents), float("nan"))   # larger than the batch, not zeroed
    _gradients(sae, xs, cfg, dense, pre)
    mine = _buffers(sae)
    if dense:
        recon, vals = _DenseCode.apply(xs, sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec)
    else:
        recon, vals = sae.sparse_forward(xs, sae.active_code(xs))
    loss, _ = lsae.loss_terms(sae, xs, recon, vals, cfg.l1)
    ref = torch.autograd.grad(loss, list(sae.parameters()))
    for (name, _), a, b in zip(sae.named_parameters(), mine, ref):
        assert torch.equal(a, b), name


def test_gradient_buffers_are_overwritten_not_accumulated():
    sae, xs, cfg = _case("topk", True, dtype=torch.float32)
    _gradients(sae, xs, cfg, False, None)
    first = _buffers(sae)
    buffers = [p.grad for p in sae.parameters()]
    _gradients(sae, xs, cfg, False, None)
    assert all(p.grad is b for p, b in zip(sae.parameters(), buffers))   # reused, not new
    assert all(torch.equal(a, p.grad) for a, p in zip(first, sae.parameters()))


@pytest.mark.parametrize("n_latents", [6144, 1 << 16, (1 << 16) + 5])
def test_the_latent_order_is_torchs_stable_argsort(n_latents):
    """The 16-bit radix path and torch's sort agree entry for entry, ties (one latent in many
    rows) kept in batch-row order: the gradient rows are summed in that order."""
    gen = torch.Generator().manual_seed(0)
    cols = torch.randint(0, n_latents, (4096,), generator=gen)
    cols[::7] = n_latents - 1            # the largest latent, and many ties
    assert torch.equal(_stable_order(cols, n_latents), torch.argsort(cols, stable=True))
