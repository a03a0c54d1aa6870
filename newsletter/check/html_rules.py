"""The rules of the HTML part (EMAIL.md 1-13): each takes the Context and yields Findings."""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Iterator

from newsletter.check.context import Context, declarations, in_article_body, text_of
from newsletter.findings import Finding, error, warning
from newsletter.models import TOKEN_PLACEHOLDER
from newsletter.rules import GMAIL_CLIP_BYTES, MIN_FONT_PX, PREHEADER_MAX, PREHEADER_MIN, SIZE_WARNING_BYTES, Rule, https_only

_FORBIDDEN_TAGS = ("script", "form", "iframe", "base", "object", "embed", "frame", "frameset")
_LAYOUT_PROPERTIES = re.compile(r"^(?:flex|grid)(?:-|$)")
_FONT_PX = re.compile(r"^(\d+(?:\.\d+)?)px$")


def size(ctx: Context) -> Iterator[Finding]:
    """Rule 6: the HTML a subscriber gets stays under Gmail's clip, with a margin."""
    size = ctx.html_bytes
    where = f"articles/{ctx.issue.day.isoformat()}"
    if size > GMAIL_CLIP_BYTES:
        yield error(Rule.GMAIL_CLIP, f"the HTML is {size:,} bytes: Gmail clips above {GMAIL_CLIP_BYTES:,} and "
                    "hides the unsubscribe footer; shorten articles or move some to another day", where)
    elif size > SIZE_WARNING_BYTES:
        yield warning(Rule.GMAIL_CLIP, f"the HTML is {size:,} bytes, close to Gmail's clipping limit of "
                      f"{GMAIL_CLIP_BYTES:,}; keep it under {SIZE_WARNING_BYTES:,}", where)


def head(ctx: Context) -> Iterator[Finding]:
    """Rule 7: doctype, lang, charset, the meta tags clients read, the title."""
    doc = ctx.doc
    layout = ctx.templates.blame("<html", "<head")
    if not re.match(r"\s*<!DOCTYPE html>", ctx.rendered.html, re.I):
        yield error(Rule.HTML_HEAD, "the HTML does not start with <!DOCTYPE html> (Outlook and Gmail fall back "
                    "to quirks mode)", layout)
    if not doc.get("lang"):
        yield warning(Rule.HTML_HEAD, "<html> has no lang attribute (screen readers guess the language)", layout)
    metas = {(m.get("name") or "").lower(): m.get("content") or "" for m in doc.iter("meta")}
    charsets = [m.get("charset") for m in doc.iter("meta") if m.get("charset")]
    if not any(c.lower() == "utf-8" for c in charsets):
        yield error(Rule.HTML_HEAD, 'no <meta charset="utf-8"> in <head>', layout)
    for name, why in (("viewport", "phones zoom out to a desktop width"),
                      ("x-apple-disable-message-reformatting", "Apple Mail rescales the text"),
                      ("color-scheme", "dark-mode clients recolour the issue on their own")):
        if name not in metas:
            yield warning(Rule.HTML_HEAD, f'no <meta name="{name}"> in <head>: {why}', layout)
    title = doc.find(".//title")
    if title is None or (title.text or "").strip() != ctx.issue.subject:
        yield warning(Rule.HTML_HEAD, "<title> is not the subject (it is what a browser tab and some clients "
                      "show)", layout)


