"""Article files → DayContent: validation naming file and field, and sanitized bodies."""

from __future__ import annotations

import textwrap
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from newsletter.errors import ArticleError
from newsletter.readers import (
    ALLOWED_TAGS, URL_SCHEMES, article_days, read_day, render_markdown, render_text, sanitize, slugify,
)
from newsletter.rules import Rule
from newsletter.settings import load_settings

DAY = date(2026, 11, 26)
SECTIONS = ["Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy"]


@pytest.fixture
def project(tmp_path: Path):
    (tmp_path / "newsletter.toml").write_text(textwrap.dedent("""\
        [newsletter]
        name = "Test Bulletin"
        short_name = "SSB"
        base_url = "https://ssb.example.org"

        [issue]
        sections = ["Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy"]
        default_section = "Policy"
        """), encoding="utf-8")
    return load_settings(tmp_path)


def write(settings, name: str, text: str | bytes, day: date = DAY) -> Path:
    folder = settings.articles_dir / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def read(settings, day: date = DAY):
    return read_day(settings.articles_dir, day, settings)


def error_of(settings, day: date = DAY) -> str:
    with pytest.raises(ArticleError) as caught:
        read(settings, day)
    return str(caught.value)


GOOD = """\
    ---
    title: Talks Open in Port Amsel
    section: Nuclear
    summary: Negotiators meet again.
    sources: ["Interfax, June 2"]
    priority: 2
    url: https://example.org/story
    author: Ana Solberg
    image: https://example.org/picture.jpg
    image_alt: Delegates at a table
    ---
    Negotiators met on **Monday** (Interfax, June 2).

    # A heading
    """


# --- the folder ----------------------------------------------------------------------------------

def test_article_days_lists_only_dated_folders_holding_articles(project):
    write(project, "a.md", GOOD, date(2026, 11, 24))
    write(project, "b.txt", "Headline\n\nBody.\n", date(2026, 11, 22))
    write(project, "_note.md", "Only a note.\n", date(2026, 11, 23))
    write(project, ".hidden.md", GOOD, date(2026, 11, 25))
    (project.articles_dir / "drafts").mkdir()
    (project.articles_dir / "drafts" / "x.md").write_text("---\ntitle: x\n---\n", encoding="utf-8")
    (project.articles_dir / "2026-13-40").mkdir()
    (project.articles_dir / "2026-13-40" / "x.md").write_text("---\ntitle: x\n---\n", encoding="utf-8")
    assert article_days(project.articles_dir) == [date(2026, 11, 22), date(2026, 11, 24)]


def test_article_days_of_a_missing_folder_is_empty(tmp_path):
    assert article_days(tmp_path / "nowhere") == []


def test_a_missing_day_folder_reads_as_no_articles(project):
    content = read(project)
    assert content.day == DAY and content.articles == () and content.note is None


# --- good files ------------------------------------------------------------------------------------

def test_markdown_article_fields_are_read(project):
    path = write(project, "Talks Open!.md", GOOD)
    (article,) = read(project).articles
    assert article.path == path
    assert article.slug == "talks-open"
    assert article.title == "Talks Open in Port Amsel"
    assert article.section == "Nuclear"
    assert article.summary == "Negotiators meet again."
    assert article.sources == ("Interfax, June 2",)
    assert article.priority == 2
    assert article.url == "https://example.org/story"
    assert article.author == "Ana Solberg"
    assert article.image == "https://example.org/picture.jpg"
    assert article.image_alt == "Delegates at a table"
    assert "<p>Negotiators met on <strong>Monday</strong> (Interfax, June 2).</p>" in article.body_html
    # The issue owns h1/h2: a Markdown '#' becomes h3.
    assert "<h3>A heading</h3>" in article.body_html and "<h1>" not in article.body_html


def test_body_headings_start_at_h3_without_skipping_levels():
    assert render_markdown("### Top\n\n#### Deeper\n\n###### Deepest\n") == (
        "<h3>Top</h3>\n<h4>Deeper</h4>\n<h4>Deepest</h4>"
    )


def test_defaults_apply_when_optional_fields_are_left_out(project):
    write(project, "plain.md", """\
        ---
        title: Only a Title
        sources: One Source, May 3
        ---
        Body.
        """)
    (article,) = read(project).articles
    assert article.section == "Policy"
    assert article.priority == 100
    assert article.sources == ("One Source, May 3",)
    assert article.summary == "" and article.url == "" and article.image == ""


