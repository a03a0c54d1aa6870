"""Article files → DayContent: validate every file of a day, sanitize every body.

A day's folder holds `*.md` articles (YAML front matter + Markdown), `*.txt` articles (headline,
then paragraphs), and optionally `_note.md` and `_feature.md`. Every problem of the day is
collected and raised as one ArticleError, so an editor fixes everything in one go.
"""

from __future__ import annotations

import html
import logging
import re
import reprlib
from datetime import date
from pathlib import Path
from typing import Any, Sequence

import nh3
import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from newsletter import files, findings
from newsletter.errors import ArticleError
from newsletter.findings import Finding
from newsletter.headers import header_problem
from newsletter.models import Article, DayContent, Feature, Note
from newsletter.rules import HTTPS, MAX_ARTICLE_BYTES, Rule, https_only
from newsletter.settings import Settings
from newsletter.tokens import ADDED

logger = logging.getLogger(__name__)

ARTICLE_SUFFIXES = (".md", ".txt")
NOTE_FILE = "_note.md"
FEATURE_FILE = "_feature.md"
NOTE_TITLE = "Note to our readers"

ALLOWED_TAGS = frozenset({
    "p", "br", "strong", "em", "b", "i", "a", "ul", "ol", "li", "blockquote", "code", "pre",
    "h3", "h4", "table", "thead", "tbody", "tr", "th", "td", "hr", "sup", "sub",
})
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Removed together with everything inside them, not just unwrapped.
DROPPED_WITH_CONTENT = frozenset({
    "script", "style", "iframe", "noscript", "template", "object", "textarea", "select", "title",
})

ARTICLE_KEYS = ("title", "section", "summary", "sources", "priority", "url", "author", "image", "image_alt",
                "published")  # published: when a feed's entry appeared (feeds/ writes it; nothing reads it yet)
NOTE_KEYS = ("title",)
FEATURE_KEYS = ("title", "link", "link_text")

_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")


def _markdown() -> MarkdownIt:
    # html=False: raw HTML in an article is shown as text, never interpreted.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


_MD = _markdown()


# --- sanitizing and body rendering ------------------------------------------------------------

def _keep_attribute(tag: str, attr: str, value: str) -> str | None:
    # nh3 checks schemes of absolute URLs only; an email has no base URL, so relative links and
    # fragments go too.
    if attr == "href":
        scheme = value.strip().split(":", 1)[0].lower() if ":" in value else ""
        return value if scheme in URL_SCHEMES else None
    return value


def sanitize(body_html: str) -> str:
    """Return BODY_HTML with only the allowlisted tags, attributes and URL schemes left."""
    return nh3.clean(
        body_html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_keep_attribute,
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener",
        strip_comments=True,
    ).strip()


def parse_markdown(text: str) -> tuple[Token, ...]:
    """Parse Markdown TEXT into markdown-it tokens; headings become h3/h4 (the issue owns h1 and h2)."""
    tokens = _MD.parse(text, {})
    headings = [t for t in tokens if t.type in ("heading_open", "heading_close")]
    # The body's top heading level becomes h3 and anything deeper h4, so no level is skipped
    # under the article's h2 whichever of '#', '##' or '###' the editor started with.
    top = min((t.tag for t in headings), default="h1")
    for token in headings:
        token.tag = "h3" if token.tag == top else "h4"
    return tuple(tokens)


def parse_text(text: str) -> tuple[Token, ...]:
    """Parse plain text into paragraph tokens (paragraphs split on blank lines, lines joined)."""
    tokens: list[Token] = []
    for block in re.split(r"\n[ \t]*\n", text.strip()):
        joined = " ".join(line.strip() for line in block.splitlines() if line.strip())
        if joined:
            words = Token("text", "", 0, content=joined)
            tokens += [Token("paragraph_open", "p", 1, block=True),
                       Token("inline", "", 0, content=joined, children=[words], block=True),
                       Token("paragraph_close", "p", -1, block=True)]
    return tuple(tokens)


