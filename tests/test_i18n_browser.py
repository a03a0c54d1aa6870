"""Right to left, as headless Chromium shows it: an Arabic issue, the archive's front page and a page
of `newsletter serve`, at a phone's and a desktop's width: text starts at the right edge, the
layout's boxes mirror, nothing overflows sideways."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from newsletter import archive, messages
from newsletter.browser import Browser, find_chromium
from newsletter.pipeline import prepare_issue
from newsletter.renderer import make_environment
from newsletter.settings import load_settings

pytestmark = pytest.mark.slow  # a real Chromium, and the Nu HTML validator

DAY = date(2026, 11, 26)
ARTICLE = """\
---
title: وزراء الخارجية يتفقون على إطار جديد لمراقبة المختبرات
section: أخبار
summary: اتفاق أولي على تفتيش مستقل للمختبرات في ثماني دول.
url: https://example.org/labs
---
اتفق وزراء الخارجية في اجتماعهم الأخير على إطار جديد لمراقبة المختبرات البيولوجية، يشمل
تفتيشًا مستقلًا كل ستة أشهر ونشر النتائج للعموم. وقال المتحدث باسم الاجتماع إن الإطار يبدأ العمل به
في الربع الأول من العام المقبل.

- تفتيش مستقل كل ستة أشهر
- نشر تقارير التفتيش كاملة

> «هذه خطوة أولى، وليست الأخيرة»، قال أحد المفاوضين.
"""

# For each block with text: how far the right end of its first line is from the right edge of its content box
# (0 when the text starts at the right, as right-to-left text does), its direction and alignment.
_BLOCKS = "main p, main h1, main h2, main li, main label, [role=article] p, [role=article] h1, [role=article] h2, " \
          "[role=article] li"
_FIRST_LINES_JS = """(() => Array.from(document.querySelectorAll('%s')).filter(e =>
    e.textContent.trim() && e.getClientRects().length).map(e => {
  const s = getComputedStyle(e), box = e.getBoundingClientRect(), range = document.createRange();
  range.selectNodeContents(e);
  const rects = Array.from(range.getClientRects()), top = rects[0].top;  // a line has a box per bidi run
  const lineEnd = Math.max(...rects.filter(r => Math.abs(r.top - top) < 2).map(r => r.right));
  const right = box.right - parseFloat(s.paddingRight) - parseFloat(s.borderRightWidth);
  return [e.tagName, e.textContent.trim().slice(0, 30), right - lineEnd, s.direction, s.textAlign];
}))()""" % _BLOCKS


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, str]:
    """An Arabic project made by `newsletter init --language ar`: its issue, the front page, a served page."""
    from typer.testing import CliRunner

    from newsletter.cli import app

    folder = tmp_path_factory.mktemp("rtl") / "project"
    result = CliRunner().invoke(app, ["init", str(folder), "--language", "ar", "--name", "النشرة اليومية"])
    assert result.exit_code == 0, result.output
    day_dir = folder / "articles" / DAY.isoformat()
    day_dir.mkdir(parents=True)
    welcome = next((folder / "articles").glob("*/welcome.md"))
    (day_dir / "welcome.md").write_text(welcome.read_text(encoding="utf-8"), encoding="utf-8")
    (day_dir / "labs.md").write_text(textwrap.dedent(ARTICLE), encoding="utf-8")
    settings = load_settings(folder)
    rendered = prepare_issue(settings, DAY).rendered
    assert rendered is not None
    env = make_environment(settings)
    return {
        "issue": messages.public_html(rendered, settings),
        "front page": archive.index_page(env, settings, []),
        "served page": archive.render_page(env, "page.html.j2", settings, "../", "تم إلغاء اشتراكك",
                                           heading="تم إلغاء اشتراكك", paragraphs=("لن تُرسَل بعد الآن رسائل إلى",),
                                           address="reader@example.org", form=None, error=""),
        "preferences page": archive.render_page(
            env, "preferences.html.j2", settings, "../", "تفضيلاتك", address="reader@example.org", action="TOKEN",
            unsubscribe_action="../u/TOKEN", notice="تم الحفظ.", error="",
            sections=[{"name": name, "checked": True} for name in settings.issue.sections], frequency="daily"),
    }


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    with Browser(timeout=30) as running:
        yield running


@pytest.mark.parametrize("width", [375, 800])
def test_right_to_left_text_starts_at_the_right_edge_and_nothing_overflows(browser, pages, width):
    for name, html in pages.items():
        browser.load(html, width=width)
        assert browser.evaluate("document.documentElement.dir") == "rtl", name
        overflow = browser.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], (name, width, overflow)
        lines = [line for line in browser.evaluate(_FIRST_LINES_JS) if line[4] != "center"]
        assert len(lines) >= 3, (name, lines)
        # within 4 px: a checkbox keeps its own default margin of 3 px at the start of its label
        astray = [line for line in lines if line[3] != "rtl" or abs(line[2]) > 4]
        assert not astray, (name, width, astray[:3])


def test_the_email_layout_mirrors(browser, pages):
    browser.load(pages["issue"], width=800)
    sides = browser.evaluate("""(() => {
      const s = e => getComputedStyle(document.querySelector(e));
      const view = document.querySelector('td.top, td[class~=top]') || document.querySelector('a').parentElement;
      return {
        quote: [s('blockquote').borderRightWidth, s('blockquote').borderLeftWidth],
        list: [s('ul').paddingRight, s('ul').paddingLeft],
        view: getComputedStyle(view).textAlign,
      };
    })()""")
    assert sides["quote"] == ["3px", "0px"], sides
    assert sides["list"] == ["24px", "0px"], sides
    assert sides["view"] == "left", sides  # "View in browser" sits at the end of the line: the left


def test_the_issue_in_arabic_reads_arabic_chrome(pages):
    html = pages["issue"]
    assert "في هذا العدد" in html and "إلغاء الاشتراك" in html and "الخميس، 26 نوفمبر 2026" in html
    assert "&larr;" in html or "←" in html  # "read more" arrows point the way the text runs


def test_the_right_to_left_pages_pass_the_nu_html_validator_but_for_outlook_markup(pages, tmp_path):
    from test_renderer import NU_ALLOWED, nu_errors, vnu_jar

    jar = vnu_jar()
    files = []
    for name, html in pages.items():
        files.append(tmp_path / (name.replace(" ", "-") + ".html"))
        files[-1].write_text(html, encoding="utf-8")
    errors = nu_errors(jar, files)
    unexpected = [f"{Path(e.get('url', '')).name}:{e.get('lastLine')}: {e['message']}" for e in errors
                  if not any(rule.fullmatch(e["message"]) for rule in NU_ALLOWED.values())]
    assert unexpected == [], "\n".join(unexpected)