def test_text_article_has_headline_and_joined_paragraphs(project):
    write(project, "export-rules.txt", (
        "\n\nDrelland Tightens <Export> Rules\n\n"
        "First line\nof the first paragraph & more.\n\n\n"
        "Second paragraph.\n"
    ))
    (article,) = read(project).articles
    assert article.title == "Drelland Tightens <Export> Rules"
    assert article.section == "Policy"
    assert article.body_html == (
        "<p>First line of the first paragraph &amp; more.</p>\n<p>Second paragraph.</p>"
    )


def test_files_are_read_in_name_order_and_others_ignored(project):
    write(project, "b.md", "---\ntitle: B\n---\nb\n")
    write(project, "a.txt", "A\n\na\n")
    write(project, "c.md", "---\ntitle: C\n---\nc\n")
    write(project, "picture.jpg", b"\xff\xd8\x00binary")
    write(project, "_draft.md", "not front matter at all")
    assert [a.title for a in read(project).articles] == ["A", "B", "C"]


def test_note_and_feature_are_read(project):
    write(project, "a.md", GOOD)
    write(project, "_note.md", "We will not publish on Friday.\n")
    write(project, "_feature.md", """\
        ---
        title: "Country profile: Veska"
        link: https://example.org/profiles/veska
        ---
        Veska is a *small* country.
        """)
    content = read(project)
    assert content.note.title == "Note to our readers"
    assert content.note.body_html == "<p>We will not publish on Friday.</p>"
    assert content.feature.title == "Country profile: Veska"
    assert content.feature.link == "https://example.org/profiles/veska"
    assert content.feature.link_text == "Learn more"
    assert content.feature.body_html == "<p>Veska is a <em>small</em> country.</p>"
    assert [a.title for a in content.articles] == ["Talks Open in Port Amsel"]


def test_slug_is_lowercased_with_dashes():
    assert slugify("Veska Talks_Open (2)") == "veska-talks-open-2"


# --- bad files: each names the file and the field -----------------------------------------------

def test_missing_title_names_file_and_field(project):
    write(project, "untitled.md", "---\nsection: Nuclear\n---\nBody.\n")
    message = error_of(project)
    assert message.startswith("articles/2026-11-26/untitled.md")
    assert "'title'" in message


def test_markdown_without_front_matter_asks_for_a_title(project):
    write(project, "bare.md", "Just a body.\n")
    message = error_of(project)
    assert message.startswith("articles/2026-11-26/bare.md:1:") and "'title'" in message


def test_bad_yaml_names_file_and_line(project):
    write(project, "broken.md", """\
        ---
        title: Fine
        sources: ["Interfax, June 2"
        priority: 1
        ---
        Body.
        """)
    message = error_of(project)
    # The unclosed list is noticed on line 4 of the file (the front matter starts on line 2).
    assert message.startswith("articles/2026-11-26/broken.md:4: front matter is not valid YAML")


def test_unclosed_front_matter_is_an_error(project):
    write(project, "open.md", "---\ntitle: Fine\nBody without a closing line.\n")
    assert "not closed" in error_of(project)


def test_unknown_section_lists_the_allowed_ones(project):
    write(project, "cyber.md", "---\ntitle: T\nsection: Cyber\n---\nBody.\n")
    message = error_of(project)
    assert message.startswith("articles/2026-11-26/cyber.md: field 'section'")
    assert "'Cyber'" in message and ", ".join(SECTIONS) in message


def test_unknown_front_matter_key_is_a_typo_error(project):
    write(project, "typo.md", "---\ntitle: T\nsumary: oops\n---\nBody.\n")
    message = error_of(project)
    assert message.startswith("articles/2026-11-26/typo.md: unknown front-matter key 'sumary'")
    assert "summary" in message


@pytest.mark.parametrize("line, field", [
    ("priority: high", "priority"),
    ("priority: true", "priority"),
    ("summary: 2026-11-21", "summary"),
    ("sources: {a: 1}", "sources"),
    ("url: ftp://example.org/x", "url"),
    ("image: http://example.org/x.jpg\nimage_alt: x", "image"),
    ("title: 1984", "title"),
])
def test_wrong_types_and_urls_name_the_field(project, line, field):
    head = "" if line.startswith("title") else "title: T\n"
    write(project, "bad.md", f"---\n{head}{line}\n---\nBody.\n")
    assert f"field '{field}'" in error_of(project)


def test_image_without_alt_is_an_error(project):
    write(project, "pic.md", "---\ntitle: T\nimage: https://example.org/x.jpg\n---\nBody.\n")
    message = error_of(project)
    assert message.startswith("articles/2026-11-26/pic.md: field 'image_alt'")


