"""One feed over HTTP: httpx with timeouts, a byte limit read while streaming, conditional GET, and
redirects followed one hop at a time, each hop checked to be http: or https:."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from newsletter import __version__
from newsletter.errors import FeedError

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
ACCEPT = ("application/feed+json, application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
          "application/json;q=0.8, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1")


@dataclass(frozen=True)
class Validators:
    """What the server said identifies this version of the feed (sent back as If-None-Match / If-Modified-Since)."""

    etag: str = ""
    last_modified: str = ""


@dataclass(frozen=True)
class Fetched:
    url: str  # where the feed was found, after any redirects
    body: bytes | None  # None: 304, unchanged since the validators
    validators: Validators


def user_agent(base_url: str) -> str:
    """Return the User-Agent: this tool, its version, and where the newsletter reading the feed lives."""
    return f"newsletter/{__version__} (daily bulletin feed reader; +{base_url})"


def fetch(url: str, validators: Validators, *, timeout: float, max_bytes: int, agent: str) -> Fetched:
    """GET URL (conditionally), following at most MAX_REDIRECTS http(s) redirects; raise FeedError on any fault."""
    headers = {"User-Agent": agent, "Accept": ACCEPT}
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    deadline = time.monotonic() + 3 * timeout  # a server trickling bytes never hits the read timeout
    visited: list[str] = []
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, headers=headers) as client:
            while True:
                _check_scheme(url, visited)
                visited.append(url)
                with client.stream("GET", url) as response:
                    if response.status_code == 304 and (validators.etag or validators.last_modified):
                        return Fetched(url, None, validators)
                    if response.status_code in REDIRECTS:
                        url = _next_hop(url, response, visited)
                        continue
                    if response.status_code != 200:
                        raise FeedError(f"the server answered {response.status_code} {response.reason_phrase}".rstrip())
                    body = _read(response, max_bytes, deadline, timeout)
                    kept = Validators(response.headers.get("etag", ""), response.headers.get("last-modified", ""))
                    return Fetched(url, body, kept)
    except httpx.TimeoutException:
        raise FeedError(f"timed out (no answer within {timeout:g} s)") from None
    except httpx.HTTPError as err:
        raise FeedError(f"cannot be fetched: {err or type(err).__name__}") from None


def _check_scheme(url: str, visited: list[str]) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        via = f" (a redirect from {visited[-1]})" if visited else ""
        raise FeedError(f"{url!r}{via}: only http:// and https:// addresses are fetched")


def _next_hop(url: str, response: httpx.Response, visited: list[str]) -> str:
    location = response.headers.get("location", "")
    if not location:
        raise FeedError(f"the server answered {response.status_code} without a Location")
    target = urljoin(url, location)
    if target in visited:
        raise FeedError(f"redirects in a loop ({' → '.join([*visited, target])})")
    if len(visited) > MAX_REDIRECTS:
        raise FeedError(f"more than {MAX_REDIRECTS} redirects (last to {target})")
    return target


def _read(response: httpx.Response, max_bytes: int, deadline: float, timeout: float) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FeedError(f"is {int(declared):,} bytes, over max_bytes = {max_bytes:,}")
    body = bytearray()
    for chunk in response.iter_bytes():  # decompressed: a small gzip bomb counts at its real size
        body += chunk
        if len(body) > max_bytes:
            raise FeedError(f"is over max_bytes = {max_bytes:,} bytes (stopped reading there)")
        if time.monotonic() > deadline:
            raise FeedError(f"timed out (still sending after {3 * timeout:g} s)")
    return bytes(body)


__all__ = ["Fetched", "MAX_REDIRECTS", "Validators", "fetch", "user_agent"]
