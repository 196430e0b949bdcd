"""Corpora for the experiments: a Wikipedia article fetched safely, bundled texts, token windows.

    fetch_wikipedia(title_or_url) -> Article     live, or from the disk cache when seen before
    bundled_article("leds.txt")   -> Article     a text written for this project (offline default)
    text_article(text, label)     -> Article     pasted or uploaded text
    tokenize(tokenizer, text)     -> LongTensor [n_tokens]
    sample_windows(ids, n, len, seed) -> LongTensor [n, len]

The app may run on a shared class server, so fetching is safe by default: only `https` URLs on
`wikipedia.org` hosts; `allowed_hosts` widens the allow-list (plain `http` only for hosts named
there); every redirect is followed by hand and re-checked against the same rules; the body is
streamed with a byte cap and a total deadline; every request names itself in its User-Agent.
Every failure is a `CorpusError` (a ValueError) whose message is one sentence.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import torch

from lab.paths import TEXTS_DIR, cache_dir

DEFAULT_ARTICLE = "https://en.wikipedia.org/wiki/Light-emitting_diode"
BUNDLED_TEXT = "leds.txt"
MAX_BYTES = 5 * 1024 * 1024          # the body cap: a long article is ~1.5 MB of HTML
TIMEOUT = (5.0, 20.0)                 # (connect, read) seconds for one socket operation
TOTAL_SECONDS = 60.0                  # a whole download, so a server that dribbles still ends
MAX_REDIRECTS = 5
USER_AGENT = ("gpt2-lab/0.1 (interpretability teaching lab; laminar-profile corpus fetcher) "
              "python-requests")
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024


class CorpusError(ValueError):
    """A corpus could not be had; the message is one sentence for the user."""


class CorpusTooShort(CorpusError):
    """Fewer tokens than the windows need; `offers` lists (n_windows, window_len) that fit."""

    def __init__(self, message: str, offers: list[tuple[int, int]]):
        super().__init__(message)
        self.offers = offers


@dataclass(frozen=True)
class Article:
    """A corpus text with where it came from."""

    text: str
    title: str
    url: str                  # final URL after redirects ("" for texts not fetched)
    source: str               # "live", "cache", "bundled", "pasted", "file"
    revision_id: int | None   # Wikipedia's revision of the page, when the page states it
    fetched_at: str           # ISO-8601 UTC time of the download (or of loading)
    sha256: str               # of `text` (UTF-8), to tell two corpora apart

    @property
    def n_chars(self) -> int:
        return len(self.text)

    def meta(self) -> dict:
        """Everything but the text, for downloads and the CLI."""
        return {k: v for k, v in asdict(self).items() if k != "text"}


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


# ---------------------------------------------------------------- extraction

# Inside the article body but not prose: navigation, edit links, citation markers, boxes.
_DROP_TAGS = ["script", "style", "noscript", "link", "meta", "nav", "table", "figure", "math",
              "img", "svg", "input", "button"]
_DROP_CLASSES = ["mw-editsection", "reference", "reflist", "references", "navbox", "vertical-navbox",
                 "infobox", "toc", "mw-jump-link", "hatnote", "metadata", "ambox", "noprint",
                 "thumb", "mw-empty-elt", "mw-cite-backlink", "shortdescription", "sidebar",
                 "catlinks", "printfooter", "mw-indicators"]
_BLOCKS = ["p", "div", "li", "ul", "ol", "dl", "dd", "dt", "blockquote", "pre", "br", "section",
           "h1", "h2", "h3", "h4", "h5", "h6", "tr"]
_MARKERS = re.compile(r"\[(?:\d+|[a-z]|note \d+|citation needed|clarification needed)\]", re.I)


def extract_article(html: str) -> tuple[str, str, int | None]:
    """(title, body text, revision id) of a Wikipedia page's HTML.

    The text runs from the `mw-body-content` element up to the element with id "references"
    (matched without case: Wikipedia writes "References"), one line per paragraph, heading or
    list item, without scripts, styles, navigation, edit links or reference markers like [12].
    """
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(html, "html.parser")
    body = soup.find(class_="mw-body-content")
    if body is None:
        raise CorpusError("The page has no mw-body-content element: it does not look like a "
                          "Wikipedia article.")
    title = _title(soup)
    revision = _revision(html)
    _cut_from_references(body)
    for el in body.find_all(_DROP_TAGS):
        el.decompose()
    for el in body.find_all(class_=_DROP_CLASSES):
        el.decompose()
    for el in body.find_all(_BLOCKS):  # block elements start and end lines
        el.insert_before("\n")
        el.insert_after("\n")
    lines = (" ".join(_MARKERS.sub("", line).split()) for line in body.get_text().split("\n"))
    text = "\n".join(line for line in lines if line)
    if not text:
        raise CorpusError("The article body is empty after removing navigation and references.")
    return title, text, revision


def _cut_from_references(body) -> None:
    """Remove the references marker and everything after it (in document order) in `body`."""
    marker = body.find(id=lambda v: v is not None and v.lower() == "references")
    if marker is None:
        return
    node = marker
    while node is not None and node is not body:
        for sib in list(node.next_siblings):
            sib.extract()
        parent = node.parent
        if node is marker:
            node.extract()
        node = parent


def _title(soup) -> str:
    h1 = soup.find(id="firstHeading")
    if h1 is not None and h1.get_text(strip=True):
        return h1.get_text(" ", strip=True)
    if soup.title and soup.title.string:
        return re.sub(r"\s+-\s+Wikipedia\s*$", "", soup.title.string.strip())
    return "untitled"


def _revision(html: str) -> int | None:
    m = re.search(r'"wgRevisionId"\s*:\s*(\d+)', html) or re.search(r"[?&]oldid=(\d+)", html)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


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
                      fetched_at=_now(), sha256=_sha(text))
    try:
        _save(_cache_path(url), article)
    except OSError:
        pass  # a read-only cache dir costs only the offline copy
    return article


def bundled_texts() -> list[str]:
    """Sample texts written for this project (file names in lab/texts/)."""
    return sorted(p.name for p in TEXTS_DIR.glob("*.txt") if p.name != "tiny_tokenizer_corpus.txt")


def bundled_article(name: str = BUNDLED_TEXT) -> Article:
    if name not in bundled_texts():
        raise CorpusError(f"No bundled text {name!r}; available: {', '.join(bundled_texts())}.")
    text = (TEXTS_DIR / name).read_text(encoding="utf-8").strip()
    first = text.splitlines()[0].strip()
    return Article(text=text, title=first, url="", source="bundled", revision_id=None,
                   fetched_at=_now(), sha256=_sha(text))


def text_article(text: str, label: str = "pasted text", source: str = "pasted") -> Article:
    text = (text or "").strip()
    if not text:
        raise CorpusError("The text is empty: paste or upload some English prose.")
    return Article(text=text, title=label, url="", source=source, revision_id=None,
                   fetched_at=_now(), sha256=_sha(text))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- token windows

def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Token ids of the whole text, no special tokens: LongTensor [n_tokens]."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False,
                    verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def windows_that_fit(n_tokens: int, n_windows: int, window_len: int) -> list[tuple[int, int]]:
    """(n_windows, window_len) shapes that fit in n_tokens: fewer windows, or shorter ones."""
    offers = []
    if n_tokens // window_len >= 1:
        offers.append((min(n_windows, n_tokens // window_len), window_len))
    if n_tokens // n_windows >= 2:
        offers.append((n_windows, min(window_len, n_tokens // n_windows)))
    return [o for i, o in enumerate(offers) if o not in offers[:i]]


def sample_windows(token_ids: torch.Tensor, n_windows: int, window_len: int, seed: int) -> torch.Tensor:
    """`n_windows` non-overlapping windows of `window_len` tokens, placed by `seed`.

    The corpus is cut into consecutive slots after a random offset; the windows are a random
    choice of slots, so no token is used twice. Returns LongTensor [n_windows, window_len].
    """
    if n_windows < 1 or window_len < 2:
        raise CorpusError("Need at least 1 window of at least 2 tokens.")
    n = int(token_ids.numel())
    need = n_windows * window_len
    if n < need:
        offers = windows_that_fit(n, n_windows, window_len)
        fit = " or ".join(f"{w} x {t}" for w, t in offers) or "nothing useful"
        raise CorpusTooShort(f"The corpus has {n:,} tokens but {n_windows} x {window_len} windows "
                             f"need {need:,}; what fits: {fit}.", offers)
    gen = torch.Generator().manual_seed(seed)
    n_slots = n // window_len
    offset = int(torch.randint(0, n - n_slots * window_len + 1, (1,), generator=gen))
    slots = torch.randperm(n_slots, generator=gen)[:n_windows].sort().values
    starts = offset + slots * window_len
    return torch.stack([token_ids[s:s + window_len] for s in starts.tolist()])
