"""Sanitized HTML (readers.sanitize's few tags) → Markdown, so a feed's entry is an ordinary article file.

Text is escaped so that nothing in it becomes Markdown: what an editor sees in the file is what
the feed said, and readers.py renders it back to the same words.
"""

from __future__ import annotations

import re
from typing import Any

_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>&!|~])")
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")
_BLOCKS = frozenset({"p", "ul", "ol", "blockquote", "pre", "h3", "h4", "table", "hr", "li", "thead", "tbody", "tr"})


def to_markdown(html_fragment: str) -> str:
    """Return HTML_FRAGMENT (already sanitized) as Markdown paragraphs."""
    from lxml import html

    if not html_fragment.strip():
        return ""
    root = html.fragment_fromstring(html_fragment, create_parent="div")
    blocks = _blocks(root)
    return "\n\n".join(b for b in blocks if b.strip()) + "\n"


def escape(text: str) -> str:
    """Return TEXT with whitespace runs collapsed and every character Markdown would read escaped."""
    return _INLINE_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", text))


def _blocks(parent: Any) -> list[str]:
    """Return the Markdown blocks of PARENT's children; loose inline content becomes paragraphs."""
    blocks: list[str] = []
    inline: list[str] = []

    def flush() -> None:
        text = "".join(inline).strip()
        inline.clear()
        if text:
            blocks.append(_guard_lines(text))

    inline.append(escape(parent.text or ""))
    for child in parent:
        if not isinstance(child.tag, str):  # a comment or processing instruction the sanitizer let by
            inline.append(escape(child.tail or ""))
            continue
        if child.tag in _BLOCKS or _has_block(child):
            flush()
            blocks.append(_block(child))
        else:
            inline.append(_inline(child))
        inline.append(escape(child.tail or ""))
    flush()
    return blocks


def _block(element: Any) -> str:
    tag = element.tag
    if tag == "p" and not _has_block(element):
        return _guard_lines(_inline_children(element).strip())
    if tag in ("h3", "h4"):
        return f"{'#' * int(tag[1])} {_inline_children(element).strip()}"
    if tag == "hr":
        return "***"
    if tag == "pre":
        code = element.text_content().rstrip("\n")
        fence = "`" * max(3, _longest_run(code, "`") + 1)
        return f"{fence}\n{code}\n{fence}"
    if tag == "blockquote":
        inner = "\n\n".join(_blocks(element))
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if tag in ("ul", "ol"):
        return _list(element)
    if tag in ("table", "thead", "tbody"):  # a table becomes one paragraph per row, its cells joined
        return "\n\n".join(_block(row) for row in element.iter("tr"))
    if tag == "tr":
        cells = [_inline_children(cell).strip() for cell in element if cell.tag in ("td", "th")]
        return _guard_lines(" · ".join(c for c in cells if c))
    return "\n\n".join(_blocks(element))  # li outside a list


def _list(element: Any) -> str:
    items = []
    for number, item in enumerate((c for c in element if c.tag == "li"), 1):
        marker = f"{number}." if element.tag == "ol" else "-"
        body = "\n\n".join(b for b in _blocks(item) if b.strip()) or escape(" ")
        pad = " " * (len(marker) + 1)
        lines = body.split("\n")
        items.append("\n".join([f"{marker} {lines[0]}", *(f"{pad}{line}" if line else "" for line in lines[1:])]))
    return "\n".join(items)


def _has_block(element: Any) -> bool:
    return any(isinstance(d.tag, str) and d.tag in _BLOCKS for d in element.iterdescendants())


def _inline(element: Any) -> str:
    tag = element.tag
    inner = _inline_children(element)
    if tag in ("strong", "b") and inner.strip():
        return f"**{inner.strip()}**"
    if tag in ("em", "i") and inner.strip():
        return f"*{inner.strip()}*"
    if tag == "code":
        code = re.sub(r"\s+", " ", element.text_content())
        ticks = "`" * (_longest_run(code, "`") + 1)
        pad = " " if code.startswith("`") or code.endswith("`") else ""
        return f"{ticks}{pad}{code}{pad}{ticks}" if code.strip() else ""
    if tag == "br":
        return "\\\n"
    if tag == "a":
        href = element.get("href")
        if href and inner.strip():
            return f"[{inner.strip()}](<{_href(href)}>)"
    return inner


def _inline_children(element: Any) -> str:
    parts = [escape(element.text or "")]
    for child in element:
        if isinstance(child.tag, str):  # a block inside a line (a heading's list): its words only
            parts.append(f" {_inline_children(child)} " if child.tag in _BLOCKS else _inline(child))
        parts.append(escape(child.tail or ""))
    return "".join(parts)


def _href(href: str) -> str:
    """Return HREF as it may stand between < and > in a Markdown link."""
    return re.sub(r"[<>\s\\]", lambda m: "%{:02X}".format(ord(m.group())), href)


def _guard_lines(text: str) -> str:
    """Escape what would start a heading, quote, list or setext underline at the start of each line."""
    return "\n".join(_LINE_START.sub(lambda m: m.group(1) + _escape_marker(m.group(2)), line)
                     for line in text.split("\n"))


def _escape_marker(marker: str) -> str:
    if marker[0].isdigit():
        return marker[:-1] + "\\" + marker[-1]
    return "\\" + marker


def _longest_run(text: str, char: str) -> int:
    return max((len(m) for m in re.findall(f"{re.escape(char)}+", text)), default=0)


__all__ = ["escape", "to_markdown"]