def styles(ctx: Context) -> Iterator[Finding]:
    """Rules 1, 2, 4 in the style blocks that stayed; 13 for linked stylesheets."""
    blame = ctx.templates.blame
    for link in ctx.doc.iter("link"):
        if "stylesheet" in (link.get("rel") or "").lower():
            yield error(Rule.REMOTE_STYLESHEET, f"<link rel=stylesheet href={link.get('href')!r}>: mail clients do "
                        "not load remote stylesheets; put the CSS in templates/email.css",
                        blame(link.get("href") or "<link", "<link"))
    for css, sheet, problems in ctx.style_sheets:
        for problem in problems[:3]:
            yield warning(Rule.CSS_PARSE, f"cssutils cannot read part of a kept <style> block: {problem}",
                          blame(css.strip()[:40], "<style"))
        not_inlined = [r.selectorText for r in sheet.cssRules
                       if r.type == r.STYLE_RULE and not re.search(r":(?!:?-)", r.selectorText)]
        not_important = [f"{selector} {{ {prop.name}: {prop.value} }}"
                         for selector, prop in _declared(sheet) if prop.priority != "important"]
        if not_important:
            yield error(Rule.CSS_IMPORTANT, f"{len(not_important)} declaration(s) in a <style> block are not "
                        "!important, so inline styles win over them, or they were never inlined (Gmail apps "
                        f"ignore <style>): first {not_important[0]}",
                        blame(not_important[0].split(" {")[0], "<style"))
        if not_inlined:  # no pseudo-class: premailer could have inlined it
            yield warning(Rule.CSS_INLINE, f"rule {not_inlined[0]} stays in a <style> block though it could be "
                          "inlined", blame(not_inlined[0]))


def _declared(sheet) -> list[tuple[str, Any]]:
    """Return (selector, property) of every declaration of SHEET, inside @media too."""
    found = []
    for rule in sheet.cssRules:
        if rule.type == rule.STYLE_RULE:
            found += [(rule.selectorText, p) for p in rule.style]
        elif rule.type == rule.MEDIA_RULE:
            found += [(r.selectorText, p) for r in rule.cssRules if r.type == r.STYLE_RULE for p in r.style]
    return found


def layout(ctx: Context) -> Iterator[Finding]:
    """Rule 8: no flex, grid, float or position, in style blocks or inline; one error per template."""
    declared = [(p.name, p.value, f"<style> {selector}")
                for _, sheet, _ in ctx.style_sheets for selector, p in _declared(sheet)]
    seen: set[tuple[str, str]] = set()
    for element in ctx.doc.iter():
        style = element.get("style") if isinstance(element.tag, str) else None
        for name, value in declarations(style or ""):
            if (name, value) not in seen:
                seen.add((name, value))
                declared.append((name, value, f"<{element.tag}>"))
    bad: dict[str, list[tuple[str, str]]] = {}
    for name, value, element in declared:
        name, value = name.lower(), " ".join(value.lower().replace("!important", "").split())
        if _is_layout(name, value):
            where = ctx.templates.blame(f"{name}:{value}", f"{name}: {value}", value, name)
            found = bad.setdefault(where, [])
            if f"{name}: {value}" not in (f for f, _ in found):
                found.append((f"{name}: {value}", element))
    for where, found in bad.items():
        listed = ", ".join(f"{declaration} (on {element})" for declaration, element in found[:4])
        more = f" and {len(found) - 4} more" if len(found) > 4 else ""
        yield error(Rule.CSS_LAYOUT, f"layout by flex, grid, float or position: {listed}{more}; Outlook and the "
                    "Gmail apps ignore these, so the columns fall apart: lay out with tables", where)


def _is_layout(name: str, value: str) -> bool:
    return bool(
        (name == "display" and re.search(r"\b(?:inline-)?(?:flex|grid)\b", value))
        or (name == "float" and value not in ("none", ""))
        or (name == "position" and value not in ("static", ""))
        or _LAYOUT_PROPERTIES.match(name)
    )


def forbidden(ctx: Context) -> Iterator[Finding]:
    """Rule 13: nothing mail clients strip or flag."""
    for tag in _FORBIDDEN_TAGS:
        if next(ctx.doc.iter(tag), None) is not None:
            yield error(Rule.FORBIDDEN_TAG, f"<{tag}> in the HTML: mail clients strip it or mark the message as "
                        "dangerous", ctx.templates.blame(f"<{tag}"))


