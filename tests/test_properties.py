"""Properties that hold on every input, checked on generated ones (hypothesis; issue 16):
Top-K density, p-values in (0, 1], R^2 symmetric with a unit diagonal, and an extractor that
never returns navigation, footer or reference text."""
from __future__ import annotations

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")   # requirements-dev.txt pins it
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lab import selectivity as lsel  # noqa: E402
from lab.corpus import extract_article  # noqa: E402
from lab.hidden import HiddenConfig  # noqa: E402
from lab.hidden.capture import HiddenStates  # noqa: E402
from lab.hidden.stats import analyze  # noqa: E402
from lab.sae import SparseAutoencoder, class_counts, latent_stats  # noqa: E402

# deterministic (derandomize): CI sees the same examples every run; no example database files
PROPS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**31 - 1)


# tiny tensors: one torch thread (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- Top-K density

@PROPS
@given(seed=seeds, d_in=st.integers(1, 12), n_latents=st.integers(1, 40), k_frac=st.floats(0, 1),
       rows=st.integers(1, 50), bias=st.floats(-3, 3), scale=st.floats(0.01, 100))
def test_topk_density_is_k_over_latents_wherever_k_latents_can_fire(seed, d_in, n_latents, k_frac,
                                                                   rows, bias, scale):
    """Each row has min(k, #positive pre-activations) active latents, so the mean density is
    k / n_latents whenever every row has k positive pre-activations, and never more."""
    k = 1 + int(k_frac * (n_latents - 1))
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(d_in, n_latents, k=k, activation="topk")
    sae.reset_parameters(g)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(n_latents, generator=g) + bias)
    x = torch.randn(rows, d_in, generator=g) * scale
    stats = latent_stats(sae, x)
    density = stats["density"].to_numpy()
    assert ((density >= 0) & (density <= 1)).all()
    with torch.no_grad():
        positive = (sae.pre_acts(x) > 0).sum(1).clamp(max=k).double()
    assert density.mean() == pytest.approx(positive.mean().item() / n_latents, abs=1e-6)
    assert density.mean() <= k / n_latents + 1e-6
    with torch.no_grad():
        sae.b_enc.fill_(1e4)            # every pre-activation positive: exactly k per row
    assert latent_stats(sae, x)["density"].mean() == pytest.approx(k / n_latents, abs=1e-6)
    counts = class_counts(stats)
    assert sum(counts.values()) == n_latents
    assert counts["dead"] == (density == 0).sum() and counts["always-on"] == (density == 1).sum()


# ---------------------------------------------------------------- permutation p-values

@PROPS
@given(seed=seeds, n=st.integers(6, 60), n_latents=st.integers(1, 12), n_shuffles=st.integers(1, 60),
       pool=st.sampled_from(["text", "labelled"]), sparsity=st.floats(0, 1))
def test_pvalues_are_in_0_1_and_the_family_wise_one_is_larger(seed, n, n_latents, n_shuffles, pool,
                                                              sparsity):
    rng = np.random.default_rng(seed)
    role = rng.permutation(np.r_[[0, 1, 2], rng.integers(0, 3, n - 3)])  # >= 1 of each role
    target, control = role == 1, role == 2
    z = rng.exponential(size=(n, n_latents)) * (rng.random((n, n_latents)) < sparsity)
    cfg = lsel.SelectivityConfig(n_shuffles=n_shuffles, pool=pool, seed=seed % 1000)
    res = lsel.selectivity_from_masks(torch.as_tensor(z, dtype=torch.float32), target, control, cfg)
    tab = res.table
    floor = 1 / (n_shuffles + 1)
    for col in ("p", "p_fwer"):
        assert ((tab[col] >= floor - 1e-12) & (tab[col] <= 1)).all(), col
    assert (tab["p_fwer"] >= tab["p"] - 1e-12).all()   # the best of all latents beats one more often
    assert (tab["n_chance"] >= 0).all() and (tab["n_chance"] <= n_latents).all()
    assert tab["rank"].tolist() == list(range(1, n_latents + 1))
    assert (np.diff(tab["score"].to_numpy()) <= 0).all()
    assert (tab["survives"] == (tab["p_fwer"] < cfg.alpha)).all()


# ---------------------------------------------------------------- R^2 between states

@PROPS
@given(seed=seeds, S=st.integers(1, 6), T=st.integers(1, 8), d=st.integers(1, 6),
       constant=st.lists(st.booleans(), min_size=6, max_size=6), mix=st.floats(0, 1))
def test_r2_is_symmetric_with_a_unit_diagonal(seed, S, T, d, constant, mix):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(S, T, d)).astype(np.float32)
    values[1:] = (mix * values[:1] + (1 - mix) * values[1:]).astype(np.float32)  # correlated
    for s in range(S):
        if constant[s]:
            values[s] = np.float32(s)
    states = HiddenStates("test", values, tuple(f"s{s}" for s in range(S)), tuple(range(T)),
                          tuple(f"t{t}" for t in range(T)), "", T, T, 0.0)
    cfg = HiddenConfig(keep_first_token=True, points_per_state=4, extremes_per_state=2, n_bins=4)
    r2 = analyze(states, cfg).pairs.pivot(index="state_a", columns="state_b", values="r2").to_numpy()
    assert r2.shape == (S, S)
    np.testing.assert_array_equal(r2, r2.T)
    assert ((r2 >= 0) & (r2 <= 1)).all()
    varies = values.reshape(S, -1).std(1) > 0
    np.testing.assert_array_equal(np.diag(r2), np.where(varies, 1.0, 0.0))
    flat = values.reshape(S, -1).astype(np.float64)
    for a in np.flatnonzero(varies):
        for b in np.flatnonzero(varies):
            expect = np.corrcoef(flat[a], flat[b])[0, 1] ** 2 if a != b else 1.0
            assert r2[a, b] == pytest.approx(expect, abs=1e-6)


