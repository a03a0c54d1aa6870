"""End to end, as a reader: `newsletter serve` in its own process, headless Chromium clicking through
the archive, a real email's unsubscribe link and its preferences page, and curl doing what Gmail's
one-click does."""

from __future__ import annotations

import email
import email.policy
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter.browser import Browser, find_chromium
from sent_project import make_sent_project

BASE = "https://ssb.newsletter.example.org"
CHROMIUM = find_chromium()
CURL = shutil.which("curl")


def newsletter(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a process of its own, as a user would."""
    return subprocess.run([sys.executable, "-m", "newsletter", "--project", str(project), *args],
                          capture_output=True, text=True, timeout=120, **kwargs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A project where two issues were sent and archived, served by `newsletter serve` on a free port."""
    project = make_sent_project(tmp_path_factory.mktemp("browser") / "project",
                                days=("2026-11-25", "2026-11-26"))
    built = newsletter(project, "archive")
    assert built.returncode == 0, built.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(project), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    output = b""
    deadline = time.monotonic() + 30
    try:
        # uvicorn says when it listens; read its output until then (bounded, no fixed sleep)
        while b"Uvicorn running on" not in output:
            left = deadline - time.monotonic()
            assert left > 0 and process.poll() is None, output.decode()
            ready, _, _ = select.select([process.stdout], [], [], left)
            if ready:
                output += os.read(process.stdout.fileno(), 65536)
        yield project, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def messages_of(project: Path, day: str) -> list[tuple[Path, email.message.EmailMessage]]:
    folder = project / "outbox" / day / "mail" / "new"
    return [(p, email.message_from_bytes(p.read_bytes(), policy=email.policy.default))
            for p in sorted(folder.iterdir())]


def status_from_cli(project: Path, address: str) -> str:
    shown = newsletter(project, "subscribers", "show", address)
    assert shown.returncode == 0, shown.stderr
    return re.search(r"^status:\s+(\S+)$", shown.stdout, re.MULTILINE)[1]


class Reader:
    """A person in front of Chromium: goes to addresses, clicks what they see, takes pictures."""

    def __init__(self, browser: Browser, shots: Path) -> None:
        self.browser = browser
        self.shots = shots
        self.count = 0

    def size(self, width: int, height: int = 900) -> None:
        self.width = width
        self.browser.call("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})

    def go(self, url: str) -> None:
        self.browser.call("Page.navigate", {"url": url})
        assert self.browser.wait_for("Page.loadEventFired", timeout=20) is not None, url

    def click(self, selector: str) -> None:
        """Click the first element matching SELECTOR with the mouse, and wait for the page it opens."""
        box = self.browser.evaluate(f"""(() => {{
            const e = document.querySelector({selector!r});
            if (!e) return null;
            e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }})()""")
        assert box is not None, f"nothing matches {selector}"
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.browser.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                           "button": "left", "clickCount": 1})
        assert self.browser.wait_for("Page.loadEventFired", timeout=20) is not None, selector

    def toggle(self, selector: str) -> None:
        """Click the element matching SELECTOR with the mouse where clicking opens no page (a checkbox)."""
        box = self.browser.evaluate(f"""(() => {{
            const e = document.querySelector({selector!r});
            e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }})()""")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.browser.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                           "button": "left", "clickCount": 1})

    def checked(self, name: str) -> list[str]:
        return self.browser.evaluate(
            f"[...document.querySelectorAll('input[name={name}]:checked')].map(e => e.value)")

    def text(self, selector: str) -> str:
        return self.browser.evaluate(f"(document.querySelector({selector!r}) || {{}}).innerText || ''")

    def path(self) -> str:
        return self.browser.evaluate("location.pathname")

    def picture(self, name: str) -> Path:
        self.count += 1
        target = self.shots / f"{self.count}-{name}.png"
        target.write_bytes(self.browser.screenshot())
        self.size(self.width)  # the screenshot stretched the window to the page's height
        assert target.stat().st_size > 1000
        return target


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_reader_browses_the_archive_and_unsubscribes_with_one_button(server, tmp_path):
    project, root = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with Browser(CHROMIUM, timeout=30, offline=False) as browser:
        # the test server is plain http on 127.0.0.1; nothing on https (the articles' images) is fetched
        browser.call("Network.enable")
        browser.call("Network.setBlockedURLs", {"urls": ["https://*"]})
        reader = Reader(browser, shots)
        reader.size(375)
        reader.go(root + "/")
        assert reader.text("h1") == "The Sample Security Bulletin"
        assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
        reader.picture("index-375px")

        reader.size(800)
        reader.click('a.issue-link[href="archive/2026/11/26/"]')
        assert reader.path() == "/archive/2026/11/26/"
        assert "Negotiators Agree Outline of Veska Enrichment Framework" in reader.text("main")
        reader.picture("issue-2026-11-26")

        reader.click('main a[href$="archive/2026/11/25/"]')  # a cross-reference, (see SSB, Nov. 25)
        assert reader.path() == "/archive/2026/11/25/"
        assert "Wednesday, November 25, 2026" in reader.text("main")
        reader.picture("cross-reference-2026-11-25")

        path, message = messages_of(project, "2026-11-26")[0]
        address = message["To"].addresses[0].addr_spec
        html = message.get_body(("html",)).get_content()
        link = re.search(r'href="(' + re.escape(BASE) + r'/u/[^"]+)"', html)[1]
        assert status_from_cli(project, address) == "active"
        reader.go(link.replace(BASE, root))
        assert reader.text(".address") == address
        reader.picture("unsubscribe-page")
        assert status_from_cli(project, address) == "active"  # opening the link changed nothing

        reader.click("main form button")
        assert reader.text("h1") == "You are unsubscribed"
        reader.picture("unsubscribed")
    assert status_from_cli(project, address) == "unsubscribed"
    assert len(list(shots.glob("*.png"))) == 5
    print(f"screenshots in {shots}")


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_curl_one_click_post_to_a_real_list_unsubscribe_header_unsubscribes(server):
    project, root = server
    path, message = messages_of(project, "2026-11-25")[-1]
    raw = path.read_bytes()
    header = re.search(rb"^List-Unsubscribe: (.*)\r\n", raw, re.MULTILINE)[1].decode("ascii")
    assert re.search(rb"^List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", raw, re.MULTILINE)
    url = re.search(r"<(https://[^>]+)>", header)[1]
    address = message["To"].addresses[0].addr_spec
    assert status_from_cli(project, address) == "active"
    done = subprocess.run([CURL, "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                           "-X", "POST", "-d", "List-Unsubscribe=One-Click", url.replace(BASE, root)],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout == "200 ", done.stdout  # 200, and no redirect
    assert status_from_cli(project, address) == "unsubscribed"
    forged = subprocess.run([CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                             "-d", "List-Unsubscribe=One-Click", root + "/u/1." + "0" * 32],
                            capture_output=True, text=True, timeout=30)
    assert forged.stdout == "400"


def article_titles(day: str) -> dict[str, str]:
    """Each article title of the sample DAY, with its section (from the files' front matter)."""
    found = {}
    for path in (Path(__file__).resolve().parent.parent / "articles" / day).glob("[!_]*.md"):
        head = path.read_text(encoding="utf-8").split("---")[1]
        fields = dict(line.split(": ", 1) for line in head.strip().splitlines() if ": " in line)
        found[fields["title"]] = fields["section"]
    return found


def message_to(project: Path, day: str, address: str) -> email.message.EmailMessage:
    [message] = [m for _, m in messages_of(project, day) if m["To"].addresses[0].addr_spec == address]
    return message


def choose_in_chromium(project: Path, root: str, address: str, shots: Path) -> None:
    """As ADDRESS: open the preferences link of their latest email in Chromium (no script), keep only
    Nuclear and Chemical with the mouse, and save."""
    html = message_to(project, "2026-11-26", address).get_body(("html",)).get_content()
    text = message_to(project, "2026-11-26", address).get_body(("plain",)).get_content()
    link = re.search(r'href="(' + re.escape(BASE) + r'/p/[^"]+)"', html)[1]
    assert link + "\n" in text.replace("\r\n", "\n")  # the text part links the same page
    shots.mkdir()
    with Browser(CHROMIUM, timeout=30, offline=False) as browser:
        browser.call("Network.enable")
        browser.call("Network.setBlockedURLs", {"urls": ["https://*"]})
        browser.call("Emulation.setScriptExecutionDisabled", {"value": True})  # the page works without it
        reader = Reader(browser, shots)
        reader.size(375)
        reader.go(link.replace(BASE, root))
        assert reader.text("h1") == "Your preferences" and reader.text(".address") == address
        everything = ["Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy"]
        assert reader.checked("section") == everything and reader.checked("frequency") == ["daily"]
        assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        reader.picture("preferences-375px")
        assert "receives: sections all; daily" in newsletter(project, "subscribers", "show", address).stdout

        for section in ("Biological", "Missile Defense", "Terrorism", "Policy"):
            reader.toggle(f'input[name=section][value="{section}"]')
        assert reader.checked("section") == ["Nuclear", "Chemical"]
        reader.click("form.preferences button")
        assert "From the next issue, you receive every issue with Nuclear, Chemical." in reader.text(".notice")
        assert reader.checked("section") == ["Nuclear", "Chemical"]
        reader.picture("preferences-saved")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_reader_picks_sections_on_the_page_their_email_links_to_and_they_are_recorded(server, tmp_path):
    project, root = server
    address = "p.lund@example.net"  # a daily reader of every section in the sample
    choose_in_chromium(project, root, address, tmp_path / "screenshots")
    shown = newsletter(project, "subscribers", "show", address).stdout
    assert "receives: sections Chemical, Nuclear; daily (chosen 20" in shown
    assert re.search(r"preferences\s+web\s+sections: Chemical, Nuclear; frequency: daily", shown)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_after_picking_sections_in_chromium_the_next_issue_has_only_those(server, tmp_path):
    project, root = server
    address = "ana.solberg@example.org"  # another daily reader of every section
    choose_in_chromium(project, root, address, tmp_path / "screenshots")
    sent = newsletter(project, "send", "--date", "2026-11-24")
    assert sent.returncode == 0, sent.stderr
    titles = article_titles("2026-11-24")
    # a reader of every section (one the earlier tests did not unsubscribe) gets every article
    every = {"tomas.brecht@example.com", "mara.ilves@example.org", "zoe.akesson@example.com", "f.chen@example.org"}
    other = next(m for _, m in messages_of(project, "2026-11-24") if m["To"].addresses[0].addr_spec in every)
    assert all(title in other.get_body(("plain",)).get_content() for title in titles)
    message = message_to(project, "2026-11-24", address)
    for part in (message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()):
        got = {title for title in titles if title in part}
        assert got == {t for t, section in titles.items() if section in ("Nuclear", "Chemical")}, got
