"""lab.corpus: extraction from HTML fixtures served by a loopback server, the URL rules,
redirects, size cap, timeouts, the disk cache, bundled texts and token windows."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from lab import corpus
from lab.corpus import CorpusError, CorpusTooShort

FIXTURES = Path(__file__).parent / "fixtures" / "wiki"
HOST = "127.0.0.1"

LED_TEXT = (
    "A light-emitting diode (LED) is a semiconductor device that emits light when current flows "
    "through it. Electrons in the semiconductor recombine with electron holes, releasing energy in "
    "the form of photons.\n"
    "The color of the light is determined by the energy required for electrons to cross the band "
    "gap of the semiconductor. White light is obtained by using multiple semiconductors or a layer "
    "of light-emitting phosphor on the device.\n"
    "History\n"
    "Electroluminescence as a phenomenon was discovered in 1907 by the English experimenter "
    "H. J. Round of Marconi Labs, using a crystal of silicon carbide and a cat's-whisker detector.\n"
    "1907: first report of electroluminescence\n"
    "1962: first visible-spectrum (red) LED\n"
    "1994: bright blue LED\n"
    "Efficiency\n"
    "Modern LEDs convert more than half of their input power into light & waste less heat than "
    "incandescent bulbs."
)
OLD_SKIN_TEXT = ("A diode lamp is a lamp built from light-emitting diodes.\nUse\n"
                 "Diode lamps last for years in street lighting.")


class _Handler(BaseHTTPRequestHandler):
    """Routes for every case the fetcher must handle."""
    hits: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        type(self).hits.append(self.path)
        html = {"Content-Type": "text/html; charset=UTF-8"}
        path = self.path
        if path.startswith("/wiki/"):
            name = path.removeprefix("/wiki/")
            file = FIXTURES / f"{name}.html"
            if file.exists():
                return self._send(200, file.read_bytes(), html)
            return self._send(404, b"<html><body>Not found</body></html>", html)
        if path == "/redirect-ok":
            return self._send(302, headers={"Location": "/wiki/led"})
        if path == "/redirect-chain":
            return self._send(301, headers={"Location": f"http://{HOST}:{self.server.server_port}/redirect-ok"})
        if path == "/redirect-off":
            return self._send(302, headers={"Location": "http://example.com/wiki/led"})
        if path == "/redirect-loop":
            return self._send(302, headers={"Location": "/redirect-loop"})
        if path == "/big-declared":
            return self._send(200, b"x" * 100, {**html, "Content-Length": str(6 * 2**20)})
        if path == "/big-streamed":  # no Content-Length: the cap must bite while reading
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            chunk = b"<p>" + b"a" * 65533
            try:
                for _ in range(200):  # 12.8 MB if nobody stops reading
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        if path == "/slow":
            time.sleep(3)
            return self._send(200, (FIXTURES / "led.html").read_bytes(), html)
        if path == "/error":
            return self._send(503, b"busy", html)
        return self._send(404)


@pytest.fixture(scope="module")
def server():
    _Handler.protocol_version = "HTTP/1.0"
    srv = ThreadingHTTPServer((HOST, 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{srv.server_port}", srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))


def fetch(url, **kw):
    return corpus.fetch_wikipedia(url, allowed_hosts=[HOST], **kw)


# ---------------------------------------------------------------- extraction

def test_extracts_exact_text_and_metadata(server):
    base, _ = server
    a = fetch(f"{base}/wiki/led")
    assert a.text == LED_TEXT
    assert a.title == "Light-emitting diode"
    assert a.revision_id == 1187000001
    assert a.url == f"{base}/wiki/led" and a.source == "live"
    assert len(a.sha256) == 64 and a.fetched_at.endswith("+00:00")
    for dropped in ("Jump to content", "Main page", "Search", "edit", "[1]", "citation needed",
                    "Round, H. J.", "External links", "Official LED", "Categories", "last edited",
                    "Passive, optoelectronic", "redirects here", "5 mm diffused", "mw.loader",
                    "font-style", "From Wikipedia"):
        assert dropped not in a.text, dropped


def test_old_skin_cuts_at_references_span(server):
    base, _ = server
    a = fetch(f"{base}/wiki/led_old_skin")
    assert a.text == OLD_SKIN_TEXT
    assert a.title == "Diode lamp" and a.revision_id == 42


def test_page_without_body_content_is_one_sentence(server):
    base, _ = server
    with pytest.raises(CorpusError, match="no mw-body-content"):
        fetch(f"{base}/wiki/no_body")


# ---------------------------------------------------------------- URL rules

@pytest.mark.parametrize("url, why", [
    ("http://en.wikipedia.org/wiki/LED", "plain http"),
    ("https://example.com/wiki/LED", "not on the allow-list"),
    ("https://en.wikipedia.org.evil.com/wiki/LED", "not on the allow-list"),
    ("https://en.wikipedia.org@evil.com/wiki/LED", "not on the allow-list"),
    ("ftp://en.wikipedia.org/wiki/LED", "not a web address"),
    ("file:///etc/passwd", "not a web address"),
])
def test_allow_list_refuses_before_any_request(url, why):
    with pytest.raises(CorpusError, match=why):
        corpus.fetch_wikipedia(url)


def test_http_needs_the_host_named(server):
    base, _ = server
    with pytest.raises(CorpusError, match="not on the allow-list"):
        corpus.fetch_wikipedia(f"{base}/wiki/led")  # loopback not named: refused
    corpus.check_url("https://de.wikipedia.org/wiki/Leuchtdiode")  # any wikipedia.org host is fine
    assert corpus.article_url("Light-emitting diode") == DEFAULT_WIKI


DEFAULT_WIKI = "https://en.wikipedia.org/wiki/Light-emitting_diode"


def test_default_article_is_led():
    assert corpus.DEFAULT_ARTICLE == DEFAULT_WIKI


# ---------------------------------------------------------------- redirects, errors, caps

def test_redirects_are_followed_and_rechecked(server):
    base, _ = server
    assert fetch(f"{base}/redirect-chain").text == LED_TEXT
    assert fetch(f"{base}/redirect-ok", use_cache=False).url == f"{base}/wiki/led"
    with pytest.raises(CorpusError, match="redirects to http://example.com/wiki/led, which is refused"):
        fetch(f"{base}/redirect-off")
    with pytest.raises(CorpusError, match="more than 5 times"):
        fetch(f"{base}/redirect-loop")


def test_http_errors(server):
    base, _ = server
    with pytest.raises(CorpusError, match="HTTP 404"):
        fetch(f"{base}/wiki/No_such_article")
    with pytest.raises(CorpusError, match="HTTP 503"):
        fetch(f"{base}/error")


@pytest.mark.parametrize("route", ["/big-declared", "/big-streamed"])
def test_body_over_cap(server, route):
    base, _ = server
    with pytest.raises(CorpusError, match="larger than the 5 MB cap"):
        fetch(base + route)


def test_read_timeout(server):
    base, _ = server
    t0 = time.perf_counter()
    with pytest.raises(CorpusError, match="did not answer within 0.5 s"):
        fetch(f"{base}/slow", timeout=(2.0, 0.5))
    assert time.perf_counter() - t0 < 2.5


def test_connection_refused_is_one_sentence():
    import socket
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(CorpusError, match="Could not connect"):
        fetch(f"http://{HOST}:{port}/wiki/led", timeout=(1.0, 1.0))


def test_user_agent_identifies_the_lab(server):
    import requests
    seen = {}

    class UA(_Handler):
        def do_GET(self):
            seen["ua"] = self.headers.get("User-Agent")
            return super().do_GET()

    srv = ThreadingHTTPServer((HOST, 0), UA)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        corpus.fetch_wikipedia(f"http://{HOST}:{srv.server_port}/wiki/led", allowed_hosts=[HOST])
    finally:
        srv.shutdown()
        srv.server_close()
    assert seen["ua"].startswith("gpt2-lab/") and "requests" in seen["ua"]
    assert requests.utils.default_user_agent() != seen["ua"]


# ---------------------------------------------------------------- cache

def test_cache_serves_second_call_offline(tmp_path):
    srv = ThreadingHTTPServer((HOST, 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://{HOST}:{srv.server_port}/wiki/led"
    first = fetch(url)
    srv.shutdown()
    srv.server_close()  # offline from here on
    second = fetch(url)
    assert second.source == "cache" and first.source == "live"
    assert (second.text, second.sha256, second.revision_id) == (first.text, first.sha256, first.revision_id)
    assert corpus.cached_article(url) == second
    with pytest.raises(CorpusError, match="Could not connect"):
        fetch(url, use_cache=False, timeout=(1.0, 1.0))


# ---------------------------------------------------------------- bundled, pasted

def test_bundled_led_text():
    a = corpus.bundled_article()
    assert a.source == "bundled" and a.url == "" and "LED" in a.text
    assert len(a.text.split()) > 2000  # enough prose for the quick preset
    assert "leds.txt" in corpus.bundled_texts()
    with pytest.raises(CorpusError, match="No bundled text"):
        corpus.bundled_article("nope.txt")


def test_pasted_text():
    a = corpus.text_article("  Hello lamps.  ")
    assert a.text == "Hello lamps." and a.source == "pasted"
    with pytest.raises(CorpusError, match="empty"):
        corpus.text_article("   ")


# ---------------------------------------------------------------- windows

def test_windows_are_seeded_non_overlapping_slices():
    ids = torch.arange(1000)
    w = corpus.sample_windows(ids, 4, 100, seed=3)
    assert w.shape == (4, 100)
    assert torch.equal(w, corpus.sample_windows(ids, 4, 100, seed=3))
    assert not torch.equal(w, corpus.sample_windows(ids, 4, 100, seed=4))
    assert torch.equal(w[:, 1:] - w[:, :-1], torch.ones(4, 99, dtype=torch.long))  # contiguous
    assert len(set(w.flatten().tolist())) == 400  # no token used twice


def test_short_corpus_says_what_fits():
    ids = torch.arange(4800)
    with pytest.raises(CorpusTooShort) as e:
        corpus.sample_windows(ids, 10, 1024, seed=0)
    assert "4,800 tokens" in str(e.value) and "4 x 1024 or 10 x 480" in str(e.value)
    assert e.value.offers == [(4, 1024), (10, 480)]
    for n, t in e.value.offers:
        assert corpus.sample_windows(ids, n, t, seed=0).shape == (n, t)


def test_fit_windows_uses_what_fits_only_when_asked():
    ids = torch.arange(4800)
    with pytest.raises(CorpusTooShort, match="what fits"):
        corpus.fit_windows(ids, 10, 1024, seed=0)
    n, t, w = corpus.fit_windows(ids, 10, 1024, seed=0, fit=True)
    assert (n, t) == (4, 1024) and torch.equal(w, corpus.sample_windows(ids, 4, 1024, seed=0))
    assert corpus.fit_windows(ids, 2, 100, seed=0, fit=True)[:2] == (2, 100)   # fits as asked


def test_article_for_names_the_source(server, monkeypatch):
    base, _ = server
    assert corpus.article_for().source == "bundled"
    assert corpus.article_for(text="  Hello lamps. ").text == "Hello lamps."
    with pytest.raises(CorpusError, match="not on the allow-list"):
        corpus.article_for(f"{base}/wiki/led")           # the loopback is not named
    monkeypatch.setenv("LAB_ALLOWED_HOSTS", HOST)        # an operator's choice
    assert corpus.article_for(f"{base}/wiki/led").text == LED_TEXT


def test_tokenize_round_trips(tiny):
    text = corpus.bundled_article().text[:500]
    ids = corpus.tokenize(tiny.tokenizer, text)
    assert ids.dtype == torch.long and ids.ndim == 1
    assert tiny.tokenizer.decode(ids.tolist()) == text
