"""Named corpus sources, each text's train / held-out split, and what an SAE was trained on.

    "leds.txt"             a bundled text, whole
    "leds.txt:train"       its first four fifths (by sentence), what the lab's corpus SAE trains on
    "leds.txt:held-out"    its last fifth, which that SAE never sees
    "article:Title"        an article fetched before (the laminar page's disk cache); pinned to
                           one download with "article:Title@<first 12 hex of its sha256>"

An SAE records its training data as [{"name", "sha256", "tokens"}] (`training_record`).
`held_out(sources, trained)` then keeps what the SAE never saw: a source it trained on is left
out, a bundled text whose train part it trained on contributes its held-out part, and each
decision is one sentence for the page.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from lab.corpus.article import bundled_article, bundled_texts

HELD_OUT_FRACTION = 0.2
PARTS = ("train", "held-out")
ARTICLE = "article:"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def text_hash(text: str) -> str:
    """sha256 of the stripped text: the identity of a text everywhere in the lab."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


def split_text(text: str, fraction: float = HELD_OUT_FRACTION) -> tuple[str, str]:
    """(train, held out): the held-out part is the last `fraction` of the sentences (at least
    one), so the two are contiguous and share no sentence."""
    text = text.strip()
    cuts = [m.end() for m in _SENTENCE_END.finditer(text)]      # where each later sentence starts
    if not cuts:
        raise ValueError("a text of one sentence cannot be split into train and held-out parts")
    n_held = max(1, round((len(cuts) + 1) * fraction))
    cut = cuts[-min(n_held, len(cuts))]
    return text[:cut].strip(), text[cut:].strip()


@dataclass(frozen=True)
class Source:
    """One corpus text and its name."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return text_hash(self.text)

    def record(self, tokenizer=None) -> dict:
        out = {"name": self.name, "sha256": self.sha256}
        if tokenizer is not None:
            out["tokens"] = len(tokenizer(self.text, add_special_tokens=False)["input_ids"])
        return out


def default_sources() -> tuple[str, ...]:
    """Every bundled text, whole."""
    return tuple(bundled_texts())


def resolve(name: str) -> Source:
    """The text a source name stands for, or one sentence saying why there is none."""
    name = name.strip()
    if name.startswith(ARTICLE):
        return _article(name)
    base, _, part = name.partition(":")
    if base not in bundled_texts():
        raise ValueError(f"no corpus source {name!r}: give a bundled text ({', '.join(bundled_texts())}), "
                         "optionally with :train or :held-out, or article:TITLE for a fetched article")
    text = bundled_article(base).text
    if not part:
        return Source(name, text)
    if part not in PARTS:
        raise ValueError(f"{name!r}: the part after ':' must be train or held-out")
    return Source(name, split_text(text)[PARTS.index(part)])


def cached_articles() -> list[Source]:
    """Articles fetched before (title -> text), each named pinned to its hash."""
    import json

    from lab.paths import cache_dir
    out = []
    for path in sorted((cache_dir() / "articles").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            title, text = data.get("title") or path.stem, data["text"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue          # a damaged cache file costs one text
        if isinstance(text, str) and text.strip():
            out.append(Source(f"{ARTICLE}{title}@{text_hash(text)[:12]}", text))
    return out


def _article(name: str) -> Source:
    title, _, pin = name[len(ARTICLE):].partition("@")
    for src in cached_articles():
        t, _, sha = src.name[len(ARTICLE):].partition("@")
        if t == title and (not pin or sha.startswith(pin)):
            return src
    held = "" if not pin else f" with hash {pin}"
    raise ValueError(f"no fetched article {title!r}{held} in the cache: fetch it on the laminar "
                     "page first, or leave it out of the corpus sources")


# ---------------------------------------------------------------- what an SAE saw

def training_record(sources: list[Source], tokenizer=None) -> list[dict]:
    """What an SAE's metadata says it was trained on."""
    return [s.record(tokenizer) for s in sources]


def _family(src: Source) -> dict[str, str]:
    """Hashes of a source and, for a bundled text, of its whole text and both parts."""
    base = src.name.partition(":")[0]
    if src.name.startswith(ARTICLE) or base not in bundled_texts():
        return {"self": src.sha256}
    whole = bundled_article(base).text
    train, held = split_text(whole)
    return {"self": src.sha256, "whole": text_hash(whole), "train": text_hash(train),
            "held-out": text_hash(held)}


def held_out(sources: list[Source], trained: list[dict] | None) -> tuple[list[Source], list[Source], list[str]]:
    """(kept, left out, one sentence per decision): the corpus without what the SAE trained
    on. `trained` None means the SAE's training data is unknown: everything is kept."""
    if trained is None:
        return list(sources), [], ["training data unknown: the examples may come from text "
                                   "the SAE was trained on"]
    seen = {t.get("sha256") for t in trained if isinstance(t, dict)}
    kept, left, notes = [], [], []
    for src in sources:
        fam = _family(src)
        if src.sha256 in seen or fam.get("whole") in seen:
            left.append(src)
            notes.append(f"{src.name} left out: the SAE was trained on it")
        elif src.name.endswith(":held-out") or (set(fam.values()) - {src.sha256}) & seen == set():
            kept.append(src)
        elif fam.get("train") in seen and fam.get("held-out") not in seen and ":" not in src.name:
            base = src.name
            kept.append(Source(f"{base}:held-out", split_text(src.text)[1]))
            left.append(Source(f"{base}:train", split_text(src.text)[0]))
            notes.append(f"{base}: only its held-out last fifth (the SAE was trained on the rest)")
        else:
            left.append(src)
            notes.append(f"{src.name} left out: the SAE was trained on part of it")
    return kept, left, notes
