"""DayContent → Issue: order, number, citations, cross-references, subject and preheader."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from newsletter.builder import build_issue, long_date
from newsletter.errors import BuildError
from newsletter.models import Article, DayContent
from newsletter.readers import article_days, parse_markdown, read_day, render_tokens
from newsletter.settings import load_settings

DAY = date(2026, 11, 26)


def make_settings(root: Path, subject: str = "{short_name} {long_date}: {lead_title}"):
    (root / "newsletter.toml").write_text(textwrap.dedent(f"""\
        [newsletter]
        name = "The Test Security Bulletin"
        short_name = "SSB"
        base_url = "https://ssb.example.org"

        [issue]
        sections = ["Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy"]
        default_section = "Policy"
        subject = "{subject}"
        """), encoding="utf-8")
    return load_settings(root)


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path)


def art(settings, title: str, section: str = "Policy", body: str = "Some body text.", **fields) -> Article:
    slug = fields.pop("slug", title.lower().replace(" ", "-"))
    tokens = parse_markdown(textwrap.dedent(body))
    return Article(
        path=settings.root / "articles" / DAY.isoformat() / f"{slug}.md", slug=slug, title=title,
        section=section, body_html=render_tokens(tokens), tokens=tokens, **fields,
    )


def build(settings, *articles: Article, day: date = DAY, issue_days=None):
    days = [day] if issue_days is None else issue_days
    return build_issue(DayContent(day=day, articles=tuple(articles)), settings, issue_days=days)


# --- order and anchors ---------------------------------------------------------------------------

def test_sections_follow_settings_order_and_articles_priority_then_title(settings):
    issue = build(
        settings,
        art(settings, "zeta policy", "Policy", priority=1),
        art(settings, "Beta nuclear", "Nuclear", priority=5),
        art(settings, "alpha nuclear", "Nuclear", priority=5),
        art(settings, "Urgent nuclear", "Nuclear", priority=1),
        art(settings, "Interceptor", "Missile Defense"),
    )
    assert [s.name for s in issue.sections] == ["Nuclear", "Missile Defense", "Policy"]
    assert [a.article.title for a in issue.sections[0].articles] == [
        "Urgent nuclear", "alpha nuclear", "Beta nuclear",
    ]
    assert [a.article.title for a in issue.articles][-1] == "zeta policy"


def test_empty_sections_are_left_out(settings):
    issue = build(settings, art(settings, "Only one", "Chemical"))
    assert [(s.name, s.anchor) for s in issue.sections] == [("Chemical", "s-chemical")]


def test_anchors_are_unique_within_the_issue(settings):
    issue = build(
        settings,
        art(settings, "One", "Nuclear", slug="talks"),
        art(settings, "Two", "Policy", slug="talks"),
        art(settings, "Three", "Missile Defense", slug="missile-defense"),
    )
    anchors = [a.anchor for a in issue.articles]
    assert anchors == ["a-talks", "a-missile-defense", "a-talks-2"]
    assert "s-missile-defense" in [s.anchor for s in issue.sections]


def test_unknown_section_in_content_is_a_build_error(settings):
    with pytest.raises(BuildError, match=r"^articles/2026-11-26/x\.md: section 'Cyber'"):
        build(settings, art(settings, "X", "Cyber", slug="x"))


# --- number and archive url ------------------------------------------------------------------------

def test_issue_number_counts_earlier_issue_days_and_is_stable_when_later_days_appear(settings):
    earlier = [date(2026, 11, 20), date(2026, 11, 23), date(2026, 11, 25)]
    first = build(settings, art(settings, "A"), issue_days=[*earlier, DAY])
    later = build(settings, art(settings, "A"), issue_days=[*earlier, DAY, date(2026, 11, 27), date(2026, 12, 1)])
    assert first.number == later.number == 4
    assert build(settings, art(settings, "A"), day=date(2026, 11, 20), issue_days=earlier).number == 1


def test_archive_url_is_the_days_folder(settings):
    assert build(settings, art(settings, "A")).archive_url == "https://ssb.example.org/archive/2026/11/26/"


# --- citations ------------------------------------------------------------------------------------------

def test_citations_of_both_shapes_are_collected_after_front_matter_sources(settings):
    body = """\
        Talks stalled (Interfax, June 2). A senator objected
        (Julian Pecquet, The Hill, May 31). Wire copy agreed (Northline Wire, Nov. 20),
        and so did state radio (Radio Veska, November 19). Again (Interfax, June 2).

        Not citations: (see SSB, Nov. 20), (since May 3), (a parenthesis), (Sept 31st).
        """
    issue = build(settings, art(settings, "A", body=body, sources=("The Hill, May 31", "Interfax, June 2")))
    (article,) = issue.articles
    assert article.sources == (
        "The Hill, May 31", "Interfax, June 2", "Julian Pecquet, The Hill, May 31",
        "Northline Wire, Nov. 20", "Radio Veska, November 19",
    )
    assert "(Julian Pecquet, The Hill, May 31)" in article.body_html  # the text stays in the body


def test_citation_split_by_markup_is_still_found(settings):
    issue = build(settings, art(settings, "A", body="Said so (*Radio Veska*, Sept. 4)."))
    assert issue.articles[0].sources == ("Radio Veska, Sept. 4",)


# --- cross-references -------------------------------------------------------------------------------------

def test_cross_reference_becomes_a_link_to_the_archive(settings):
    days = [date(2026, 11, 22), DAY]
    issue = build(settings, art(settings, "A", body="As reported (see SSB, Nov. 22), talks resumed."), issue_days=days)
    (article,) = issue.articles
    assert (
        '(<a href="https://ssb.example.org/archive/2026/11/22/">see SSB, Nov. 22</a>)' in article.body_html
    )
    (ref,) = article.cross_references
    assert (ref.day, ref.exists, ref.text) == (date(2026, 11, 22), True, "see SSB, Nov. 22")
    assert article.sources == ()  # a cross-reference is not a citation
    assert issue.warnings == ()


@pytest.mark.parametrize("written", ["see SSB, Nov 22", "see SSB, November 22", "see SSB, Nov. 22"])
def test_cross_reference_spellings(settings, written):
    issue = build(settings, art(settings, "A", body=f"Earlier ({written})."), issue_days=[date(2026, 11, 22), DAY])
    assert issue.articles[0].cross_references[0].url == "https://ssb.example.org/archive/2026/11/22/"


def test_cross_reference_across_new_year_points_to_previous_year(settings):
    day = date(2027, 1, 2)
    issue = build(
        settings, art(settings, "A", body="Back then (see SSB, Dec. 30)."),
        day=day, issue_days=[date(2026, 12, 30), day],
    )
    (ref,) = issue.articles[0].cross_references
    assert ref.day == date(2026, 12, 30) and ref.exists
    assert 'href="https://ssb.example.org/archive/2026/12/30/"' in issue.articles[0].body_html


def test_cross_reference_to_a_day_without_issue_warns_but_still_links(settings):
    issue = build(settings, art(settings, "Story", body="As noted (see SSB, Nov. 14).", slug="story"))
    (ref,) = issue.articles[0].cross_references
    assert not ref.exists
    assert 'href="https://ssb.example.org/archive/2026/11/14/"' in issue.articles[0].body_html
    assert issue.warnings == (
        "articles/2026-11-26/story.md: cross-reference (see SSB, Nov. 14) points at 2026-11-14, which has no issue",
    )


def test_cross_reference_inside_a_link_or_attribute_is_left_alone(settings):
    body = '[see (see SSB, Nov. 22)](https://example.org/a "(see SSB, Nov. 22)") and `(see SSB, Nov. 22)`'
    issue = build(settings, art(settings, "A", body=body), issue_days=[date(2026, 11, 22), DAY])
    html = issue.articles[0].body_html
    assert "archive" not in html and html.count("(see SSB, Nov. 22)") == 3


# --- subject ----------------------------------------------------------------------------------------------

def test_subject_fills_every_key(tmp_path):
    settings = make_settings(tmp_path, "{name} | {short_name} | {long_date} | {date} | No. {number:03d} | {lead_title}")
    issue = build(settings, art(settings, "Talks\tOpen\nToday", "Nuclear"), issue_days=[date(2026, 11, 1), DAY])
    assert issue.subject == (
        "The Test Security Bulletin | SSB | Thursday, November 26, 2026 | 2026-11-26 | No. 002 | Talks Open Today"
    )


def test_subject_unknown_key_names_the_setting_and_lists_allowed_keys(tmp_path):
    settings = make_settings(tmp_path, "{name} {headline}")
    with pytest.raises(BuildError) as caught:
        build(settings, art(settings, "A"))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'newsletter.toml'}: issue.subject uses unknown key {{headline}}")
    assert "{name}, {short_name}, {long_date}, {date}, {number}, {lead_title}" in message


def test_subject_never_holds_control_characters(settings):
    issue = build(settings, art(settings, "Line\r\nBreak\x07Bell\u2028Sep", "Nuclear"))
    assert issue.subject == "SSB Thursday, November 26, 2026: Line Break Bell Sep"


def test_long_date_is_english_whatever_the_locale():
    assert long_date(date(2026, 11, 26)) == "Thursday, November 26, 2026"
    assert long_date(date(2027, 1, 3)) == "Sunday, January 3, 2027"


# --- preheader ---------------------------------------------------------------------------------------------

def test_preheader_is_the_lead_articles_summary(settings):
    summary = "Veska and the Contact Group agree on an outline that caps enrichment."
    issue = build(
        settings,
        art(settings, "Policy lead", "Policy", priority=1, summary=summary),
        art(settings, "Nuclear second", "Nuclear", priority=2, summary="Not this one, it has a higher priority."),
    )
    assert issue.preheader == summary


def test_preheader_falls_back_to_first_sentence_without_citations(settings):
    body = """\
        Drelland's minister, Dr. Sune Arvid, on Nov. 21 ordered a review of every lab in the country
        (Drelland Broadcasting, Nov. 21). The review starts Monday.
        """
    issue = build(settings, art(settings, "Review Ordered", body=body))
    assert issue.preheader == (
        "Drelland's minister, Dr. Sune Arvid, on Nov. 21 ordered a review of every lab in the country."
    )


def test_long_preheader_is_cut_on_a_word_boundary_with_an_ellipsis(settings):
    summary = " ".join(["interceptor"] * 30)
    issue = build(settings, art(settings, "A", summary=summary))
    assert len(issue.preheader) <= 140 and issue.preheader.endswith("interceptor…")


def test_short_preheader_is_extended_with_the_next_titles(settings):
    issue = build(
        settings,
        art(settings, "Lead", "Nuclear", priority=1, summary="Talks stall."),
        art(settings, "Second Story Here", "Chemical"),
        art(settings, "Third Story Here", "Policy"),
        art(settings, "Fourth Story", "Policy"),
    )
    # Policy orders "Fourth Story" before "Third Story Here"; 40 characters are reached there.
    assert issue.preheader == "Talks stall. · Second Story Here · Fourth Story"


def test_preheader_is_never_the_subject(tmp_path):
    settings = make_settings(tmp_path, "{lead_title}")
    summary = "A summary that is exactly as long as the title of the lead."
    issue = build(settings, art(settings, summary, summary=summary))
    assert issue.preheader != issue.subject and 40 <= len(issue.preheader) <= 140


@hsettings(max_examples=150, deadline=None)
@given(
    summaries=st.lists(st.text(max_size=300), min_size=1, max_size=4),
    bodies=st.lists(st.text(max_size=400), min_size=1, max_size=4),
)
def test_preheader_always_within_bounds_and_one_line(tmp_path_factory, summaries, bodies):
    settings = make_settings(tmp_path_factory.mktemp("p"))
    articles = [
        art(settings, f"Story number {i}", body=body, summary=summary, slug=f"s{i}")
        for i, (summary, body) in enumerate(zip(summaries, bodies))
    ]
    issue = build(settings, *articles)
    assert 40 <= len(issue.preheader) <= 140
    assert issue.preheader == " ".join(issue.preheader.split())
    assert issue.preheader != issue.subject


# --- warnings ---------------------------------------------------------------------------------------------------

def test_article_with_empty_body_is_a_warning(settings):
    issue = build(settings, art(settings, "Headline Only", body="", slug="headline-only"), art(settings, "B"))
    assert issue.warnings == ("articles/2026-11-26/headline-only.md: the article has no body text",)


# --- from files to issue: the real sample days ------------------------------------------------------------------

def test_a_day_written_as_files_builds(settings):
    folder = settings.articles_dir / DAY.isoformat()
    folder.mkdir(parents=True)
    (folder / "talks.md").write_text(textwrap.dedent("""\
        ---
        title: Talks Resume in Port Amsel
        section: Nuclear
        sources: ["Meridian Post, Nov. 25"]
        ---
        Talks resumed (Radio Veska, Nov. 25), a week after they stalled (see SSB, Nov. 19).
        """), encoding="utf-8")
    (folder / "rules.txt").write_text("Export Rules Tightened\n\nThe ministry acted (Granite Review, Nov. 25).\n",
                                      encoding="utf-8")
    issue = build_issue(read_day(settings.articles_dir, DAY, settings), settings,
                        issue_days=article_days(settings.articles_dir))
    assert [a.article.title for a in issue.articles] == ["Talks Resume in Port Amsel", "Export Rules Tightened"]
    assert issue.articles[0].sources == ("Meridian Post, Nov. 25", "Radio Veska, Nov. 25")
    assert issue.articles[1].sources == ("Granite Review, Nov. 25",)
    assert issue.number == 1
    assert issue.warnings == (
        "articles/2026-11-26/talks.md: cross-reference (see SSB, Nov. 19) points at 2026-11-19, which has no issue",
    )


def test_every_sample_day_builds_without_warnings(sample_project):
    settings = load_settings(sample_project)
    days = article_days(settings.articles_dir)
    assert days, "the sample project has no article days"
    for number, day in enumerate(days, 1):
        issue = build_issue(read_day(settings.articles_dir, day, settings), settings, issue_days=days)
        assert issue.number == number
        assert issue.articles and issue.subject
        assert 40 <= len(issue.preheader) <= 140 and issue.preheader != issue.subject
        assert issue.warnings == (), issue.warnings