def test_non_utf8_names_line_and_byte_offset(project):
    write(project, "latin1.txt", "Headline\n\nCaf\u00e9 au lait.\n".encode("latin-1"))
    message = error_of(project)
    assert message.startswith("articles/2026-11-26/latin1.txt:3: not valid UTF-8")
    assert "byte 0xe9 at byte offset 13" in message


def test_nul_byte_is_an_error(project):
    write(project, "nul.md", b"---\ntitle: T\n---\nBo\x00dy\n")
    message = error_of(project)
    assert message.startswith("articles/2026-11-26/nul.md:4:") and "NUL byte" in message


def test_empty_file_is_an_error(project):
    write(project, "empty.md", "  \n\n")
    assert error_of(project) == "articles/2026-11-26/empty.md: the file is empty"


def test_feature_needs_title_and_https_link(project):
    write(project, "a.md", GOOD)
    write(project, "_feature.md", "---\nlink: http://example.org\nlinktext: x\n---\nBody.\n")
    message = error_of(project)
    assert "_feature.md: field 'title'" in message
    assert "_feature.md: field 'link'" in message
    assert "_feature.md: unknown front-matter key 'linktext'" in message


def test_all_errors_of_a_day_are_reported_together(project):
    write(project, "a-good.md", GOOD)
    write(project, "b-untitled.md", "---\nsection: Nuclear\n---\nBody.\n")
    write(project, "c-cyber.md", "---\ntitle: T\nsection: Cyber\nsumary: x\n---\nBody.\n")
    write(project, "d-latin1.txt", "Caf\u00e9\n".encode("latin-1"))
    write(project, "e-empty.txt", "")
    lines = error_of(project).splitlines()
    assert [line.split(":")[0].rsplit("/", 1)[-1] for line in lines] == [
        "b-untitled.md", "c-cyber.md", "c-cyber.md", "d-latin1.txt", "e-empty.txt",
    ]


def test_error_path_is_as_given_outside_the_project(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / DAY.isoformat()).mkdir()
    (elsewhere / DAY.isoformat() / "x.md").write_text("---\n---\n", encoding="utf-8")
    with pytest.raises(ArticleError, match=rf"^{elsewhere}/2026-11-26/x\.md: field 'title'"):
        read_day(elsewhere, DAY, project)


def test_title_with_encoded_word_is_rejected(project):
    write(project, "hdr.md", '---\ntitle: "=?utf-8?q?Bcc:_x?="\n---\nBody.\n')
    assert "field 'title'" in error_of(project)


# --- hostile bodies ---------------------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    '<p onclick="alert(1)">click</p>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<img src="data:image/png;base64,AAAA">',
    '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
    '<iframe src="https://evil.example/"></iframe>',
    "<style>body{display:none}</style>",
    '<form action="https://evil.example/"><input name="p"></form>',
    '<svg onload="alert(1)"><circle/></svg>',
]


