"""The issue as headless Chromium shows it: phone and desktop widths, no <style>, dark mode, screenshots.

Holds the 375 px check first written in tests/test_renderer.py (moved here, measured over the
DevTools protocol instead of iframes and --dump-dom). Every page loads offline: remote images fail
at once, in both runs of a comparison alike.
"""

from __future__ import annotations

import shutil
import zlib
from datetime import date
from pathlib import Path

import pytest

from newsletter import messages
from newsletter.browser import (
    Browser,
    boxes,
    contrast_ratio,
    find_chromium,
    png_size,
    remove_style_blocks,
    text_colours,
)
from newsletter.cli import app
from newsletter.pipeline import prepare_issue
from newsletter.renderer import render_notice
from newsletter.settings import load_settings

pytestmark = pytest.mark.slow  # a real Chromium: about 15 s for the module

if find_chromium() is None:
    pytest.skip("chromium not installed: apt-get install chromium", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DAYS = [date(2026, 11, d) for d in range(21, 27)]
CONTENT = "h1, h2, h3, h4, p, li, img, blockquote, pre"
LIGHT_BACKGROUND = (0xED, 0xEB, 0xE5)  # email.css body


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """The public HTML of every sample day, and the "no issue today" notice."""
    settings = load_settings(REPO)
    found = {}
    for day in SAMPLE_DAYS:
        rendered = prepare_issue(settings, day).rendered
        found[day.isoformat()] = messages.public_html(rendered, settings)
    found["notice"] = messages.public_html(render_notice(date(2026, 11, 27), settings), settings)
    return found


@pytest.fixture(scope="module")
def browser():
    with Browser(timeout=30) as running:
        yield running


def test_no_horizontal_scrolling_at_375px(browser, pages):
    widths = {}
    for name, html in pages.items():
        browser.load(html, width=375)
        widths[name] = browser.evaluate("document.documentElement.scrollWidth")
    assert all(width <= 375 for width in widths.values()), widths


def test_content_column_is_at_most_600px_at_800px(browser, pages):
    for name, html in pages.items():
        browser.load(html, width=800)
        shown = [b for b in boxes(browser, CONTENT) if b[3] > 0]
        left = min(b[1] for b in shown)
        right = max(b[1] + b[3] for b in shown)
        assert right - left <= 600, (name, left, right)
        assert abs((left + right) / 2 - 400) <= 1, (name, left, right)  # centred


def test_boxes_stay_where_they_are_without_style_blocks(browser, pages):
    """Gmail's apps for other accounts drop <style>: the inlined styles must hold the layout alone."""
    for name, html in pages.items():
        browser.load(html, width=800)
        styled = boxes(browser)
        assert remove_style_blocks(browser) >= 1
        bare = boxes(browser)
        assert [b[0] for b in bare] == [b[0] for b in styled]
        moved = [(s, b) for s, b in zip(styled, bare) if any(abs(x - y) > 0.5 for x, y in zip(s[1:], b[1:]))]
        assert not moved, (name, moved[:3])


def test_dark_mode_changes_the_background_and_keeps_text_readable(browser, pages):
    for name, html in pages.items():
        for dark in (False, True):
            browser.load(html, width=600, dark=dark)
            background = browser.evaluate("getComputedStyle(document.body).backgroundColor")
            assert (background == "rgb(237, 235, 229)") != dark, (name, dark, background)
            colours = text_colours(browser)
            assert len(colours) > 10
            worst = min(colours, key=lambda c: contrast_ratio(c[0], c[1]))
            assert contrast_ratio(worst[0], worst[1]) >= 4.5, (name, dark, worst)


def test_dark_mode_rules_in_the_style_block_are_what_changes_it(browser, pages):
    browser.load(pages["2026-11-25"], width=600, dark=True)
    remove_style_blocks(browser)
    # Without the kept block a client that ignores <style> shows the light design, still readable.
    assert browser.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(237, 235, 229)"


# --- preview --screenshot -----------------------------------------------------------------------

def top_left_pixel(png: bytes) -> tuple[int, int, int]:
    """Return the first pixel of a PNG: the first row's first pixel is stored unfiltered in every filter."""
    chunks, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        if kind == b"IDAT":
            chunks.append(data)
        pos += 12 + length
    raw = zlib.decompressobj().decompress(b"".join(chunks), 16)
    return tuple(raw[1:4])  # after the row's filter byte: R, G, B


@pytest.mark.parametrize("width, dark", [(375, False), (800, True)])
def test_preview_screenshot_writes_a_png_of_the_requested_width(runner, sample_project, tmp_path, width, dark):
    target = tmp_path / "shots" / "issue.png"
    args = ["--project", str(sample_project), "preview", "--date", "2026-11-25", "--screenshot", str(target),
            "--width", str(width)] + (["--dark"] if dark else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    png = target.read_bytes()
    shot_width, shot_height = png_size(png)
    assert shot_width == width and shot_height > 2000
    assert f"({width}×{shot_height} px, {'dark' if dark else 'light'} mode)" in result.output
    pixel = top_left_pixel(png)
    assert (pixel == LIGHT_BACKGROUND) != dark, pixel
    if dark:
        assert sum(pixel) < 100, pixel


def test_preview_screenshot_refuses_other_widths(runner, sample_project, tmp_path):
    result = runner.invoke(app, ["--project", str(sample_project), "preview", "--date", "2026-11-25",
                                 "--screenshot", str(tmp_path / "x.png"), "--width", "1024"])
    assert result.exit_code == 2
    shown = " ".join(result.output.replace("│", " ").split())
    assert "Invalid value for '--width'" in shown and "'1024' is not one of '375', '600', '800'" in shown
    assert not (tmp_path / "x.png").exists()


def test_preview_screenshot_without_chromium_says_how_to_install_it(runner, sample_project, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = runner.invoke(app, ["--project", str(sample_project), "preview", "--date", "2026-11-25",
                                 "--screenshot", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "Error: chromium not found on PATH: install it (Debian: apt-get install chromium)" in result.output


def test_the_browser_process_is_gone_after_use(pages):
    with Browser() as running:
        pid = running._proc.pid
        running.load(pages["notice"], width=375)
    assert running._proc is None
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert shutil.which("chromium")  # still there for the next test
