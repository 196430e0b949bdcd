"""Fetching a Wikipedia article safely, with a disk cache.

Only `https` URLs on `wikipedia.org` hosts; `allowed_hosts` widens the allow-list (plain
`http` only for hosts named there); every redirect is followed by hand and re-checked against
the same rules; the body is streamed with a byte cap and a total deadline; every request
names itself in its User-Agent.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from lab.corpus.article import (Article, CorpusError, bundled_article, text_article, text_sha256,
                                utc_now)
from lab.corpus.extract import extract_article
from lab.paths import cache_dir

DEFAULT_ARTICLE = "https://en.wikipedia.org/wiki/Light-emitting_diode"
MAX_BYTES = 5 * 1024 * 1024          # the body cap: a long article is ~1.5 MB of HTML
TIMEOUT = (5.0, 20.0)                 # (connect, read) seconds for one socket operation
TOTAL_SECONDS = 60.0                  # a whole download, so a server that dribbles still ends
MAX_REDIRECTS = 5
USER_AGENT = ("gpt2-lab/0.1 (interpretability teaching lab; laminar-profile corpus fetcher) "
              "python-requests")
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024


# ---------------------------------------------------------------- URL rules

def article_url(title_or_url: str) -> str:
    """A URL as given, or an English Wikipedia URL for a bare title ("Light-emitting diode")."""
    text = (title_or_url or "").strip()
    if not text:
        raise CorpusError("Give a Wikipedia article title or an https://…wikipedia.org/ URL.")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        return text
    return "https://en.wikipedia.org/wiki/" + quote(text.replace(" ", "_"), safe="_()-,.'")


def allowed_hosts_from_env() -> list[str]:
    """Extra hosts from `$LAB_ALLOWED_HOSTS` (comma-separated): an operator's choice, e.g. a
    local mirror or a test server; empty by default."""
    return [h.strip().lower() for h in os.environ.get("LAB_ALLOWED_HOSTS", "").split(",") if h.strip()]


def check_url(url: str, allowed_hosts: list[str] | tuple[str, ...] = ()) -> None:
    """Raise CorpusError unless `url` is https on a wikipedia.org host, or on an allowed host
    (where plain http is accepted too)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    extra = {h.lower() for h in allowed_hosts}
    wiki = host == "wikipedia.org" or host.endswith(".wikipedia.org")
    if parts.scheme not in ("http", "https") or not host:
        raise CorpusError(f"{url!r} is not a web address: only https://…wikipedia.org/ URLs are fetched.")
    if not wiki and host not in extra:
        raise CorpusError(f"{host} is not on the allow-list: only wikipedia.org hosts are fetched "
                          "(a safety rule, since the lab may run on a shared server).")
    if parts.scheme == "http" and host not in extra:
        raise CorpusError(f"{url} uses plain http: only https is fetched from {host}.")


# ---------------------------------------------------------------- download

def _download(url: str, allowed_hosts, timeout, max_bytes: int, total_seconds: float) -> tuple[str, str]:
    """Follow redirects by hand (each one re-checked), stream the body under the cap.
    Returns (final URL, decoded HTML)."""
    import requests

    deadline = time.monotonic() + total_seconds
    with requests.Session() as session:
        session.headers["User-Agent"] = USER_AGENT
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, allowed_hosts)
            resp = _get(session, url, timeout)
            with resp:
                if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                    target = urljoin(url, resp.headers["Location"])
                    try:
                        check_url(target, allowed_hosts)
                    except CorpusError as e:
                        raise CorpusError(f"{url} redirects to {target}, which is refused: {e}") from None
                    url = target
                    continue
                if resp.status_code == 404:
                    raise CorpusError(f"There is no page at {url} (HTTP 404): check the title.")
                if resp.status_code != 200:
                    raise CorpusError(f"{urlsplit(url).hostname} answered HTTP {resp.status_code} for {url}.")
                body = _read_capped(resp, url, max_bytes, deadline, timeout)
                return url, body.decode(_charset(resp), errors="replace")
    raise CorpusError(f"{url} redirects more than {MAX_REDIRECTS} times; giving up.")


def _get(session, url: str, timeout):
    import requests
    try:
        return session.get(url, allow_redirects=False, stream=True, timeout=timeout)
    except requests.ConnectTimeout:
        raise CorpusError(f"Connecting to {urlsplit(url).hostname} timed out after {timeout[0]:g} s "
                          "(offline?).") from None
    except requests.ReadTimeout:
        raise CorpusError(f"{urlsplit(url).hostname} did not answer within {timeout[1]:g} s.") from None
    except requests.ConnectionError:
        raise CorpusError(f"Could not connect to {urlsplit(url).hostname} (no network here?).") from None
    except requests.RequestException as e:
        raise CorpusError(f"Fetching {url} failed: {type(e).__name__}.") from None


def _read_capped(resp, url: str, max_bytes: int, deadline: float, timeout) -> bytes:
    import requests
    cap_msg = f"The page at {url} is larger than the {max_bytes / 2**20:g} MB cap; not read."
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise CorpusError(cap_msg)
    chunks, size = [], 0
    try:
        for chunk in resp.iter_content(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise CorpusError(cap_msg)
            if time.monotonic() > deadline:
                raise CorpusError(f"Downloading {url} took too long; stopped.")
            chunks.append(chunk)
    except (requests.ConnectionError, requests.Timeout):  # read timeouts surface as these here
        raise CorpusError(f"{urlsplit(url).hostname} stopped sending within {timeout[1]:g} s.") from None
    return b"".join(chunks)


def _charset(resp) -> str:
    m = re.search(r"charset=([\w-]+)", resp.headers.get("Content-Type", ""), re.I)
    return m.group(1) if m else "utf-8"


# ---------------------------------------------------------------- cache and entry points

def _cache_path(url: str) -> Path:
    return cache_dir() / "articles" / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.json"


def _save(path: Path, article: Article) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".article-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(article), f, ensure_ascii=False)
    os.replace(tmp, path)  # atomic: a half-written file is never read as a cache hit


def cached_article(title_or_url: str) -> Article | None:
    """The cached copy of an article, or None; never touches the network."""
    path = _cache_path(article_url(title_or_url))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Article(**{**data, "source": "cache"})
    except (OSError, ValueError, TypeError):
        return None


def fetch_wikipedia(title_or_url: str, *, allowed_hosts: list[str] | tuple[str, ...] = (),
                    use_cache: bool = True, timeout: tuple[float, float] = TIMEOUT,
                    max_bytes: int = MAX_BYTES, total_seconds: float = TOTAL_SECONDS) -> Article:
    """An article's body text and metadata; from the disk cache when fetched before.

    `use_cache=False` downloads again (and refreshes the cache).
    """
    url = article_url(title_or_url)
    check_url(url, allowed_hosts)
    if use_cache and (hit := cached_article(url)) is not None:
        return hit
    final_url, html = _download(url, allowed_hosts, timeout, max_bytes, total_seconds)
    title, text, revision = extract_article(html)
    article = Article(text=text, title=title, url=final_url, source="live", revision_id=revision,
                      fetched_at=utc_now(), sha256=text_sha256(text))
    try:
        _save(_cache_path(url), article)
    except OSError:
        pass  # a read-only cache dir costs only the offline copy
    return article


def article_for(url: str = "", text: str = "") -> Article:
    """The corpus a run names: the article at `url` (a title or URL, through the allow-list
    plus `$LAB_ALLOWED_HOSTS`, cached), else `text`, else the bundled LED text."""
    if url:
        return fetch_wikipedia(url, allowed_hosts=allowed_hosts_from_env())
    return text_article(text) if text else bundled_article()

