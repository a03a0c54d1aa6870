"""A feed's bytes → its entries: RSS 0.9x/1.0/2.0 and Atom 0.3/1.0 through feedparser, JSON Feed 1.x here.

XML is read once by expat before feedparser sees it: a document that declares entities (the way
entity expansion and external entities work) is refused, and one with thousands of entries is cut
after the first few, so parsing costs what `max_items` asks for, not what the feed holds.
"""

from __future__ import annotations

import calendar
import json
import re
import xml.parsers.expat
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from newsletter.errors import FeedError

ENTRY_NAMES = frozenset({"item", "entry"})  # RSS and Atom; counted near the root only
_JSON_FEED = re.compile(r"https?://jsonfeed\.org/version/1(\.\d+)?")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


@dataclass(frozen=True)
class Entry:
    """One entry of a feed, its markup as the feed gave it (sanitized later, like every article)."""

    key: str  # its id, else its link: what is remembered so it is never taken twice
    title: str  # may hold markup (an Atom title of type html)
    link: str = ""
    summary_html: str = ""
    content_html: str = ""
    author: str = ""
    published: datetime | None = None  # aware, UTC
    image: str = ""
    image_alt: str = ""


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    link: str
    entries: tuple[Entry, ...]
    total: int  # entries the document holds (at least len(entries); more when it was cut)


def parse_feed(data: bytes, keep: int) -> ParsedFeed:
    """Read DATA as a JSON Feed or an XML feed; parse at most KEEP entries (the first in the document)."""
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return _json_feed(data, keep)
    return _xml_feed(data, keep)


# --- XML -------------------------------------------------------------------------------------------

class _Enough(Exception):
    """Raised inside expat when the entry past the limit starts: the rest is not read."""


def prescan(data: bytes, keep: int) -> tuple[bytes, int]:
    """Refuse entity declarations; return DATA cut before its entry number KEEP+1 (closed again), and the count.

    A document expat cannot read (many feeds are not well-formed) is returned whole, for
    feedparser's lenient parser; its entries are cut by a plain search instead.
    """
    parser = xml.parsers.expat.ParserCreate()
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[str] = []
    count = 0
    cut: list[int] = []

    def entity(name: str, *_: Any) -> None:
        raise FeedError(f"declares the XML entity {name!r} (entity expansion and external entities "
                        "are how hostile feeds attack a reader); refused")

    def start(name: str, _attrs: Any) -> None:
        nonlocal count
        if name.rsplit(":", 1)[-1] in ENTRY_NAMES and len(stack) <= 2:
            count += 1
            if count > keep:
                cut.append(parser.CurrentByteIndex)
                raise _Enough
        stack.append(name)

    parser.EntityDeclHandler = entity
    parser.StartElementHandler = start
    parser.EndElementHandler = lambda name: stack.pop()
    try:
        parser.Parse(data, True)
    except _Enough:
        closing = "".join(f"</{name}>" for name in reversed(stack))
        if _ascii_compatible(data):
            return data[: cut[0]] + closing.encode("ascii"), count
        return data, count
    except xml.parsers.expat.ExpatError:
        return _cut_loosely(data, keep), count
    return data, count


def _ascii_compatible(data: bytes) -> bool:
    return not data.startswith((b"\xff\xfe", b"\xfe\xff")) and b"\x00" not in data[:4]


_ENTRY_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s/>]")


def _cut_loosely(data: bytes, keep: int) -> bytes:
    for number, match in enumerate(_ENTRY_START.finditer(data), 1):
        if number > keep:
            return data[: match.start()]
    return data


def _xml_feed(data: bytes, keep: int) -> ParsedFeed:
    import feedparser

    cut, total = prescan(data, keep)
    parsed = feedparser.parse(cut, sanitize_html=False, resolve_relative_uris=False)
    version = parsed.get("version", "")
    if not version and not parsed.entries:
        reason = parsed.get("bozo_exception")
        why = f" ({str(reason).splitlines()[0]})" if reason else ""
        raise FeedError(f"is not an RSS or Atom feed, nor a JSON Feed{why}")
    alts = _media_descriptions(cut) if any(e.get("media_thumbnail") or e.get("media_content") for e in parsed.entries) else []
    raws = parsed.entries[:keep]
    entries = tuple(e for e in (_xml_entry(raw, alts[n] if n < len(alts) else "") for n, raw in enumerate(raws))
                    if e is not None)
    feed = parsed.get("feed", {})
    return ParsedFeed(_text(feed.get("title")), _text(feed.get("link")), entries, max(total, len(entries)))


