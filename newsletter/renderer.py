"""Issue → inlined HTML + plain text, through the one Jinja environment, premailer once per issue.

The output holds placeholders where per-subscriber values go (models.PLACEHOLDERS), each on a line
of its own, so messages.py can splice values into the encoded body without rendering again.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import traceback
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from newsletter import findings, i18n
from newsletter.errors import BuildError, ClippedError
from newsletter.findings import Finding
from newsletter.models import GREETING_PLACEHOLDER, PREFERENCES_PLACEHOLDER, TOKEN_PLACEHOLDER, Issue, RenderedIssue
from newsletter.project import packaged_templates
from newsletter.rules import GMAIL_CLIP_BYTES, SIZE_WARNING_BYTES, Rule, https_only
from newsletter.settings import Settings
from newsletter.textwidth import display_width, fill

logger = logging.getLogger(__name__)

HTML_TEMPLATE = "issue.html.j2"
TEXT_TEMPLATE = "issue.txt.j2"
NOTICE_HTML_TEMPLATE = "notice.html.j2"
NOTICE_TEXT_TEMPLATE = "notice.txt.j2"
DIGEST_HTML_TEMPLATE = "digest.html.j2"
DIGEST_TEXT_TEMPLATE = "digest.txt.j2"

TEXT_WIDTH = 78

# An href carrying the unsubscribe or preferences token: moved onto a line of its own (whitespace
# between attributes does not change the rendering), so quoted-printable encoding never splits it.
_TOKEN_HREF = re.compile(r'\s+(href="[^"\s]*(?:' + TOKEN_PLACEHOLDER + "|" + PREFERENCES_PLACEHOLDER + r')[^"\s]*")\s*')
# ASCII whitespace only, as textwrap: a no-break space (`No.&nbsp;6`) stays inside its word.
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


def make_environment(settings: Settings) -> jinja2.Environment:
    """Return the one Jinja environment: the project's templates first, then the packaged ones."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([
            jinja2.FileSystemLoader(settings.templates_dir),
            jinja2.FileSystemLoader(packaged_templates()),
        ]),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "html"), disabled_extensions=(), default_for_string=False,
            default=False,
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["wrap"] = wrap
    env.filters["nbsp"] = nbsp
    i18n.install(env, settings)
    env.filters["html_to_text"] = html_to_text
    env.filters["underline"] = underline
    return env


def render_issue(issue: Issue, settings: Settings, env: jinja2.Environment | None = None) -> RenderedIssue:
    """Render ISSUE as inlined HTML and wrapped text; refuse HTML that Gmail would clip."""
    _check_content(issue)
    env = env or make_environment(settings)
    context = _context(issue, settings)
    html = _inline(_render(env, HTML_TEMPLATE, context))
    text = _render(env, TEXT_TEMPLATE, context)
    size_warnings(html, issue.day)
    logger.debug("issue %s: %d bytes of HTML, %d of text", issue.day, len(html.encode()), len(text.encode()))
    return RenderedIssue(issue=issue, html=html, text=text)


def render_notice(day: date, settings: Settings, env: jinja2.Environment | None = None) -> RenderedIssue:
    """Render the short "no issue today" message sent when the empty policy is "notice"."""
    _ = i18n.gettext_for(settings)
    values = {"name": settings.newsletter.name, "date": i18n.long_date(day, settings.newsletter.language)}
    notice = Issue(
        day=day,
        number=0,
        subject=_("%(name)s: no issue today, %(date)s") % values,
        preheader=_("There is no issue of %(name)s today, %(date)s. We will be back with the next one.") % values,
        sections=(),
        archive_url=settings.newsletter.base_url.rstrip("/") + "/",
    )
    env = env or make_environment(settings)
    context = _context(notice, settings)
    html = _inline(_render(env, NOTICE_HTML_TEMPLATE, context))
    text = _render(env, NOTICE_TEXT_TEMPLATE, context)
    size_warnings(html, day)
    return RenderedIssue(issue=notice, html=html, text=text)


