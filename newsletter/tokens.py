"""Article bodies as markdown-it tokens: their plain text, and links around phrases of their text.

Code spans, code blocks, links and images are tokens of their own here, so a phrase inside them is
never touched: no tag tracking, no escaping. Pure functions; the tokens passed in are not changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from markdown_it.token import Token

# Inline tokens whose content is text a reader sees (the sanitizer drops images, alt text and all).
_TEXT = frozenset({"text", "text_special", "code_inline"})
_RUN = frozenset({"text", "text_special", "softbreak"})  # text a phrase may span
ADDED = "newsletter_added"  # meta key of the link tokens link_phrases adds


def plain_text(tokens: Sequence[Token]) -> str:
    """Return the text of TOKENS: each block apart, whitespace collapsed, images left out."""
    parts: list[str] = []
    for token in tokens:
        if token.type == "inline":
            for child in token.children or ():
                if child.type in _TEXT:
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append(" ")
        elif token.type in ("fence", "code_block"):
            parts.append(f" {token.content} ")
        else:
            parts.append(" ")
    return " ".join("".join(parts).split())


def link_phrases(
    tokens: Sequence[Token], pattern: re.Pattern[str], href: Callable[[re.Match[str]], str | None],
) -> tuple[Token, ...] | None:
    """Return TOKENS with each match of PATTERN's group 'inner' linked to href(match).

    Matches in code, in links and in images are left alone, as are those href() returns None for.
    Returns None when nothing was linked (the tokens, and their rendering, stay as they were).
    """
    out: list[Token] = []
    changed = False
    for token in tokens:
        if token.type == "inline" and token.children:
            children = _link_children(token.children, pattern, href)
            if children is not None:
                token = token.copy(children=children)
                changed = True
        out.append(token)
    return tuple(out) if changed else None


def _link_children(
    children: list[Token], pattern: re.Pattern[str], href: Callable[[re.Match[str]], str | None],
) -> list[Token] | None:
    out: list[Token] = []
    changed = False
    for run, linkable in _runs(children):
        if not linkable:
            out += run
            continue
        # a phrase may span a line break: match over the run's text, with "\n" for each softbreak
        text = "".join("\n" if t.type == "softbreak" else t.content for t in run)
        pieces: list[Token] = []
        start = 0
        for match in pattern.finditer(text):
            url = href(match)
            if url is None:
                continue
            inner_start, inner_end = match.span("inner")
            pieces += [
                _text(text[start:inner_start]),
                Token("link_open", "a", 1, attrs={"href": url}, meta={ADDED: True}),
                _text(text[inner_start:inner_end]),
                Token("link_close", "a", -1, meta={ADDED: True}),
            ]
            start = inner_end
        if not pieces:
            out += run
            continue
        changed = True
        # "\n" in a text token renders as the softbreak it replaces does
        out += [t for t in (*pieces, _text(text[start:])) if t.type != "text" or t.content]
    return out if changed else None


def _runs(children: list[Token]) -> Iterator[tuple[list[Token], bool]]:
    """Yield CHILDREN in runs: (text and line breaks outside links, True) or (anything else, False)."""
    run: list[Token] = []
    run_linkable = False
    depth = 0
    for child in children:
        linkable = depth == 0 and child.type in _RUN
        if child.type == "link_open":
            depth += 1
        elif child.type == "link_close":
            depth = max(depth - 1, 0)
        if run and linkable != run_linkable:
            yield run, run_linkable
            run = []
        run.append(child)
        run_linkable = linkable
    if run:
        yield run, run_linkable


def _text(content: str) -> Token:
    return Token("text", "", 0, content=content)


__all__ = ["ADDED", "link_phrases", "plain_text"]
