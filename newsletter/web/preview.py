"""The editors' live preview: `newsletter preview --serve` on 127.0.0.1.

`GET /` shows the day's issue (the public copy) or, when it cannot be built, the error naming the
file. The page carries a small script, in the preview only and never in an email, that asks
`GET /version` about once a second and reloads when the number changes. Each `/version` request
compares the modification times of the day's article folder and of the templates with the last
build, and rebuilds when they differ; no watcher thread, no extra dependency.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from newsletter.errors import NewsletterError
from newsletter.settings import Settings

logger = logging.getLogger(__name__)

POLL_MS = 800

_RELOAD_SCRIPT = """<script>
(function () {
  var shown = "%s";
  function poll() {
    fetch("/version", {cache: "no-store"})
      .then(function (r) { return r.text(); })
      .then(function (v) { if (v.trim() !== shown) { location.reload(); } else { setTimeout(poll, %d); } })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, %d);
})();
</script>
"""


@dataclass(frozen=True)
class Build:
    """The last build: its number, the page, and the error that stopped it (if any)."""

    version: int
    html: str
    error: str = ""


class LivePreview:
    """One day's issue, rebuilt when its articles or the templates change."""

    def __init__(self, settings: Settings, day: date) -> None:
        self.settings = settings
        self.day = day
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._build = Build(0, "")

    def watched_folders(self) -> list[Path]:
        """Return the folders whose files make the issue: the day's articles and the templates."""
        from newsletter.project import packaged_templates

        return [self.settings.articles_dir / self.day.isoformat(), self.settings.templates_dir,
                packaged_templates()]

    def signature(self) -> tuple:
        """Return (path, mtime, size) of every watched file: it differs once anything is saved."""
        found = []
        for folder in self.watched_folders():
            for parent, _, files in os.walk(folder):
                for name in files:
                    path = os.path.join(parent, name)
                    try:
                        stat = os.stat(path)
                    except OSError:
                        continue  # removed while we looked: the next poll sees it gone
                    found.append((path, stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(found))

    def current(self) -> Build:
        """Return the build of the files as they are now, rebuilding if any changed since the last."""
        with self._lock:
            signature = self.signature()
            if signature != self._signature:
                self._signature = signature
                self._build = self._rebuild(self._build.version + 1)
            return self._build

    def _rebuild(self, version: int) -> Build:
        from newsletter import messages
        from newsletter.archive import render_page
        from newsletter.pipeline import prepare_issue
        from newsletter.renderer import make_environment

        script = _RELOAD_SCRIPT % (version, POLL_MS, POLL_MS)
        try:
            prepared = prepare_issue(self.settings, self.day)
            if prepared.rendered is None:
                raise NewsletterError(prepared.skipped_reason)
            html = messages.public_html(prepared.rendered, self.settings)
            logger.info("preview of %s rebuilt (version %d)", self.day, version)
            return Build(version, _before_body_end(html, script))
        except NewsletterError as err:
            logger.warning("preview of %s: %s", self.day, err)
            error = str(err)
        try:
            page = render_page(make_environment(self.settings), "page.html.j2", self.settings, "/",
                               f"Build error: {self.day}", heading=f"The issue of {self.day} cannot be built",
                               paragraphs=("Fix the file named below and save it: this page reloads by itself.",),
                               address="", form=None, error=error, script=script)
        except NewsletterError as err:  # the web templates themselves are broken
            page = f"<!DOCTYPE html><title>Build error</title><pre>{_escape(error)}\n\n{_escape(str(err))}</pre>{script}"
        return Build(version, page, error)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _before_body_end(html: str, script: str) -> str:
    at = html.lower().rfind("</body>")
    return html + script if at < 0 else html[:at] + script + html[at:]


def make_preview_app(settings: Settings, day: date) -> Starlette:
    """Return the live preview application of DAY's issue."""
    preview = LivePreview(settings, day)
    no_store = {"Cache-Control": "no-store"}

    def page(request: Request) -> HTMLResponse:  # sync: Starlette runs it in the thread pool
        build = preview.current()
        return HTMLResponse(build.html, status_code=500 if build.error else 200, headers=no_store)

    def version(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(preview.current().version), headers=no_store)

    return Starlette(routes=[Route("/", page), Route("/version", version)])


def serve_preview(settings: Settings, day: date, port: int = 8008) -> None:
    """Serve the live preview on 127.0.0.1:PORT until interrupted."""
    import uvicorn

    uvicorn.run(make_preview_app(settings, day), host="127.0.0.1", port=port, log_level="warning",
                server_header=False)


__all__ = ["Build", "LivePreview", "make_preview_app", "serve_preview"]