# ---------------------------------------------------------------- the extractor

# Noise the extractor must drop, each carrying the word NOISE (never in prose): inside the body...
BODY_NOISE = [
    '<nav class="vector-toc"><ul><li><a href="#x">NOISE contents</a></li></ul></nav>',
    '<div class="navbox"><table><tr><td>NOISE navbox</td></tr></table></div>',
    '<table class="infobox"><tr><th>NOISE</th><td>infobox</td></tr></table>',
    '<div role="note" class="hatnote">NOISE redirects here</div>',
    '<div class="thumb"><div class="thumbcaption">NOISE caption</div></div>',
    '<figure><figcaption>NOISE figure</figcaption></figure>',
    '<div class="sidebar">NOISE sidebar</div>',
    '<div class="ambox metadata">NOISE this article needs citations</div>',
    '<style>.NOISE{color:red}</style>', '<script>var NOISE = 1;</script>',
    '<div class="shortdescription">NOISE short description</div>',
    '<div class="catlinks">NOISE Categories</div>', '<div class="printfooter">NOISE Retrieved</div>',
]
INLINE_NOISE = ['<sup class="reference"><a href="#c">[NOISE]</a></sup>',
                '<span class="mw-editsection">[<a href="?action=edit">NOISE edit</a>]</span>',
                '<sup class="noprint">[<i>NOISE</i>]</sup>']
# ...and around it: the site's navigation, header and footer
PAGE_NOISE_BEFORE = ('<a class="mw-jump-link" href="#c">NOISE jump</a><header><nav>'
                     '<a href="/wiki/Main_Page">NOISE main page</a></nav></header>')
PAGE_NOISE_AFTER = ('<footer id="footer"><ul><li>NOISE This page was last edited</li>'
                    '<li>NOISE Privacy policy</li></ul></footer>')
# where the references start: the new skin's heading, the old skin's span, any capitalisation
MARKERS = ['<div class="mw-heading mw-heading2"><h2 id="{id}">NOISE References</h2></div>',
           '<h2><span class="mw-headline" id="{id}">NOISE References</span></h2>',
           '<h2 id="{id}">NOISE References</h2>']
AFTER_REFERENCES = ['<div class="reflist"><ol class="references"><li>NOISE Round, H. J.</li></ol></div>',
                    '<p>NOISE See also: a paragraph after the references</p>',
                    '<ul><li>NOISE External links</li></ul>']


@st.composite
def pages(draw):
    """(html, prose words in order, title) of a generated Wikipedia-like page."""
    words, parts = [], []
    for i in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 6))
        para = [f"prose{i}x{j}" for j in range(n)]
        words += para
        cut = draw(st.integers(0, n))
        inline = draw(st.sampled_from(["", *INLINE_NOISE]))
        tag = draw(st.sampled_from(["p", "li", "h3", "dd"]))
        text = " ".join(para[:cut]) + f" {inline} " + " ".join(para[cut:])
        parts.append(f"<ul><li>{text}</li></ul>" if tag == "li" else
                     f"<dl><dd>{text}</dd></dl>" if tag == "dd" else f"<{tag}>{text}</{tag}>")
        parts += draw(st.lists(st.sampled_from(BODY_NOISE), max_size=2))
    marker_id = draw(st.sampled_from(["References", "references", "REFERENCES"]))
    marker = draw(st.sampled_from(MARKERS)).format(id=marker_id)
    after = "".join(draw(st.lists(st.sampled_from(AFTER_REFERENCES), min_size=1, max_size=3)))
    depth = draw(st.integers(0, 3))        # the marker nested inside sections
    tail = marker + after
    for _ in range(depth):
        tail = f"<section>{tail}<p>NOISE later in the section</p></section>"
    body = "".join(parts) + tail + "".join(draw(st.lists(st.sampled_from(AFTER_REFERENCES), max_size=2)))
    title = draw(st.sampled_from(["Light-emitting diode", "Pálinka", "C++"]))
    html = (f"<html><head><title>{title} - Wikipedia</title></head><body>{PAGE_NOISE_BEFORE}"
            f'<main><h1 id="firstHeading">{title}</h1><div id="bodyContent">'
            f'<div class="noprint" id="siteSub">NOISE From Wikipedia</div>'
            f'<div id="mw-content-text" class="mw-body-content"><div class="mw-parser-output">'
            f"{body}</div></div></div></main>{PAGE_NOISE_AFTER}"
            '<script>RLCONF={"wgRevisionId":42};</script></body></html>')
    return html, words, title


@PROPS
@given(page=pages())
def test_the_extractor_keeps_the_prose_and_nothing_else(page):
    html, words, title = page
    got_title, text, revision = extract_article(html)
    assert "NOISE" not in text
    assert text.split() == words           # every prose word, in order, and nothing more
    assert got_title == title and revision == 42
