"""Article bodies as markdown-it tokens: plain text and linked phrases, never inside code or links."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import html as lxml_html

from newsletter.readers import parse_markdown, parse_text, render_tokens
from newsletter.tokens import link_phrases, plain_text

SEE = re.compile(r"\((?P<inner>see\s+SSB\s*,\s*Nov\.\s+(?P<day>\d+))\)")


def linked(markdown: str, href=lambda m: f"https://ssb.example.org/archive/2026/11/{m['day']}/") -> str | None:
    tokens = link_phrases(parse_markdown(markdown), SEE, href)
    return None if tokens is None else render_tokens(tokens)


def test_plain_text_keeps_code_and_link_text_and_drops_images():
    text = plain_text(parse_markdown("Talks *resumed*\n(see [the text](https://e.org)) and `x < y`.\n\n"
                                     "![a diagram](https://e.org/d.png)\n\n- one\n- two\n"))
    assert text == "Talks resumed (see the text) and x < y. one two"


def test_plain_text_of_a_text_article_is_its_paragraphs():
    assert plain_text(parse_text("First line\nsame paragraph.\n\n  \nSecond & <last>.\n")) == (
        "First line same paragraph. Second & <last>.")


def test_a_phrase_is_linked_in_text_but_not_in_code_links_or_images():
    body = linked("As said (see SSB, Nov. 22), then `(see SSB, Nov. 21)` and [(see SSB, Nov. 20)](https://e.org)"
                  " and ![(see SSB, Nov. 19)](https://e.org/i.png)\n\n```\n(see SSB, Nov. 18)\n```\n")
    assert body is not None
    assert '(<a href="https://ssb.example.org/archive/2026/11/22/">see SSB, Nov. 22</a>)' in body
    assert body.count("archive/2026/11/") == 1
    assert "<code>(see SSB, Nov. 21)</code>" in body and "(see SSB, Nov. 18)" in body


def test_a_phrase_across_a_line_break_is_linked_and_the_break_kept():
    body = linked("Earlier (see SSB,\nNov. 22) talks.")
    assert body == '<p>Earlier (<a href="https://ssb.example.org/archive/2026/11/22/">see SSB,\nNov. 22</a>) talks.</p>'


def test_nothing_linked_returns_none_so_the_body_stays_as_read():
    assert linked("No reference here, `(see SSB, Nov. 22)` is code.") is None
    assert linked("Refused (see SSB, Nov. 22).", href=lambda m: None) is None


def test_added_links_keep_no_rel_while_the_editors_links_are_sanitized():
    body = linked("[x](javascript:alert(1)) and [y](https://e.org) (see SSB, Nov. 22)")
    assert 'href="javascript' not in body and 'href="https://e.org" rel="noopener"' in body
    assert '<a href="https://ssb.example.org/archive/2026/11/22/">' in body


WORDS = st.sampled_from([
    "word", "Dr.", "(see SSB, Nov. 22)", "`code`", "[link](https://e.org)", "![alt](https://e.org/i.png)",
    "*em*", "**strong**", "&amp;", "&copy;", "<b>raw</b>", "\\*", "x < y", "ß", "\u00a0", "A&B", "http://x.org",
])
BLOCKS = st.sampled_from(["", "- ", "1. ", "> ", "# ", "### ", "    "])


@settings(deadline=None)  # the first example pays for importing lxml
@given(st.lists(st.tuples(BLOCKS, st.lists(WORDS, min_size=1, max_size=6)), min_size=1, max_size=6))
def test_plain_text_is_the_text_a_reader_sees_in_the_sanitized_html(blocks):
    markdown = "\n\n".join(prefix + " ".join(words) for prefix, words in blocks)
    tokens = parse_markdown(markdown)
    shown = lxml_html.fragment_fromstring(render_tokens(tokens) or "<p></p>", create_parent="div").text_content()
    assert "".join(plain_text(tokens).split()) == "".join(shown.split())
