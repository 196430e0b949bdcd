"""Corpora for the experiments: a Wikipedia article fetched safely, bundled texts, token windows.

    fetch_wikipedia(title_or_url) -> Article     live, or from the disk cache when seen before
    bundled_article("leds.txt")   -> Article     a text written for this project (offline default)
    text_article(text, label)     -> Article     pasted or uploaded text
    article_for(url, text)        -> Article     what a config names: url, else text, else bundled
    tokenize(tokenizer, text)     -> LongTensor [n_tokens]
    sample_windows(ids, n, len, seed) -> LongTensor [n, len]
    fit_windows(ids, n, len, seed, fit) -> (n, len, windows)   "use what fits" when too short

The app may run on a shared class server, so fetching is safe by default (lab.corpus.fetch):
only `https` URLs on `wikipedia.org` hosts, redirects re-checked, the body capped in bytes
and time. Every failure is a `CorpusError` (a ValueError) whose message is one sentence.
"""
from lab.corpus.article import (BUNDLED_TEXT, Article, CorpusError, CorpusTooShort,
                                bundled_article, bundled_texts, text_article)
from lab.corpus.extract import extract_article
from lab.corpus.fetch import (DEFAULT_ARTICLE, MAX_BYTES, MAX_REDIRECTS, TIMEOUT, TOTAL_SECONDS,
                              USER_AGENT, allowed_hosts_from_env, article_for, article_url,
                              cached_article, check_url, fetch_wikipedia)
from lab.corpus.windows import fit_windows, sample_windows, token_ids, tokenize, windows_that_fit

__all__ = ["BUNDLED_TEXT", "DEFAULT_ARTICLE", "MAX_BYTES", "MAX_REDIRECTS", "TIMEOUT",
           "TOTAL_SECONDS", "USER_AGENT", "Article", "CorpusError", "CorpusTooShort",
           "allowed_hosts_from_env", "article_for", "article_url", "bundled_article",
           "bundled_texts", "cached_article", "check_url", "extract_article", "fetch_wikipedia",
           "fit_windows", "sample_windows", "text_article", "token_ids", "tokenize", "windows_that_fit"]
