"""Guards for bugs that a mutation audit planted and no test noticed (issue 16).

Each test names the bug it exists for and was run once against it, planted in a copy of the
tree: the L2 term's sign in activation maximization's loss, the dead-latent threshold of the
SAE statistics, the permutation p-value's +1, and the allow-list's dot boundary. (The fifth,
hooks that record every thread's forward, is caught by test_hooks.py's two-thread test.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.actmax import ActMaxConfig, initial_embeddings, optimize
from lab.corpus import CorpusError, check_url
from lab.hooks import resid_post
from lab.sae import SparseAutoencoder, class_counts, latent_stats
from lab import selectivity as lsel


# tiny tensors: one torch thread (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- actmax: loss = -a + l2 ||x||^2

def _actmax(**kw) -> ActMaxConfig:
    return ActMaxConfig(**{"hook": resid_post(1), "index": 5, "n_tokens": 3, "lr": 1e-2, **kw})


def test_actmax_loss_adds_the_l2_penalty(tiny):
    """Bug: `- cfg.l2 * ||x||^2` (the penalty's sign flipped) rewards large inputs."""
    cfg = _actmax(steps=1, l2=0.5, restarts=2)
    start = initial_embeddings(tiny, cfg).double()
    _, hist = optimize(tiny, cfg)
    first = hist[hist.step == 0].sort_values("restart")
    expected = -first.target.to_numpy() + 0.5 * start.pow(2).sum((1, 2)).numpy()
    np.testing.assert_allclose(first.loss.to_numpy(), expected, rtol=1e-5)


def test_a_strong_l2_penalty_shrinks_the_inputs(tiny):
    """The same bug seen as behaviour: a penalty that dominates the target pulls x to 0."""
    cfg = _actmax(steps=30, l2=100.0, lr=2e-3)
    start = initial_embeddings(tiny, cfg)
    final, hist = optimize(tiny, cfg)
    assert final.norm() < 0.5 * start.norm()
    loss = hist.groupby("step").loss.mean()
    assert loss.iloc[-1] < loss.iloc[0]


def test_l2_zero_leaves_only_the_target_in_the_loss(tiny):
    _, hist = optimize(tiny, _actmax(steps=2, l2=0.0))
    np.testing.assert_allclose(hist.loss, -hist.target, rtol=1e-6)


# ---------------------------------------------------------------- SAE statistics: the classes

def _sae_with_counts(counts: list[int], n: int = 10) -> tuple[SparseAutoencoder, torch.Tensor]:
    """A ReLU SAE on n one-hot-ish rows where latent j fires on exactly counts[j] rows."""
    sae = SparseAutoencoder(d_in=n, n_latents=len(counts), k=1, activation="relu")
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        w = torch.zeros(len(counts), n)
        for j, c in enumerate(counts):
            w[j, :c] = 1.0          # latent j reads rows 0..c-1 (row i is e_i)
        sae.W_enc.copy_(w)
    return sae, torch.eye(n)


def test_a_latent_firing_on_one_token_is_not_dead():
    """Bug: the dead threshold loosened to `count <= 1`: one token is enough to be alive."""
    sae, x = _sae_with_counts([0, 1, 2, 9, 10])
    stats = latent_stats(sae, x)
    assert stats["cls"].tolist() == ["dead", "selective", "selective", "selective", "always-on"]
    np.testing.assert_allclose(stats["density"], [0, 0.1, 0.2, 0.9, 1.0])
    assert class_counts(stats) == {"dead": 1, "always-on": 1, "selective": 3}


def test_latent_stats_values_on_a_hand_made_code():
    sae, x = _sae_with_counts([0, 1, 4])
    stats = latent_stats(sae, x * 3.0)      # the code is 3 wherever a latent fires
    np.testing.assert_allclose(stats["max"], [0, 3, 3])
    np.testing.assert_allclose(stats["mean"], [0, 0.3, 1.2])
    np.testing.assert_allclose(stats["mean_active"], [0, 3, 3])
    assert stats["latent"].tolist() == [0, 1, 2]


# ---------------------------------------------------------------- selectivity: p = (1 + #) / (1 + S)

def _code(n=40, n_latents=3):
    target = np.zeros(n, bool)
    target[[3, 11, 19, 27]] = True
    control = np.zeros(n, bool)
    control[[5, 13, 21]] = True
    z = torch.full((n, n_latents), 1.0)
    z[torch.as_tensor(target), 0] = 9.0      # latent 0: no shuffle beats the true labels
    z[:, 1] = 2.0                            # latent 1: the same everywhere, every draw ties
    return z, target, control


@pytest.mark.parametrize("pool", ["text", "labelled"])
def test_pvalues_keep_the_plus_one(pool):
    """Bug: p = #{null >= observed} / (S + 1) (the +1 dropped): a p-value of exactly 0."""
    z, target, control = _code()
    cfg = lsel.SelectivityConfig(n_shuffles=99, pool=pool, seed=3)
    tab = lsel.selectivity_from_masks(z, target, control, cfg).table.set_index("latent")
    null = lsel.null_scores(z, target, control, cfg)
    obs = lsel.scores(z, torch.as_tensor(target), torch.as_tensor(control), cfg.eps)
    beaten = (null[:, 0] >= obs[0]).sum().item()
    assert tab.loc[0, "p"] == pytest.approx((1 + beaten) / 100)
    assert tab.loc[1, "p"] == 1.0 and tab.loc[1, "p_fwer"] == 1.0   # ties count as "as high"
    assert (tab["p"] > 0).all() and (tab["p_fwer"] > 0).all() and (tab["p"] <= 1).all()
    if pool == "text":      # only 4 of 37 text tokens drawn: the true labelling is almost never hit
        assert beaten == 0 and tab.loc[0, "p"] == pytest.approx(1 / 100)
        assert tab.loc[0, "p_fwer"] == pytest.approx(1 / 100)


# ---------------------------------------------------------------- corpus: the allow-list

@pytest.mark.parametrize("url", [
    "https://evilwikipedia.org/wiki/LED",          # bug: endswith("wikipedia.org") accepts this
    "https://en.evilwikipedia.org/wiki/LED",
    "https://wikipedia.org.evil.com/wiki/LED",
    "https://xwikipedia.org/wiki/LED",
    "https://wikipedia.organ/wiki/LED",
])
def test_allow_list_needs_the_dot_boundary(url):
    with pytest.raises(CorpusError, match="not on the allow-list"):
        check_url(url)


@pytest.mark.parametrize("url", ["https://wikipedia.org/wiki/LED", "https://en.wikipedia.org/wiki/LED",
                                 "https://EN.Wikipedia.ORG/wiki/LED", "https://en.m.wikipedia.org/wiki/LED"])
def test_allow_list_accepts_wikipedia_hosts(url):
    check_url(url)