def render_digest(issue: Issue, digest: Any, settings: Settings, env: jinja2.Environment | None = None,
                  *, summaries: bool = True) -> RenderedIssue:
    """Render a weekly DIGEST (digest.Digest) whose ISSUE carries its subject and preheader; refuse a clipped one."""
    env = env or make_environment(settings)
    context = {**_context(issue, settings), "digest": digest, "dates": digest.week.dates(settings.newsletter.language),
               "summaries": summaries}
    html = _inline(_render(env, DIGEST_HTML_TEMPLATE, context))
    text = _render(env, DIGEST_TEXT_TEMPLATE, context)
    size_warnings(html, issue.day)
    return RenderedIssue(issue=issue, html=html, text=text)


def size_warnings(html: str, day: date | None = None) -> list[Finding]:
    """Raise ClippedError if HTML is too big for Gmail; return a warning if it is close (EMAIL.md 6)."""
    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        issue = f"issue {day}: " if day else ""
        message = (f"{issue}the HTML is {size:,} bytes: Gmail clips above {GMAIL_CLIP_BYTES:,} bytes and hides "
                   "the unsubscribe footer; shorten articles or move some to another day")
        raise ClippedError(message, size=size, findings=[findings.error(Rule.GMAIL_CLIP, message)])
    if size > SIZE_WARNING_BYTES:
        return [findings.warning(
            Rule.GMAIL_CLIP, f"the HTML is {size:,} bytes, close to Gmail's clipping limit of {GMAIL_CLIP_BYTES:,} bytes")]
    return []


# --- Jinja filters for the text part (wrapping is done here once per issue, not with `wordwrap`) ---


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = "", hang: str | None = None) -> str:
    """Wrap TEXT to WIDTH columns (a wide CJK character takes two); INDENT starts the first line, HANG the others."""
    return fill(_SPACES.sub(" ", str(text)).strip(" "), width, indent, indent if hang is None else hang)


def nbsp(text: str) -> Markup:
    """Return TEXT escaped, its spaces no-break (`No.&nbsp;6`): a short label never splits over two lines."""
    return Markup(escape(text).replace(" ", Markup("&nbsp;")))


def direction_values(language: str) -> dict:
    """Return the template values that follow the writing direction: `<html lang dir>`, start/end, arrows."""
    rtl = i18n.direction(language) == "rtl"
    return {
        "language": i18n.html_lang(language),
        "direction": "rtl" if rtl else "ltr",
        "start": "right" if rtl else "left",
        "end": "left" if rtl else "right",
        # letter-spacing pulls apart the joined letters of Arabic and the scripts like it
        "spacing": "" if rtl else "letter-spacing: 1px; ",
        "forward": Markup("&larr;" if rtl else "&rarr;"),
        "back": Markup("&rarr;" if rtl else "&larr;"),
    }


def underline(text: str, char: str = "=", width: int = TEXT_WIDTH) -> str:
    """Wrap TEXT and underline it with CHAR as long as its longest line."""
    lines = wrap(text, width).split("\n")
    return "\n".join(lines) + "\n" + char * max(display_width(line) for line in lines)


# --- HTML → text ---

_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "ol", "p", "pre",
    "section", "table", "tr", "ul",
})
_SKIP_TAGS = frozenset({"head", "script", "style", "title", "template"})


@dataclasses.dataclass
class _Block:
    first: str  # prefix of the first line
    rest: str  # prefix of the following lines
    text: str
    quotes: int  # blockquote depth: blank lines between quoted blocks keep the ">"
    list_serial: int | None  # the outermost list it belongs to: items of one list are not spaced
    pre: bool = False