class _Tags(HTMLParser):
    """Collects the tags and attributes a browser would see."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, name, value or "") for name, value in attrs)


def assert_harmless(out: str) -> None:
    parsed = _Tags()
    parsed.feed(out)
    parsed.close()
    assert set(parsed.tags) <= ALLOWED_TAGS, parsed.tags
    for tag, name, value in parsed.attrs:
        assert not name.startswith("on"), (tag, name)
        if name == "href":
            assert value.split(":", 1)[0].strip().lower() in URL_SCHEMES, value
        assert "javascript:" not in value.lower() and "data:" not in value.lower()
    assert "<script" not in out.lower() and "<iframe" not in out.lower() and "<style" not in out.lower()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_sanitize_removes_hostile_markup(hostile):
    out = sanitize(f"<p>before</p>{hostile}<p>after</p>")
    assert_harmless(out)
    assert "<p>before</p>" in out and "<p>after</p>" in out
    assert "alert(1)" not in out


def test_sanitize_keeps_the_allowed_markup():
    kept = (
        '<p><strong>a</strong> <em>b</em> <a href="https://example.org/" title="t" rel="noopener">c</a> '
        '<a href="mailto:ed@example.org" rel="noopener">d</a><sup>1</sup></p>'
        '<table><tbody><tr><td colspan="2">x</td></tr></tbody></table>'
    )
    assert sanitize(kept) == kept


def test_sanitize_drops_script_and_style_content_entirely():
    assert sanitize("<p>a</p><script>steal()</script><style>p{}</style>") == "<p>a</p>"


def test_sanitize_drops_relative_and_fragment_links():
    out = sanitize('<a href="/admin">x</a><a href="#top">y</a>')
    assert "href" not in out


def test_hostile_html_in_a_markdown_file_is_shown_as_text(project):
    write(project, "hostile.md", "---\ntitle: T\n---\n" + "\n\n".join(HOSTILE) + "\n\n[x](javascript:alert(1))\n")
    (article,) = read(project).articles
    assert_harmless(article.body_html)
    assert "&lt;script&gt;" in article.body_html  # escaped, visible to the editor, inert


def test_hostile_html_in_a_text_file_is_escaped(project):
    write(project, "hostile.txt", "Headline\n\n" + "\n\n".join(HOSTILE) + "\n")
    (article,) = read(project).articles
    assert_harmless(article.body_html)
    assert article.body_html.count("<p>") == len(HOSTILE)


_fragments = st.sampled_from(HOSTILE + [
    "<", ">", '"', "'", "=", " on", "onerror=", "javascript:", "java\nscript:", "&#106;avascript:",
    "<a href=", "<p ", "<img src=x ", "[link](", ")", "](javascript:x)", "`", "<!--", "-->",
    "<scr", "ipt>", "\n\n", "**", "data:",
])
_bodies = st.lists(st.one_of(st.text(max_size=20), _fragments), max_size=30).map("".join)


@hsettings(max_examples=300, deadline=None)
@given(_bodies)
def test_no_body_can_smuggle_script_handlers_or_javascript_links(body):
    for out in (sanitize(body), render_markdown(body), render_text(body)):
        assert_harmless(out)


# --- the real sample days ------------------------------------------------------------------------------

def test_every_sample_day_reads_without_errors(sample_project):
    settings = load_settings(sample_project)
    days = article_days(settings.articles_dir)
    assert days, "the sample project has no article days"
    for day in days:
        content = read_day(settings.articles_dir, day, settings)
        assert content.articles, day
        for article in content.articles:
            assert article.title and article.body_html
            assert_harmless(article.body_html)


def test_yaml_alias_bomb_gives_a_short_error_quickly(project):
    lines = ["---", "title: T", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines += ["sources: *a8", "---", "Body."]
    write(project, "bomb.md", "\n".join(lines) + "\n")
    message = error_of(project)
    assert "field 'sources'" in message and "unknown front-matter key 'a8'" in message
    assert len(message) < 2000


def test_a_plain_http_link_is_refused_with_its_line_and_rule_together_with_other_problems(project):
    write(project, "linky.md", """\
        ---
        title: Talks
        ---
        The talks resumed.

        See [the report](http://example.org/report) and <mailto:desk@example.org>.
        """)
    write(project, "note-less.md", "---\ntitle: [unclosed\n---\n")
    with pytest.raises(ArticleError) as caught:
        read(project)
    by_path = {f.path: f for f in caught.value.findings}
    link = by_path["articles/2026-11-26/linky.md"]
    assert (link.rule, link.line) == (Rule.HTTPS_LINKS, 6)
    assert link.message.startswith("link 'http://example.org/report' is not https:// or mailto:")
    assert by_path["articles/2026-11-26/note-less.md"].rule is Rule.ARTICLE
    assert str(caught.value).splitlines()[0].startswith("articles/2026-11-26/linky.md:6: link 'http://")


def test_errors_carry_one_finding_per_problem_in_the_order_of_their_text(project):
    write(project, "a.md", "---\ntitle: A\nsection: Cyber\ncolour: red\n---\nBody.\n")
    with pytest.raises(ArticleError) as caught:
        read(project)
    err = caught.value
    assert [str(f) for f in err.findings] == str(err).splitlines()
    assert len(err.findings) == 2 and all(f.severity == "error" for f in err.findings)


def test_an_article_over_the_size_limit_is_refused_unparsed_naming_the_file(project):
    from newsletter.readers import MAX_ARTICLE_BYTES

    body = "---\ntitle: [unclosed\n---\n" + "A huge paste. " * (MAX_ARTICLE_BYTES // 14 + 1)
    write(project, "huge.md", body)
    write(project, "fine.md", GOOD)
    message = error_of(project)
    # one problem, about the size: the broken front matter was never parsed
    assert message == (f"articles/{DAY}/huge.md: is over {MAX_ARTICLE_BYTES:,} bytes, the most an article "
                       "file may hold; an email is clipped at about 100 KB anyway (is this the right file?)")
