"""A real HTTP server on 127.0.0.1 (a random port, its own thread) serving the feeds a test sets up."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from feedgen.feed import FeedGenerator


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""  # set: a request with If-None-Match equal to it gets 304
    hold: threading.Event | None = None  # set: the answer's headers go out, then the body waits for this
    trickle: threading.Event | None = None  # set: the body goes out a byte every 0.05 s until this is set


class FeedServer:
    """`server.routes[path] = Route(...)`; `server.url(path)`; `server.requests` lists (path, headers)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests.append((self.path, dict(self.headers)))
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(route.status)
                for name, value in {"Content-Length": str(len(route.body)), **route.headers}.items():
                    self.send_header(name, value)
                if route.etag:
                    self.send_header("ETag", route.etag)
                self.end_headers()
                if route.hold is not None:
                    self.wfile.flush()
                    route.hold.wait(30)
                if route.trickle is not None:
                    for byte in route.body:
                        if route.trickle.wait(0.05):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                self.wfile.write(route.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for route in self.routes.values():
            for event in (route.hold, route.trickle):
                if event is not None:
                    event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Item:
    """One entry of a generated feed."""

    title: str
    link: str
    published: datetime
    content: str = ""
    summary: str = ""
    id: str = ""


def make_feed(items: list[Item], *, kind: str = "rss", title: str = "Harbour Desk",
              link: str = "https://harbour.example.org/") -> bytes:
    """Return an RSS 2.0 or Atom feed of ITEMS made by feedgen."""
    generator = FeedGenerator()
    generator.id(link)
    generator.title(title)
    generator.link(href=link, rel="alternate")
    generator.description("Sample feed for tests")
    generator.updated(datetime(2026, 11, 26, 5, tzinfo=timezone.utc))
    for item in reversed(items):  # feedgen puts the last one added first
        entry = generator.add_entry()
        entry.id(item.id or item.link)
        entry.title(item.title)
        entry.link(href=item.link)
        entry.published(item.published)
        entry.updated(item.published)
        if item.content:
            entry.content(item.content, type="CDATA" if kind == "rss" else "html")
        if kind == "rss":
            entry.description(item.summary or item.title)
        else:
            entry.summary(item.summary or item.title)
    return generator.rss_str(pretty=True) if kind == "rss" else generator.atom_str(pretty=True)
