"""The corpus scan: batched forwards equal one window at a time; peaks are the true maxima."""
import torch

from lab.hooks import resid_post, run_with_hooks
from lab.scan import corpus_texts, density, histogram, scan, scan_corpus, top_contexts


def test_corpus_dedups_and_windows(tiny):
    texts = corpus_texts({"copy": corpus_texts()["leds.txt"], "mine": "x " * 300})
    assert "copy" not in texts and "mine" in texts            # the same text counted once
    c = scan_corpus(tiny, {"mine": "hello world " * 100}, window_len=16)
    assert c.ids.shape[1] == 16 and c.n_tokens == c.ids.numel() and "mine" in c.names


def test_batched_scan_equals_window_by_window_and_peaks_are_maxima(tiny):
    c = scan_corpus(tiny, window_len=16)
    hook = resid_post(1)
    values = scan(tiny, c, hook, lambda h: h[..., [3, 7]], batch=5)
    assert values.shape == (c.ids.shape[0], 16, 2)
    for w in (0, 6, c.ids.shape[0] - 1):
        alone = run_with_hooks(tiny, [hook], input_ids=c.ids[w:w + 1])[hook][0, :, [3, 7]]
        torch.testing.assert_close(values[w], alone, rtol=1e-5, atol=1e-5)
    top = top_contexts(tiny, c, values[..., 0], k=5)
    masked = values[:, 1:, 0]
    assert top["activation"].iloc[0] == float(masked.max())
    assert top["activation"].is_monotonic_decreasing and top["window"].is_unique
    assert (top["position"] > 0).all()
    assert 0 <= density(values[..., 0]) <= 1
    assert histogram(values[..., 0])["count"].sum() == int((masked != 0).sum())