def _media_descriptions(data: bytes) -> list[str]:
    """Return each entry's Media RSS description, in document order ('' for an entry without one).

    feedparser folds media:description into the summary; the image's alt text must be the
    description the feed gave for it, so it is read here (DATA is the already cut document).
    """
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    found: list[str] = []
    inside: list[str] = []

    def start(name: str, _attrs: Any) -> None:
        if name.rsplit(" ", 1)[-1] in ENTRY_NAMES:
            found.append("")
        elif name == f"{_MRSS} description" and found:
            inside.append("")

    def end(name: str) -> None:
        if name == f"{_MRSS} description" and inside:
            text = inside.pop()
            found[-1] = found[-1] or " ".join(text.split())

    def text(data: str) -> None:
        if inside:
            inside[-1] += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError:
        pass
    return found


_MRSS = "http://search.yahoo.com/mrss/"


def _xml_entry(raw: Any, alt: str) -> Entry | None:
    link = _text(raw.get("link"))
    key = _text(raw.get("id")) or link
    if not key:
        return None
    contents = raw.get("content") or []
    content = next((c.get("value", "") for c in contents if "html" in c.get("type", "")), "")
    if not content and contents:
        content = _plain_as_html(contents[0].get("value", ""))
    summary = _text(raw.get("summary"))
    if (raw.get("summary_detail") or {}).get("type") == "text/plain":
        summary = _plain_as_html(summary)
    image = _xml_image(raw)
    stamp = raw.get("published_parsed") or raw.get("updated_parsed")
    published = datetime.fromtimestamp(calendar.timegm(stamp), timezone.utc) if stamp else None
    return Entry(key=key, title=_text(raw.get("title")), link=link, summary_html=summary, content_html=content,
                 author=_text(raw.get("author")), published=published, image=image, image_alt=alt)


def _xml_image(raw: Any) -> str:
    """Return an entry's media thumbnail, media image or image enclosure address ('' if none)."""
    candidates = [m.get("url", "") for m in raw.get("media_thumbnail") or []]
    candidates += [m.get("url", "") for m in raw.get("media_content") or [] if m.get("medium") == "image"]
    candidates += [link.get("href", "") for link in raw.get("links") or []
                   if link.get("rel") == "enclosure" and link.get("type", "") in _IMAGE_TYPES]
    return next((c for c in candidates if c), "")


# --- JSON Feed -----------------------------------------------------------------------------------

def _json_feed(data: bytes, keep: int) -> ParsedFeed:
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        raise FeedError(f"is not valid JSON: {err}") from None
    if not isinstance(document, dict) or not _JSON_FEED.fullmatch(str(document.get("version", ""))):
        raise FeedError("is JSON but not a JSON Feed (no \"version\": \"https://jsonfeed.org/version/1.1\")")
    items = document.get("items")
    if not isinstance(items, list):
        raise FeedError("is a JSON Feed without an \"items\" list")
    entries = tuple(e for e in (_json_entry(item) for item in items[:keep]) if e is not None)
    return ParsedFeed(_text(document.get("title")), _text(document.get("home_page_url")), entries, len(items))


def _json_entry(item: Any) -> Entry | None:
    if not isinstance(item, dict):
        return None
    link = _text(item.get("url")) or _text(item.get("external_url"))
    key = _text(item.get("id")) or link
    if not key:
        return None
    content = _text(item.get("content_html")) or _plain_as_html(_text(item.get("content_text")))
    authors: list[Any] = item["authors"] if isinstance(item.get("authors"), list) else [item.get("author")]
    author = ", ".join(_text(a.get("name")) for a in authors if isinstance(a, dict) and _text(a.get("name")))
    image, alt = "", ""
    for attachment in item.get("attachments") or []:
        if isinstance(attachment, dict) and _text(attachment.get("mime_type")) in _IMAGE_TYPES:
            image, alt = _text(attachment.get("url")), _text(attachment.get("title"))
            break
    return Entry(key=key, title=_text(item.get("title")), link=link,
                 summary_html=_plain_as_html(_text(item.get("summary"))), content_html=content, author=author,
                 published=_rfc3339(_text(item.get("date_published")) or _text(item.get("date_modified"))),
                 image=image or _text(item.get("image")), image_alt=alt)


def _rfc3339(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --- small helpers -------------------------------------------------------------------------------

def _text(value: Any) -> str:
    """Return VALUE if it is text (feeds put numbers, lists and nulls where text belongs), else ''."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else ""


def _plain_as_html(text: str) -> str:
    """Return plain TEXT as HTML paragraphs (blank lines split them)."""
    import html

    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "".join(f"<p>{html.escape(block)}</p>" for block in blocks)


__all__ = ["Entry", "ParsedFeed", "parse_feed", "prescan"]