def render_tokens(tokens: Sequence[Token]) -> str:
    """Render markdown-it TOKENS to sanitized HTML.

    Links the builder added (tokens.ADDED in their meta, cross-references) are its own https
    addresses: they stand in the sanitizer's input as two noncharacters and are put back after,
    so they come out as they always did (no rel attribute) while the editor's text is sanitized.
    """
    hrefs: list[str] = []
    markup = sanitize(_MD.renderer.render(_mark_added_links(tokens, hrefs), _MD.options, {}))
    if not hrefs:
        return markup
    pieces = markup.split(_ADDED_OPEN)
    if len(pieces) != len(hrefs) + 1 or markup.count(_ADDED_CLOSE) != len(hrefs):
        raise ArticleError("an article body holds the noncharacter U+FDD0 or U+FDD1; remove it")
    opened = (f'<a href="{html.escape(href)}">{piece}' for href, piece in zip(hrefs, pieces[1:]))
    return (pieces[0] + "".join(opened)).replace(_ADDED_CLOSE, "</a>")


_ADDED_OPEN, _ADDED_CLOSE = "\ufdd0", "\ufdd1"


def _mark_added_links(tokens: Sequence[Token], hrefs: list[str]) -> list[Token]:
    out = []
    for token in tokens:
        if token.type == "inline" and any(c.meta.get(ADDED) for c in token.children or ()):
            children = []
            for child in token.children or ():
                if child.meta.get(ADDED) and child.type == "link_open":
                    hrefs.append(str(child.attrs["href"]))
                    child = Token("text", "", 0, content=_ADDED_OPEN)
                elif child.meta.get(ADDED):
                    child = Token("text", "", 0, content=_ADDED_CLOSE)
                children.append(child)
            token = token.copy(children=children)
        out.append(token)
    return out


def _kept_hrefs(tokens: Sequence[Token]) -> list[str]:
    """Return the href of every link in TOKENS that the sanitizer keeps, in order."""
    return [
        str(child.attrs["href"])
        for token in tokens if token.type == "inline"
        for child in token.children or () if child.type == "link_open" and "href" in child.attrs
        and _keep_attribute("a", "href", str(child.attrs["href"])) is not None
    ]


def render_markdown(text: str) -> str:
    """Render Markdown TEXT to sanitized HTML; headings become h3/h4 (the issue owns h1 and h2)."""
    return render_tokens(parse_markdown(text))


def render_text(text: str) -> str:
    """Render plain text paragraphs (split on blank lines) to sanitized HTML."""
    return render_tokens(parse_text(text))


# --- the folder -------------------------------------------------------------------------------

def _is_article_file(path: Path) -> bool:
    return (
        path.is_file()
        and path.suffix.lower() in ARTICLE_SUFFIXES
        and not path.name.startswith(("_", "."))
    )


def article_days(articles_dir: Path) -> list[date]:
    """Return the sorted days whose YYYY-MM-DD folder holds at least one article file."""
    days: list[date] = []
    if not articles_dir.is_dir():
        return days
    for folder in articles_dir.iterdir():
        if not folder.is_dir() or not _DAY_FOLDER.fullmatch(folder.name):
            continue
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:  # 2026-13-45: not a day
            continue
        if any(_is_article_file(p) for p in folder.iterdir()):
            days.append(day)
    return sorted(days)


def slugify(text: str, fallback: str = "article") -> str:
    """Return TEXT lowercased with each run of non-alphanumerics turned into one '-' (FALLBACK if none is left)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or fallback


def read_day(articles_dir: Path, day: date, settings: Settings) -> DayContent:
    """Read and validate every file of DAY's folder; raise one ArticleError listing all problems."""
    folder = articles_dir / day.isoformat()
    if not folder.is_dir():
        return DayContent(day=day, articles=())
    problems: list[Finding] = []
    articles: list[Article] = []
    note = feature = None
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.is_file() or path.name.startswith("."):
            continue
        reader = _FileReader(path, settings)
        if path.name == NOTE_FILE:
            note = reader.note()
        elif path.name == FEATURE_FILE:
            feature = reader.feature()
        elif _is_article_file(path):
            article = reader.article()
            if article is not None:
                articles.append(article)
        else:
            if path.name.startswith("_") and path.suffix.lower() in ARTICLE_SUFFIXES:
                logger.info("%s: skipped (files starting with '_' are not articles)", reader.name)
            continue
        problems.extend(reader.problems)
    if problems:
        raise ArticleError(findings=problems)
    return DayContent(day=day, articles=tuple(articles), note=note, feature=feature)


def article_problems(path: Path, text: str, settings: Settings) -> list[Finding]:
    """Return what reading TEXT as the article file PATH would find wrong (nothing is written or read)."""
    reader = _TextReader(path, settings, text)
    reader.article()
    return reader.problems