class _TextWalker:
    """Turns the elements of an HTML fragment, in document order, into blocks of text."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self.buffer: list[str] = []
        self.stack: list[list] = []  # ["quote"] | ["ul"|"ol", count, serial] | ["li", marker, used]
        self.links: list[tuple[str | None, int]] = []  # (href, where its text starts in buffer)
        self.skip = 0
        self.pre = 0
        self.lists_seen = 0

    def walk(self, html: str) -> None:
        from lxml import html as lxml_html

        root = lxml_html.fragment_fromstring(html, create_parent="div")
        # (element, True) opens an element; (element, False) closes it, then reads its tail.
        # Comments have no string tag: only their tail is text.
        stack: list[tuple[Any, bool]] = [(child, True) for child in reversed(root)]
        if root.text:
            self.handle_data(root.text)
        while stack:
            element, opening = stack.pop()
            tag = element.tag.lower() if isinstance(element.tag, str) else None
            if opening and tag:
                self.handle_starttag(tag, list(element.attrib.items()))
                if element.text:
                    self.handle_data(element.text)
                stack.append((element, False))
                stack.extend((child, True) for child in reversed(element))
                continue
            if tag:
                self.handle_endtag(tag)
            if element.tail:
                self.handle_data(element.tail)
        self.flush()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.flush()
            if tag == "blockquote":
                self.stack.append(["quote"])
            elif tag in ("ul", "ol"):
                self.lists_seen += 1
                self.stack.append([tag, 0, self.lists_seen])
            elif tag == "li":
                lists = [c for c in self.stack if c[0] in ("ul", "ol")]
                marker = "- "
                if lists and lists[-1][0] == "ol":
                    lists[-1][1] += 1
                    marker = f"{lists[-1][1]}. "
                self.stack.append(["li", marker, False])
            elif tag == "pre":
                self.pre += 1
            elif tag == "hr":
                self.buffer.append("* * *")
                self.flush()
        elif tag == "br":
            self.buffer.append("\n")
        elif tag == "a":
            self.links.append((dict(attrs).get("href"), len(self.buffer)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.buffer.append(f"[{alt}]")
        elif tag == "td" or tag == "th":
            self.buffer.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.flush()
            kind = {"blockquote": "quote", "ul": "ul", "ol": "ol", "li": "li"}.get(tag)
            if kind:
                for i in range(len(self.stack) - 1, -1, -1):
                    if self.stack[i][0] == kind:
                        del self.stack[i:]
                        break
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            if href and not href.startswith("#"):
                shown = _SPACES.sub(" ", "".join(self.buffer[start:])).strip(" ")
                if shown not in (href, href.removeprefix("mailto:")):  # else the text is the URL already
                    self.buffer.append(f" <{href}>")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            # Outside <pre>, a newline in the source is a space; "\n" in the buffer marks a <br>.
            self.buffer.append(data if self.pre else _SPACES.sub(" ", data))

    def flush(self) -> None:
        raw = "".join(self.buffer)
        self.buffer = []
        if not _SPACES.sub("", raw):
            return
        first = rest = ""
        quotes = 0
        for context in self.stack:
            if context[0] == "quote":
                first, rest = first + "> ", rest + "> "
                quotes += 1
            elif context[0] == "li":
                marker, used = context[1], context[2]
                # Only an item's first block shows its marker; later blocks line up under the text.
                first, rest = first + (" " * len(marker) if used else marker), rest + " " * len(marker)
                context[2] = True
        in_list = next((c[2] for c in self.stack if c[0] in ("ul", "ol")), None)
        if self.pre:
            text = raw.strip("\n")
            self.blocks.append(_Block(first, rest, text, quotes, in_list, pre=True))
        else:
            text = "\n".join(_SPACES.sub(" ", part).strip(" ") for part in raw.split("\n") if part.strip(" "))
            self.blocks.append(_Block(first, rest, text, quotes, in_list))


def html_to_text(html: str, width: int = TEXT_WIDTH) -> str:
    """Convert HTML to readable wrapped text: paragraphs, `- ` items, `> ` quotes, `text <url>` links."""
    walker = _TextWalker()
    if html.strip():
        walker.walk(html)
    out: list[str] = []
    previous: _Block | None = None
    for block in walker.blocks:
        if previous is not None:
            if block.list_serial is None or block.list_serial != previous.list_serial:
                out.append(("> " * min(previous.quotes, block.quotes)).rstrip())
        if block.pre:
            lines = block.text.split("\n")
            out.append("\n".join(
                (block.first if i == 0 else block.rest) + line for i, line in enumerate(lines)
            ))
        else:
            # <br> lines each wrap on their own, all but the first with the hanging prefix.
            parts = block.text.split("\n")
            out.append("\n".join(
                fill(part, width, block.first if i == 0 else block.rest, block.rest)
                for i, part in enumerate(parts)
            ))
        previous = block
    return "\n".join(out)


# --- internals ---


def _context(issue: Issue, settings: Settings) -> dict:
    language = settings.newsletter.language
    return {
        "issue": issue,
        "settings": settings,
        "newsletter": settings.newsletter,
        "sender": settings.sender,
        "long_date": i18n.long_date(issue.day, language),
        **direction_values(language),
        "greeting": GREETING_PLACEHOLDER,
        "unsubscribe_url": f"{settings.newsletter.base_url.rstrip('/')}/u/{TOKEN_PLACEHOLDER}",
        "preferences_url": f"{settings.newsletter.base_url.rstrip('/')}/p/{PREFERENCES_PLACEHOLDER}",
        "view_url": issue.archive_url,
    }


def _render(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as err:
        searched = ", ".join(str(p) for p in _search_path(env))
        raise BuildError.about(Rule.TEMPLATE, f"template not found (looked in {searched})", str(err.name)) from err
    except jinja2.TemplateSyntaxError as err:
        where = err.filename or err.name or name
        raise BuildError.about(Rule.TEMPLATE, err.message or str(err), where, err.lineno) from err
    except jinja2.TemplateError as err:
        raise BuildError.about(Rule.TEMPLATE, err.message or str(err), *_template_frame(err, name)) from err


def _template_frame(err: BaseException, name: str) -> tuple[str, int | None]:
    """Return (file, line) of the innermost template frame of ERR (Jinja rewrites tracebacks so)."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename.endswith((".j2", ".css", ".html", ".txt")):
            return frame.filename, frame.lineno
    return name, None


