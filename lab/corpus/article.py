"""A corpus text with where it came from, the errors every corpus function raises, and the
texts that need no network (bundled with the lab, pasted or uploaded)."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from lab.paths import TEXTS_DIR

BUNDLED_TEXT = "leds.txt"


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


# ---------------------------------------------------------------- texts without a network

def bundled_texts() -> list[str]:
    """Sample texts written for this project (file names in lab/texts/)."""
    return sorted(p.name for p in TEXTS_DIR.glob("*.txt") if p.name != "tiny_tokenizer_corpus.txt")


def bundled_article(name: str = BUNDLED_TEXT) -> Article:
    if name not in bundled_texts():
        raise CorpusError(f"No bundled text {name!r}; available: {', '.join(bundled_texts())}.")
    text = (TEXTS_DIR / name).read_text(encoding="utf-8").strip()
    first = text.splitlines()[0].strip()
    return Article(text=text, title=first, url="", source="bundled", revision_id=None,
                   fetched_at=utc_now(), sha256=text_sha256(text))


def text_article(text: str, label: str = "pasted text", source: str = "pasted") -> Article:
    text = (text or "").strip()
    if not text:
        raise CorpusError("The text is empty: paste or upload some English prose.")
    return Article(text=text, title=label, url="", source=source, revision_id=None,
                   fetched_at=utc_now(), sha256=text_sha256(text))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
