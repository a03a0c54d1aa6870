"""Headless Chromium driven over the DevTools protocol: load an email's HTML, measure it, picture it.

Chromium is started with `--remote-debugging-pipe`: it reads commands on file descriptor 3 and
writes replies on 4, each a JSON object ended by a NUL byte. No port, no websocket library, and
nothing listening on the network. Every wait has a deadline and the process is always killed.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTHS = (375, 600, 800)
_MAX_HEIGHT = 16_384  # Chromium's largest texture: a taller screenshot comes out blank


class BrowserError(NewsletterError):
    """Chromium is missing, did not start, or did not answer in time."""


def find_chromium() -> str | None:
    """Return the path of a Chromium (or Chrome) executable on PATH, or None."""
    for name in CANDIDATES:
        if found := shutil.which(name):
            return found
    return None


class Browser:
    """One headless Chromium with one tab, used as a context manager."""

    def __init__(self, executable: str | None = None, *, timeout: float = 30.0, offline: bool = True) -> None:
        found = executable or find_chromium()
        if found is None:
            raise BrowserError(
                "chromium not found on PATH: install it (Debian: apt-get install chromium) to take screenshots"
            )
        self.executable: str = found
        self.timeout = timeout
        self.offline = offline  # every host name fails to resolve: remote images never load
        self._proc: subprocess.Popen | None = None
        self._profile: tempfile.TemporaryDirectory | None = None
        self._to_browser = self._from_browser = -1
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self._session = ""

    # --- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start Chromium and open a blank tab."""
        self._profile = tempfile.TemporaryDirectory(prefix="newsletter-chromium-", ignore_cleanup_errors=True)
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        # Move the child's ends above 9 so the dup2 onto 3 and 4 cannot overwrite one another.
        child_r = fcntl.fcntl(commands_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(replies_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(commands_r)
        os.close(replies_w)

        def to_fds_3_and_4() -> None:  # runs in the child between fork and exec
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        args = [
            self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}", "about:blank",
        ]
        if self.offline:
            args.insert(-1, "--host-resolver-rules=MAP * ~NOTFOUND")
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(3, 4), preexec_fn=to_fds_3_and_4, start_new_session=True,
            )
        except OSError as err:
            self._close_fds(commands_w, replies_r, child_r, child_w)
            self._profile.cleanup()
            raise BrowserError(f"{self.executable}: cannot start: {err}") from err
        os.close(child_r)
        os.close(child_w)
        self._to_browser, self._from_browser = commands_w, replies_r
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill Chromium and remove its profile; safe to call twice."""
        proc = self._proc
        if proc is not None:
            try:  # ask first: Chromium then ends its helper processes and lets go of the profile
                self._session = ""
                self.call("Browser.close", timeout=2.0)
            except BrowserError:
                pass
            self._proc = None
            try:
                proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass
            try:  # its own process group (start_new_session): the helpers go with it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self._close_fds(self._to_browser, self._from_browser)
        self._to_browser = self._from_browser = -1
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    @staticmethod
    def _close_fds(*fds: int) -> None:
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    # --- the protocol ------------------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, *, timeout: float | None = None) -> dict:
        """Send one DevTools command (to the tab once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session:
            message["sessionId"] = self._session
        data = json.dumps(message).encode("utf-8") + b"\0"
        deadline = time.monotonic() + (timeout or self.timeout)
        while data:
            _, ready, _ = select.select([], [self._to_browser], [], self._left(deadline, method))
            if ready:
                data = data[os.write(self._to_browser, data):]
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise BrowserError(f"chromium: {method} failed: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_for(self, event: str, *, timeout: float | None = None) -> dict | None:
        """Return the next EVENT's parameters, or None if it did not come in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, seen in enumerate(self._events):
                if seen.get("method") == event:
                    del self._events[i]
                    return seen.get("params", {})
            try:
                self._events.append(self._read(deadline, event))
            except BrowserError:
                return None

    def _left(self, deadline: float, what: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrowserError(f"chromium: no answer to {what} within {self.timeout:g} s")
        if self._proc is None or self._proc.poll() is not None:
            raise BrowserError(f"chromium: exited while waiting for {what}")
        return left

    def _read(self, deadline: float, what: str) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], min(self._left(deadline, what), 0.5))
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium: closed the pipe while waiting for {what}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    # --- pages -------------------------------------------------------------------------------

    def load(self, html: str, *, width: int, dark: bool = False, height: int = 900) -> None:
        """Show HTML in a window WIDTH px wide, in light or dark colour scheme, and wait for it to load."""
        assert self._profile is not None, "start() first"
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.call("Emulation.setEmulatedMedia", {
            "media": "screen",
            "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}],
        })
        page = Path(self._profile.name) / f"page-{self._next_id}.html"
        page.write_text(html, encoding="utf-8")
        self._events.clear()
        self.call("Page.navigate", {"url": page.as_uri()})
        # A remote image that never answers must not hold the picture back for ever.
        self.wait_for("Page.loadEventFired", timeout=min(self.timeout, 15.0))

    def evaluate(self, expression: str) -> Any:
        """Run a JavaScript EXPRESSION in the page and return its value (JSON-serializable)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"chromium: script failed: {text}")
        return result.get("result", {}).get("value")

    def screenshot(self) -> bytes:
        """Return a PNG of the whole page at the window's width."""
        import base64

        width = int(self.evaluate("window.innerWidth"))
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        height = max(1, min(height, _MAX_HEIGHT))
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        shot = self.call("Page.captureScreenshot", {"format": "png", "fromSurface": True})
        return base64.b64decode(shot["data"])


# --- measurements (for tests and checks) --------------------------------------------------------

BOX_SELECTOR = "table, td, th, img, h1, h2, h3, h4, p, li"
TEXT_SELECTOR = "p, li, td, th, h1, h2, h3, h4, a, blockquote, strong, em"

_BOXES_JS = """(sel => Array.from(document.querySelectorAll(sel)).map(e => {
  const r = e.getBoundingClientRect();
  return [e.tagName.toLowerCase(), r.left, r.top, r.width, r.height];
}))(%s)"""

# For every element with its own text: its colour, the first opaque background up its ancestors
# (the page's white if none), and the start of its text.
_COLOURS_JS = """(sel => {
  const rgba = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const behind = e => {
    for (; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const own = e => Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
  return Array.from(document.querySelectorAll(sel)).filter(own).map(e =>
    [rgba(getComputedStyle(e).color).slice(0, 3), behind(e), e.textContent.trim().slice(0, 40)]);
})(%s)"""


def boxes(browser: Browser, selector: str = BOX_SELECTOR) -> list[tuple[str, float, float, float, float]]:
    """Return (tag, left, top, width, height) of every element matching SELECTOR, in document order."""
    return [tuple(box) for box in browser.evaluate(_BOXES_JS % json.dumps(selector))]


def remove_style_blocks(browser: Browser) -> int:
    """Remove every <style> element from the page (as Gmail's apps do); return how many there were."""
    return int(browser.evaluate("(() => { const s = document.querySelectorAll('style'); "
                                "s.forEach(e => e.remove()); return s.length; })()"))


def text_colours(browser: Browser, selector: str = TEXT_SELECTOR) -> list[tuple[tuple, tuple, str]]:
    """Return (text colour, background behind it, text) for each element with text of its own."""
    return [(tuple(fg), tuple(bg), text) for fg, bg, text in browser.evaluate(_COLOURS_JS % json.dumps(selector))]


def contrast_ratio(foreground: tuple, background: tuple) -> float:
    """Return the WCAG 2 contrast ratio of two sRGB colours given as 0-255 triples (1 to 21)."""
    def luminance(colour: tuple) -> float:
        linear = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in colour[:3]]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def screenshot(html: str, path: Path, *, width: int = 600, dark: bool = False, offline: bool = False) -> tuple[int, int]:
    """Write a PNG picture of HTML as a reader sees it WIDTH px wide; return its width and height."""
    if width not in WIDTHS:
        raise BrowserError(f"--width {width}: expected one of {', '.join(map(str, WIDTHS))}")
    with Browser(offline=offline) as browser:
        browser.load(html, width=width, dark=dark)
        png = browser.screenshot()
    from newsletter.files import write_atomic

    path = path.resolve()
    write_atomic(path.parent, path.name, png)
    return png_size(png)


def png_size(png: bytes) -> tuple[int, int]:
    """Return (width, height) read from a PNG's header; BrowserError if it is not a PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise BrowserError("chromium did not return a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


__all__ = [
    "Browser", "BrowserError", "WIDTHS", "boxes", "contrast_ratio", "find_chromium", "png_size",
    "remove_style_blocks", "screenshot", "text_colours",
]