def _search_path(env: jinja2.Environment) -> list[Path]:
    loaders = env.loader.loaders if isinstance(env.loader, jinja2.ChoiceLoader) else [env.loader]
    return [Path(p) for loader in loaders for p in getattr(loader, "searchpath", [])]


def _inline(html: str) -> str:
    """Inline the CSS once (EMAIL.md rule 1), silently, and put the token href on its own line."""
    from premailer import Premailer  # slow to import: only the commands that render pay for it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inlined = Premailer(
            html,
            allow_network=False,
            strip_important=False,
            cssutils_logging_level=logging.CRITICAL,
            disable_basic_attributes=["height"],
        ).transform(pretty_print=False)
    return _TOKEN_HREF.sub(r"\n\1\n", inlined)


def _check_content(issue: Issue) -> None:
    """Refuse what breaks the email rules: non-https images and links (9, 12), body <h1>/<h2> (11)."""
    for item in issue.articles:
        article = item.article
        if article.image and not https_only(article.image):
            raise BuildError.about(Rule.IMAGE_HTTPS, f"image {article.image!r} must be an absolute https:// URL",
                                   str(article.path))
        _check_hrefs(article.path, [article.url] if article.url else [])
        hrefs, tags = _hrefs_and_tags(item.body_html)
        _check_hrefs(article.path, hrefs)
        if tags & {"h1", "h2"}:
            raise BuildError.about(Rule.BODY_HEADING, "the body has an <h1> or <h2>; the issue owns those levels",
                                   str(article.path))
    for box in (issue.note, issue.feature):
        if box is not None:
            _check_hrefs(box.path, _hrefs_and_tags(box.body_html)[0] + [getattr(box, "link", "")])
    if not https_only(issue.archive_url):
        raise BuildError.about(Rule.ARCHIVE_URL,
                               f"issue {issue.day}: archive_url {issue.archive_url!r} must start with https://")


def _hrefs_and_tags(body_html: str) -> tuple[list[str], set[str]]:
    """Return the href of every element of BODY_HTML, and the set of its tag names."""
    from lxml import html as lxml_html

    if not body_html.strip():
        return [], set()
    root = lxml_html.fragment_fromstring(body_html, create_parent="div")
    elements = [e for e in root.iterdescendants() if isinstance(e.tag, str)]
    return [e.get("href") for e in elements if e.get("href") is not None], {e.tag.lower() for e in elements}


def _check_hrefs(path: Path, hrefs: list[str]) -> None:
    for href in hrefs:
        if href and not https_only(href, mailto=True):
            raise BuildError.about(
                Rule.HTTPS_LINKS, f"link {href!r} is not https:// or mailto: (mail clients flag other links); "
                "use the site's https:// address", str(path),
            )


__all__ = [
    "make_environment", "render_digest", "render_issue", "render_notice", "size_warnings", "html_to_text",
    "wrap", "underline",
]
