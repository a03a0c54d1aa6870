"""What every check rule is handed: the rendered issue, its parsed HTML, one sample message, and
the means to say which file a problem comes from (an article, a template, the settings)."""

from __future__ import annotations

import email
import email.policy
import html as html_lib
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from newsletter import files
from newsletter.findings import Finding
from newsletter.models import Issue, RenderedIssue
from newsletter.settings import Settings


@dataclass
class Context:
    """The prepared issue as the rules see it. `raw` is None when the sample message could not be built."""

    settings: Settings
    rendered: RenderedIssue
    doc: Any  # the issue's HTML parsed by lxml
    html_text: str  # the sample subscriber's HTML part, as sent
    plain: str  # the sample subscriber's text part, as sent
    raw: bytes | None
    templates: TemplateSources
    pipeline: tuple[Finding, ...] = ()  # the builder's and renderer's warnings

    @property
    def issue(self) -> Issue:
        return self.rendered.issue

    @property
    def html_bytes(self) -> int:
        return len(self.html_text.encode("utf-8"))

    def show(self, path: Path | str) -> str:
        """Return PATH as the report shows it: relative to the project when it is inside it."""
        return display(self.settings, path)

    @cached_property
    def style_sheets(self) -> list[tuple[str, Any, list[str]]]:
        """Return (css, parsed sheet, what cssutils could not read) for each <style> block kept."""
        import cssutils

        sheets = []
        for block in self.doc.iter("style"):
            css = block.text or ""
            problems: list[str] = []
            parser = cssutils.CSSParser(log=_ListLogger(problems), loglevel=logging.WARNING,
                                        raiseExceptions=False, validate=False)
            sheets.append((css, parser.parseString(css), problems))
        return sheets

    def where_url(self, url: str) -> str:
        """Return the article (or note, feature) whose body or front matter holds URL."""
        if not url:
            return ""
        escaped = html_lib.escape(url)
        for item in self.issue.articles:
            article = item.article
            if url in (article.url, article.image) or f'"{escaped}"' in item.body_html:
                return self.show(article.path)
        for box in (self.issue.note, self.issue.feature):
            if box is not None and (url == getattr(box, "link", None) or f'"{escaped}"' in box.body_html):
                return self.show(box.path)
        return ""

    def where_text(self, text: str) -> str:
        """Return the article whose body holds TEXT (an empty TEXT matches nothing)."""
        if not text:
            return ""
        for item in self.issue.articles:
            if text in html_lib.unescape(item.body_html):
                return self.show(item.article.path)
        for box in (self.issue.note, self.issue.feature):
            if box is not None and text in html_lib.unescape(box.body_html):
                return self.show(box.path)
        return ""


def display(settings: Settings, path: Path | str) -> str:
    """Return PATH relative to the project root when it is inside it, else as given."""
    return files.display(path, settings.root)


class TemplateSources:
    """The templates an email is made of, as the Jinja environment resolves them, the project's own first."""

    def __init__(self, settings: Settings) -> None:
        from newsletter import renderer

        env = renderer.make_environment(settings)
        project = settings.templates_dir.resolve()
        sources = []
        # the digest's first: the queue below reads the last first, so the issue's templates keep the lead
        roots = ((renderer.DIGEST_HTML_TEMPLATE, renderer.HTML_TEMPLATE, renderer.NOTICE_HTML_TEMPLATE, False),
                 (renderer.DIGEST_TEXT_TEMPLATE, renderer.TEXT_TEMPLATE, renderer.NOTICE_TEXT_TEMPLATE, True))
        for *names, is_text in roots:
            for name, source, filename in _referenced_templates(env, names):
                path = Path(filename).resolve()
                own = path.is_relative_to(project)
                shown = display(settings, path) if own else f"{name} (built-in template)"
                sources.append((not own, shown, is_text, source.lower()))
        self.sources = [s[1:] for s in sorted(sources, key=lambda s: s[0])]

    def blame(self, *needles: str, text_part: bool = False) -> str:
        """Return the first template of the HTML (or text) part holding one of NEEDLES, tried in order."""
        for needle in needles:
            needle = needle.lower().strip()
            if not needle:
                continue
            for shown, is_text, source in self.sources:
                if is_text == text_part and needle in source:
                    return shown
        return ""


def _referenced_templates(env, names: list[str]) -> list[tuple[str, str, str]]:
    """Return (name, source, file) of NAMES and every template they extend, include or import."""
    import jinja2
    from jinja2 import meta

    found, queue = {}, list(names)
    while queue:
        name = queue.pop()
        if name in found:
            continue
        try:
            source, filename, _ = env.loader.get_source(env, name)
            referenced = meta.find_referenced_templates(env.parse(source))
        except jinja2.TemplateError:
            continue  # missing or broken: the render reported it already
        found[name] = (name, source, filename)
        queue.extend(r for r in referenced if r)
    return list(found.values())


class _ListLogger:
    """A logging.Logger stand-in for cssutils that keeps its messages."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def _keep(self, msg: object, *args: object, **_: object) -> None:
        self.into.append(str(msg) % args if args else str(msg))

    error = warning = critical = fatal = _keep

    def info(self, *_: object, **__: object) -> None:
        pass

    debug = info

    def setLevel(self, *_: object) -> None:  # noqa: N802 - the logging API's name
        pass


# --- small helpers -------------------------------------------------------------------------------

def declarations(style: str) -> list[tuple[str, str]]:
    """Return the (name, value) pairs of an inline style, both lower case."""
    out = []
    for part in style.split(";"):
        name, sep, value = part.partition(":")
        if sep and name.strip():
            out.append((name.strip().lower(), value.strip().lower()))
    return out


def text_of(element) -> str:
    return " ".join(element.text_content().split())


def in_article_body(element) -> bool:
    return any("body" in (parent.get("class") or "").split() for parent in element.iterancestors())


def raw_headers(head: str) -> dict[str, str]:
    """Return the raw (unfolded, undecoded) header values by lower-case name."""
    fields: dict[str, str] = {}
    for line in re.split(r"\r\n(?![ \t])", head):
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.replace("\r\n", "").strip())
    return fields


def decoded_parts(raw: bytes) -> dict[str, str]:
    """Return the decoded text parts of RAW by content type."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    parts = message.iter_parts() if message.is_multipart() else [message]
    return {p.get_content_type(): p.get_content() for p in parts if p.get_content_maintype() == "text"}