def tables(ctx: Context) -> Iterator[Finding]:
    """Rule 8: presentation tables, a ghost table for Outlook, a container of 600px at most."""
    blame = ctx.templates.blame
    unmarked = bare = 0
    for table in ctx.doc.iter("table"):
        if in_article_body(table) or table.find(".//th") is not None or table.find("thead") is not None:
            continue  # a data table from an article
        if (table.get("role") or "").lower() != "presentation":
            unmarked += 1
        elif not all(table.get(a) == "0" for a in ("cellpadding", "cellspacing", "border")):
            bare += 1
    if unmarked:
        yield error(Rule.LAYOUT_TABLES, f"{unmarked} layout table(s) without role=\"presentation\": screen "
                    "readers read them out as data tables", blame("<table>", "<table"))
    if bare:
        yield warning(Rule.LAYOUT_TABLES, f'{bare} layout table(s) without cellpadding="0" cellspacing="0" '
                      'border="0"', blame("<table"))
    page = ctx.rendered.html
    if "<!--[if mso]>" not in page:
        yield warning(Rule.LAYOUT_TABLES, "no Outlook ghost table (<!--[if mso]> … <![endif]-->): Outlook on "
                      "Windows ignores max-width and stretches the column", blame("<body"))
    if not re.search(r"max-width:\s*(?:[1-5]?\d{1,2}|600)px", page):
        yield warning(Rule.LAYOUT_TABLES, "no container with max-width of 600px or less: the column spreads on "
                      "wide screens", blame("<body"))


def images(ctx: Context) -> Iterator[Finding]:
    """Rule 9: alt, an integer width, an absolute https:// source."""
    for img in ctx.doc.iter("img"):
        src = img.get("src") or ""
        where = ctx.where_url(src) or ctx.templates.blame(src, "<img")
        shown = _short(src)
        if img.get("alt") is None:
            yield error(Rule.IMAGE, f"<img src={shown!r}> has no alt attribute (alt=\"\" if it is decoration): "
                        "clients that block images show the alt text instead", where)
        if not re.fullmatch(r"\d+", img.get("width") or ""):
            yield error(Rule.IMAGE, f"<img src={shown!r}> has no integer width attribute: Outlook shows it at "
                        "its natural size", where)
        if src.lower().startswith("data:"):
            yield error(Rule.IMAGE_HTTPS, "an <img> is a data: URI: Gmail and Outlook do not show it; host the "
                        "image", where)
        elif not https_only(src):
            yield error(Rule.IMAGE_HTTPS, f"<img src={shown!r}> is not an absolute https:// address", where)


def preheader(ctx: Context) -> Iterator[Finding]:
    """Rule 10: first in <body>, hidden, 40-140 characters, not the subject."""
    text = ctx.issue.preheader
    where = ctx.templates.blame("preheader", "<body")
    if not text:
        yield error(Rule.PREHEADER, "the issue has no preheader (the line inbox lists show after the subject)", where)
        return
    body = ctx.doc.find(".//body")
    first = next((e for e in (body if body is not None else []) if isinstance(e.tag, str)), None)
    holder = first if first is not None and text_of(first) == text else next(
        (e for e in ctx.doc.iter() if isinstance(e.tag, str) and e.tag not in ("title", "html", "body")
         and text_of(e) == text and not len(e)), None)
    if holder is None:
        yield error(Rule.PREHEADER, "the preheader is not in the HTML: inbox lists show the first words of the "
                    "body instead", where)
        return
    if holder is not first:
        yield warning(Rule.PREHEADER, "the preheader is not the first element in <body>", where)
    assert holder is not None  # mypy loses the narrowing across the yield above
    style = dict(declarations(holder.get("style") or ""))
    hidden = style.get("display", "").startswith("none") or (
        style.get("max-height", "").startswith("0") and style.get("overflow", "").startswith("hidden"))
    if not hidden:
        yield error(Rule.PREHEADER, "the preheader is not hidden (display:none): it shows as a stray line at the "
                    "top", where)
    if not PREHEADER_MIN <= len(text) <= PREHEADER_MAX:
        yield warning(Rule.PREHEADER, f"the preheader is {len(text)} characters; inbox lists show "
                      f"{PREHEADER_MIN}–{PREHEADER_MAX}", where)
    if text.casefold() == ctx.issue.subject.casefold():
        yield warning(Rule.PREHEADER, "the preheader repeats the subject", where)


