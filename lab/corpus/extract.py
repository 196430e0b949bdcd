"""The prose of a Wikipedia page's HTML: body text, title and revision."""
from __future__ import annotations

import re

from lab.corpus.article import CorpusError


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
    m = re.search(r'"wgRevisionId"\s*:\s*(\d+)', html) or re.search(r"[?&;]oldid=(\d+)", html)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None
