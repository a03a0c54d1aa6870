"""rules.py and findings.py: the one https rule, rule ids, and errors that carry their findings."""

from __future__ import annotations

from hypothesis import given, strategies as st

from newsletter.errors import ArticleError, BuildError
from newsletter.findings import Finding, Severity, error, warning
from newsletter.rules import Rule, https_only

_REST = st.from_regex(r"[a-z0-9./?=_-]{1,40}", fullmatch=True)


@given(scheme=st.sampled_from(["https://", "HTTPS://", "Https://"]), rest=_REST)
def test_https_passes_whatever_the_case_of_its_scheme(scheme, rest):
    assert https_only(scheme + rest) and https_only(scheme + rest, mailto=True)


@given(scheme=st.sampled_from(["http://", "javascript:", "data:", "ftp://", "//", "", "mailto:"]), rest=_REST)
def test_nothing_else_passes_but_mailto_where_links_allow_it(scheme, rest):
    assert not https_only(scheme + rest)
    assert https_only(scheme + rest, mailto=True) == (scheme == "mailto:")


def test_every_rule_id_is_unique_and_names_its_email_md_rule():
    assert len({str(r) for r in Rule}) == len(Rule)
    assert Rule("https-links") is Rule.HTTPS_LINKS and Rule.HTTPS_LINKS.number == 12
    assert Rule.GMAIL_CLIP.number == 6 and Rule.ARTICLE.number is None


_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)


@given(found=st.lists(st.builds(error, st.sampled_from(list(Rule)), _TEXT, st.sampled_from(["", "a.md", "t/x.j2"]),
                                st.none() | st.integers(1, 999)), min_size=1, max_size=5))
def test_an_error_without_text_says_its_findings_one_a_line(found):
    err = ArticleError(findings=found)
    assert err.findings == tuple(found)
    assert str(err).split("\n") == [str(f) for f in found]


def test_a_finding_reads_path_line_message_and_serializes_its_rule():
    finding = warning(Rule.MISSING_ISSUE, "cross-reference (see SSB, Nov. 14) has no issue", "articles/x.md", 3)
    assert str(finding) == "articles/x.md:3: cross-reference (see SSB, Nov. 14) has no issue"
    assert finding.to_dict() == {
        "severity": "warning", "rule": None, "rule_id": "missing-issue", "path": "articles/x.md", "line": 3,
        "where": "articles/x.md:3", "message": "cross-reference (see SSB, Nov. 14) has no issue",
    }
    assert str(Finding(Severity.ERROR, Rule.BUILD, message="no file")) == "no file"


def test_an_error_with_its_own_text_keeps_it_and_its_findings():
    err = BuildError.about(Rule.TEMPLATE, "unexpected '}'", "templates/issue.html.j2", 4)
    assert str(err) == "templates/issue.html.j2:4: unexpected '}'"
    assert BuildError("said otherwise", findings=err.findings).findings == err.findings