def headings(ctx: Context) -> Iterator[Finding]:
    """Rule 11: one <h1>, no empty heading, no skipped level."""
    blame = ctx.templates.blame
    found = list(ctx.doc.iter("h1", "h2", "h3", "h4", "h5", "h6"))
    ones = [h for h in found if h.tag == "h1"]
    if len(ones) != 1:
        yield error(Rule.HEADINGS, f"{len(ones)} <h1> elements; an issue has exactly one (the masthead)",
                    blame("<h1"))
    level = 0
    for heading in found:
        new = int(heading.tag[1])
        label = text_of(heading)
        if not label and heading.find(".//img[@alt]") is None:
            yield error(Rule.HEADINGS, f"an empty <{heading.tag}>", blame(f"<{heading.tag}"))
        if new > level + 1:
            where = ctx.where_text(label) or blame(f"<{heading.tag}")
            shown = f"<{heading.tag}> {label[:60]!r}"
            yield error(Rule.HEADINGS, f"{shown} skips a heading level (after <h{level}>)" if level else
                        f"{shown} comes before the <h1>", where)
        level = new


def links(ctx: Context) -> Iterator[Finding]:
    """Rules 11, 12: https: or mailto: links with text; unsubscribe and view-in-browser links."""
    blame = ctx.templates.blame
    archive = ctx.issue.archive_url.rstrip("/")
    view = unsubscribe = False
    for a in ctx.doc.iter("a"):
        href = (a.get("href") or "").strip()
        unsubscribe = unsubscribe or TOKEN_PLACEHOLDER in href
        view = view or href.rstrip("/") == archive
        if not href:
            yield warning(Rule.EMPTY_LINK, f"a link without href: {text_of(a)[:60]!r}", blame("<a>", "<a "))
        elif not https_only(href, mailto=True):
            yield error(Rule.HTTPS_LINKS, f"link {_short(href)!r} is not https: or mailto: (mail clients flag other "
                        "links; javascript: never runs)",
                        ctx.where_url(href) or blame(href, href.split(":", 1)[0] + ":"))
        if not text_of(a) and not any((img.get("alt") or "").strip() for img in a.iter("img")):
            yield warning(Rule.LINK_TEXT, f"the link to {href[:80]!r} has no text (screen readers read the address)",
                          ctx.where_url(href) or blame(href))
    unsubscribe_url = f"{ctx.settings.newsletter.base_url.rstrip('/')}/u/{TOKEN_PLACEHOLDER}"
    layout = blame("unsubscribe_url", "<body")
    if not unsubscribe:
        yield error(Rule.UNSUBSCRIBE_LINK, "the HTML part has no unsubscribe link (a link to {{ unsubscribe_url }}): "
                    "Gmail and Yahoo require one in the body", layout)
    if unsubscribe_url not in ctx.rendered.text:
        yield error(Rule.UNSUBSCRIBE_LINK, "the text part has no unsubscribe link ({{ unsubscribe_url }})",
                    blame("footer", "{% include", text_part=True))
    if not view:
        yield warning(Rule.VIEW_LINK, "no \"view in browser\" link to the issue's archive page ({{ view_url }})",
                      layout)


def text_sizes(ctx: Context) -> Iterator[Finding]:
    """Rule 11: no text under 14px."""
    small: dict[str, str] = {}
    for element in ctx.doc.iter():
        if not isinstance(element.tag, str) or not (element.text or "").strip():
            continue
        match = _FONT_PX.match(dict(declarations(element.get("style") or "")).get("font-size", ""))
        if match and float(match[1]) < MIN_FONT_PX:
            small.setdefault(match[0], f"<{element.tag}> {text_of(element)[:40]!r}")
    for font_size, example in small.items():
        yield warning(Rule.TEXT_SIZE, f"text set in {font_size}, under {MIN_FONT_PX}px, is hard to read on phones "
                      f"(e.g. {example})", ctx.templates.blame(f"font-size: {font_size}", f"font-size:{font_size}"))


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


RULES = (size, head, styles, layout, forbidden, tables, images, preheader, headings, links, text_sizes)