class _FileReader:
    """Reads one file, collecting every problem instead of stopping at the first."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.name = files.display(path, settings.root)
        self.problems: list[Finding] = []

    def problem(self, message: str, line: int | None = None, rule: Rule = Rule.ARTICLE) -> None:
        self.problems.append(findings.error(rule, message, self.name, line))

    def _body(self, text: str, body: str) -> tuple[tuple[Token, ...], str]:
        """Parse and render the Markdown BODY (the end of TEXT); refuse links not https:// or mailto:."""
        tokens = parse_markdown(body)
        body_html = render_tokens(tokens)
        first_line = text.count("\n") - body.count("\n") + 1
        lines = body.split("\n")
        for href in _kept_hrefs(tokens):
            if not https_only(href, mailto=True):
                at = next((i for i, line in enumerate(lines) if href in line), None)
                self.problem(f"link {href!r} is not https:// or mailto: (mail clients flag other links); "
                             "use the site's https:// address",
                             None if at is None else first_line + at, Rule.HTTPS_LINKS)
        return tokens, body_html

    # --- the three kinds of file

    def article(self) -> Article | None:
        text = self._text()
        if text is None:
            return None
        if self.path.suffix.lower() == ".txt":
            headline, _, rest = text.lstrip().partition("\n")
            title = self._title(headline, "headline (first line)")
            if title is None:
                return None
            tokens = parse_text(rest)
            return Article(
                path=self.path, slug=slugify(self.path.stem), title=title,
                section=self.settings.issue.default_section, body_html=render_tokens(tokens), tokens=tokens,
            )
        split = self._front_matter(text, required=True)
        if split is None:
            return None
        meta, body = split
        self._unknown_keys(meta, ARTICLE_KEYS)
        title = self._title(meta.get("title"), "title")
        section = self._section(meta.get("section"))
        summary = self._string(meta, "summary")
        sources = self._sources(meta.get("sources"))
        priority = self._priority(meta.get("priority"))
        url = self._url(meta, "url", https=False)
        author = self._string(meta, "author")
        image = self._url(meta, "image")
        image_alt = self._string(meta, "image_alt")
        if image and not image_alt.strip():
            self.problem("field 'image_alt': required when 'image' is given (describe the picture)")
        tokens, body_html = self._body(text, body)
        if title is None or self.problems:
            return None
        return Article(
            path=self.path, slug=slugify(self.path.stem), title=title, section=section,
            body_html=body_html, tokens=tokens, summary=" ".join(summary.split()), sources=sources,
            priority=priority, url=url, author=author, image=image, image_alt=image_alt,
        )

    def note(self) -> Note | None:
        text = self._text()
        if text is None:
            return None
        split = self._front_matter(text, required=False)
        if split is None:
            return None
        meta, body = split
        self._unknown_keys(meta, NOTE_KEYS)
        title = NOTE_TITLE if meta.get("title") is None else self._title(meta.get("title"), "title")
        body_html = self._body(text, body)[1]
        if title is None or self.problems:
            return None
        return Note(path=self.path, title=title, body_html=body_html)

    def feature(self) -> Feature | None:
        text = self._text()
        if text is None:
            return None
        split = self._front_matter(text, required=True)
        if split is None:
            return None
        meta, body = split
        self._unknown_keys(meta, FEATURE_KEYS)
        title = self._title(meta.get("title"), "title")
        link = self._url(meta, "link")
        link_text = self._string(meta, "link_text") or "Learn more"
        body_html = self._body(text, body)[1]
        if title is None or self.problems:
            return None
        return Feature(
            path=self.path, title=title, body_html=body_html,
            link=link, link_text=" ".join(link_text.split()),
        )

    # --- bytes, text, front matter

    def _text(self) -> str | None:
        try:
            with self.path.open("rb") as f:
                # at most one byte past the limit: a huge file is never read whole, let alone parsed
                data = f.read(MAX_ARTICLE_BYTES + 1)
        except OSError as err:
            self.problem(f"cannot be read: {err.strerror or err}")
            return None
        if len(data) > MAX_ARTICLE_BYTES:
            self.problem(f"is over {MAX_ARTICLE_BYTES:,} bytes, the most an article file may hold; "
                         "an email is clipped at about 100 KB anyway (is this the right file?)")
            return None
        if b"\x00" in data:
            offset = data.index(b"\x00")
            self.problem(
                f"contains a NUL byte at byte offset {offset}; is this a text file?",
                data[:offset].count(b"\n") + 1,
            )
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            self.problem(
                f"not valid UTF-8 (byte 0x{data[err.start]:02x} at byte offset {err.start}); "
                "save the file as UTF-8",
                data[: err.start].count(b"\n") + 1,
            )
            return None
        text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        if not text.strip():
            self.problem("the file is empty")
            return None
        return text

    def _front_matter(self, text: str, *, required: bool) -> tuple[dict, str] | None:
        lines = text.split("\n")
        if lines[0].rstrip() != "---":
            if required:
                self.problem(
                    "field 'title': no front matter; start the file with a '---' line, "
                    "'title: …', and another '---' line", 1,
                )
                return None
            return {}, text
        end = next((i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")), None)
        if end is None:
            self.problem("front matter is not closed: add a '---' line after it", 1)
            return None
        try:
            meta = yaml.safe_load("\n".join(lines[1:end]))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 2 if mark is not None else 2  # +1 for 1-based, +1 for the '---'
            reason = getattr(err, "problem", None) or str(err).splitlines()[0]
            self.problem(f"front matter is not valid YAML: {reason}", line)
            return None
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            self.problem("front matter must be 'key: value' lines, not a list or a single value", 2)
            return None
        return meta, "\n".join(lines[end + 1:])

    # --- fields

    def _unknown_keys(self, meta: dict, allowed: tuple[str, ...]) -> None:
        for key in meta:
            if key not in allowed:
                self.problem(f"unknown front-matter key {_short(key)}; allowed keys: {', '.join(allowed)}")

    def _title(self, value: Any, field: str) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            self.problem(f"field '{field}': missing or empty; every article needs a title")
            return None
        if not isinstance(value, str):
            self.problem(f"field '{field}': must be text, not {_kind(value)} ({_short(value)}); put it in quotes")
            return None
        title = " ".join(value.split())
        if problem := header_problem(title):
            self.problem(f"field '{field}': {problem.what} (it would become a mail header)")
            return None
        return title

    def _section(self, value: Any) -> str:
        allowed = self.settings.issue.sections
        if value is None:
            return self.settings.issue.default_section
        if not isinstance(value, str) or value not in allowed:
            self.problem(f"field 'section': unknown section {_short(value)}; allowed sections: {', '.join(allowed)}")
            return self.settings.issue.default_section
        return value

    def _string(self, meta: dict, field: str) -> str:
        value = meta.get(field)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.problem(f"field '{field}': must be text, not {_kind(value)} ({_short(value)}); put it in quotes")
            return ""
        return value.strip()

    def _sources(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"field 'sources': must be a list of text items or one text, not {_short(value)}")
            return ()
        return tuple(" ".join(v.split()) for v in value if v.strip())

    def _priority(self, value: Any) -> int:
        if value is None:
            return 100
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(f"field 'priority': must be a whole number, not {_kind(value)} ({_short(value)})")
            return 100
        return value

    def _url(self, meta: dict, field: str, *, https: bool = True) -> str:
        """Return META's FIELD if it is an absolute https:// URL (or, without HTTPS, http:// too)."""
        value = self._string(meta, field)
        if not value:
            return ""
        allowed = https_only(value) or (not https and value.lower().startswith("http://"))
        if not allowed or len(value) <= len(HTTPS) or re.search(r"\s", value):
            schemes = HTTPS if https else f"http:// or {HTTPS}"
            self.problem(f"field '{field}': must be an absolute {schemes} URL, not {_short(value)}")
            return ""
        return value


class _TextReader(_FileReader):
    """A reader of text not yet written to its file (what feeds/ is about to write)."""

    def __init__(self, path: Path, settings: Settings, text: str) -> None:
        super().__init__(path, settings)
        self.text = text

    def _text(self) -> str | None:
        return self.text


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 2


def _short(value: Any) -> str:
    """Return a bounded repr: YAML aliases can make a small file hold an enormous value."""
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:80] + "…")
    return _REPR.repr(value)


def _kind(value: Any) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "a mapping"}
    return names.get(type(value), f"a {type(value).__name__}")


__all__ = [
    "article_days", "read_day", "sanitize", "render_markdown", "render_text", "slugify",
    "parse_markdown", "parse_text", "render_tokens", "article_problems",
    "ALLOWED_TAGS", "URL_SCHEMES",
]
