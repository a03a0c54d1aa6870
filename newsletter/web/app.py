"""The web application of `newsletter serve` (Starlette, run by uvicorn): the archive and the list's endpoints.

- `GET /u/TOKEN` shows which address the link unsubscribes, with one button; a GET changes nothing
  (mail scanners follow links). `POST /u/TOKEN` with `List-Unsubscribe=One-Click` (RFC 8058, as
  Gmail and Yahoo send it, or the page's button) unsubscribes at once: 200, no login, cookie or
  redirect. A token this project did not make answers 400 and changes nothing.
- `POST /subscribe` queues the request (web/outgoing.py mails a confirmation link, or an "already
  subscribed" note, from its own thread); `GET /confirm/TOKEN` shows a button, its POST makes the
  subscriber active. The page, and its time, are the same whatever the address's status.
- `GET /p/TOKEN` is the reader's preferences page (sections, daily or weekly, unsubscribe) and its
  POST saves them: web/preferences.py.
- Everything else is the static archive (`newsletter archive`), served from its folder with a
  Content-Security-Policy and cache headers.

A browser's form post from another site (its `Origin` or `Sec-Fetch-Site`) is refused with 403
unless `[web] allowed_origins` lists it; mail providers' one-click posts carry no Origin. Bodies are
bounded in size (FORM_LIMIT, 413 above) and time (`[web] request_timeout`, 408); sign-ups are bounded
per client (web/signup.py). The database work runs in the thread pool, one connection per request;
a database that cannot be written answers 503 with Retry-After, so a one-click unsubscribe is retried
by its sender rather than lost.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter import archive, i18n, signing, store, subscribers
from newsletter.delivery.single import send_single
from newsletter.errors import NewsletterError, StoreError
from newsletter.i18n import N_
from newsletter.models import Subscriber
from newsletter.settings import Settings, secret_key
from newsletter.web import outgoing, signup
from newsletter.web.preferences import PreferencesPage
from newsletter.web.server import BodyDeadline, bounded_protocol
from newsletter.web.webhooks import Webhooks

logger = logging.getLogger(__name__)

FORM_LIMIT = 8 * 1024  # bytes of a form body; the forms here hold one short field
ONE_CLICK = "One-Click"
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_READ_WRITE = ("GET", "HEAD", "POST")
MAX_CONNECTIONS = 2000  # open connections before uvicorn answers 503; each waits at most request_timeout

_HEADINGS = {  # translated where the page is made
    400: N_("This link or request is not valid"),
    404: N_("Page not found"),
    405: N_("Method not allowed"),
    403: N_("Request refused"),
    408: N_("Request took too long"),
    413: N_("Request too large"),
    415: N_("Unsupported form"),
    429: N_("Too many requests"),
    500: N_("Something went wrong"),
    503: N_("Try again in a few minutes"),
}
# What a page says for these, whatever the detail was (a number of bytes or seconds in English).
_DETAILS = {
    408: N_("The request took too long to arrive. Try again."),
    413: N_("The request is larger than this site accepts."),
    415: N_("The form could not be read. Use the form on this site's own pages."),
}
RETRY_AFTER = 300  # seconds, when the database cannot be written
# The archive's files: public and the same for everyone, so caches may keep them a little while.
_ARCHIVE_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
                                 b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"public, max-age=300"),
]
# Pages with a token in their address: no cache, no Referer leaving with the token, no framing.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
}
_EVERY_RESPONSE = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _with_headers(app: ASGIApp, extra: list[tuple[bytes, bytes]]) -> ASGIApp:
    """Return APP with EXTRA headers added to each response that does not set them itself (files included)."""
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in extra if name not in present
                ]
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


class WebApp:
    """The endpoints, bound to one project's settings, key and templates."""

    def __init__(self, settings: Settings, now: Callable[[], datetime]) -> None:
        from newsletter.renderer import make_environment

        self.settings = settings
        self.key = secret_key(settings)
        self.env = make_environment(settings)
        self._ = i18n.gettext_for(settings)
        self.ngettext = i18n.ngettext_for(settings)  # the pages' and answers' fixed strings, in the newsletter's language
        self.name = {"name": settings.newsletter.name}
        self.now = now
        self.own = {_origin(settings.newsletter.base_url)}
        self.allowed = set(settings.web.allowed_origins)
        self.worker = outgoing.MailWorker(settings, self.env, self.key, now, send_single)

    # ------------------------------------------------------------------ helpers

    def page(self, root: str, heading: str, *paragraphs: str, status: int = 200, address: str = "",
             form: dict | None = None, headers: dict[str, str] | None = None) -> HTMLResponse:
        """Return a page of the site: a heading, paragraphs, maybe an address and a one-button form."""
        return self.render("page.html.j2", root, heading, status=status, headers=headers, heading=heading,
                           paragraphs=paragraphs, address=address, form=form, error="")

    def render(self, template: str, root: str, title: str, *, status: int = 200,
               headers: dict[str, str] | None = None, **values: object) -> HTMLResponse:
        """Return the web TEMPLATE as a page titled TITLE, for an address with a token: not cached, not framed."""
        title = self._("%(heading)s: %(name)s") % {"heading": title, **self.name}
        html = archive.render_page(self.env, template, self.settings, root, title, **values)
        return HTMLResponse(html, status_code=status, headers={**_PAGE_HEADERS, **(headers or {})})

    def connect(self) -> sqlite3.Connection:
        return store.open_database(self.settings)

    async def _in_thread(self, work: Callable[[sqlite3.Connection], object]):
        def run() -> object:
            conn = self.connect()
            try:
                return work(conn)
            finally:
                conn.close()

        try:
            return await run_in_threadpool(run)
        except store.errors(NewsletterError) as err:
            if not isinstance(err, store.errors(StoreError)) and not isinstance(err.__cause__, store.errors()):
                raise
            # read-only, disk full, locked past the busy timeout: nothing changed; the sender retries
            logger.error("the database cannot be used, answered 503: %s", err)
            raise HTTPException(503, self._("The list cannot be changed at the moment; nothing was changed. "
                                            "Try again in a few minutes."),
                                headers={"Retry-After": str(RETRY_AFTER)}) from err

    def check_origin(self, request: Request) -> None:
        """Refuse (403) a browser's post from another site, unless [web] allowed_origins lists it.

        A browser names the page's site in Origin, except under this site's own `no-referrer` policy,
        where a form on our pages sends `Origin: null` and `Sec-Fetch-Site: same-origin`. A post with
        neither header is a mail provider's one-click request, or a client that is not a browser.
        """
        origin = request.headers.get("origin", "").strip().lower()
        fetch_site = request.headers.get("sec-fetch-site", "").strip().lower()
        if origin and origin != "null":
            host = request.headers.get("host", "").lower()
            if origin in self.own or origin in self.allowed or (host and origin.split("://", 1)[-1] == host):
                return
        elif origin == "null":
            if fetch_site == "same-origin":
                return
        elif fetch_site not in ("same-site", "cross-site"):
            return
        raise HTTPException(403, self._("This form was sent from another site. Use the form on this site's own pages."))

    # ------------------------------------------------------------------ unsubscribe

    def _unsubscribe_id(self, token: str) -> int:
        subscriber_id = signing.verify_token(self.key, token, self.settings.sender.list_id)
        if subscriber_id is None:
            raise HTTPException(400, self._("This unsubscribe link is not one of ours, or it was cut short. "
                                            "Copy the whole link from the email, or use the Unsubscribe link of "
                                            "a more recent email."))
        return subscriber_id

    async def unsubscribe_page(self, request: Request) -> Response:
        subscriber_id = self._unsubscribe_id(request.path_params["token"])
        person = await self._in_thread(lambda conn: subscribers.get_id(conn, subscriber_id))
        if person is None:
            return self._unsubscribed_generic()
        if person.status in (subscribers.ACTIVE, subscribers.PENDING):
            form = {"action": request.path_params["token"], "button": self._("Unsubscribe"),
                    "fields": [("List-Unsubscribe", ONE_CLICK)]}
            return self.page("../", self._("Unsubscribe?"),
                             self._("Press the button to stop %(name)s being sent to") % self.name,
                             address=person.email, form=form)
        return self.page("../", self._("You are unsubscribed"),
                         self._("%(name)s is no longer sent to") % self.name, address=person.email)

    async def unsubscribe(self, request: Request) -> Response:
        subscriber_id = self._unsubscribe_id(request.path_params["token"])
        self.check_origin(request)
        form = await read_form(request)
        if form.get("List-Unsubscribe") != ONE_CLICK:
            raise HTTPException(400, self._("The request has no List-Unsubscribe=One-Click field; "
                                            "use the button on this link's page."))
        change = await self._in_thread(lambda conn: subscribers.unsubscribe_id(conn, subscriber_id))
        if change is None:
            return self._unsubscribed_generic()
        if change.changed:
            logger.info("subscriber %s unsubscribed by link", subscriber_id)
        return self.page("../", self._("You are unsubscribed"),
                         self._("No more emails of %(name)s will be sent to") % self.name,
                         address=change.subscriber.email)

    def _unsubscribed_generic(self) -> HTMLResponse:
        return self.page("../", self._("You are unsubscribed"),
                         self._("No more emails of %(name)s will be sent to this address.") % self.name)

    # ------------------------------------------------------------------ sign-up

    async def subscribe(self, request: Request) -> Response:
        self.check_origin(request)
        form = await read_form(request)
        email = form.get("email", "").strip()
        if not email:
            raise HTTPException(400, self._("Enter your email address in the form to subscribe."))
        client = request.client.host if request.client else ""
        now = self.now()
        try:
            await self._in_thread(lambda conn: signup.request_sign_up(conn, email, client, now))
        except signup.LimitReached as err:
            raise HTTPException(429, self._("Too many sign-up requests from your network; try again later."),
                                headers={"Retry-After": str(err.retry_after)}) from err
        except subscribers.SubscriberError as err:
            logger.info("sign-up refused: %s", err)
            raise HTTPException(400, self._("%(address)s is not a valid address for this list. Check the address and "
                                            "try again.") % {"address": email}) from err
        self.worker.wake()
        return self.page("./", self._("Check your inbox"),
                         self._("If this address can receive our emails, a message with a link to confirm the "
                                "subscription is on its way to it. Nothing more is sent until the link is followed."),
                         address=email)

    async def _confirming(self, token: str) -> tuple[Subscriber, str]:
        """Return whom TOKEN confirms and, for a rejoin link, the unsubscribe moment it is bound to."""
        claimed = signing.token_subscriber_id(token)
        person = None if claimed is None else await self._in_thread(lambda conn: subscribers.get_id(conn, claimed))
        rejoin = person.updated_at if person is not None and person.status == subscribers.UNSUBSCRIBED else ""
        if signing.verify_confirm_token(self.key, token, self.settings.sender.list_id, self.now(),
                                       rejoin=rejoin) is None:
            raise HTTPException(400, self.ngettext(
                "This confirmation link is not valid or has expired (links work for %(days)s day). "
                "Subscribe again from the archive's front page.",
                "This confirmation link is not valid or has expired (links work for %(days)s days). "
                "Subscribe again from the archive's front page.", signup.CONFIRM_DAYS) % {"days": signup.CONFIRM_DAYS})
        if person is None or person.status not in (subscribers.PENDING, subscribers.ACTIVE, subscribers.UNSUBSCRIBED):
            raise HTTPException(400, self._("This confirmation link is no longer valid. Subscribe again from the "
                                            "archive's front page."))
        return person, rejoin

    async def confirm_page(self, request: Request) -> Response:
        person, _ = await self._confirming(request.path_params["token"])
        if person.status == subscribers.ACTIVE:
            return self.page("../", self._("You are subscribed"), self._("%(name)s is sent to") % self.name,
                             address=person.email)
        form = {"action": request.path_params["token"], "button": self._("Confirm my subscription"),
                "fields": [("confirm", "yes")]}
        return self.page("../", self._("Confirm your subscription"),
                         self._("Press the button to receive %(name)s at") % self.name,
                         address=person.email, form=form)

    async def confirm(self, request: Request) -> Response:
        self.check_origin(request)
        person, rejoin = await self._confirming(request.path_params["token"])
        subscriber_id = person.id
        await read_form(request)  # bounded like every body, though nothing in it is needed
        change = await self._in_thread(lambda conn: subscribers.confirm_id(conn, subscriber_id,
                                                                          unsubscribed_at=rejoin))
        if change is None or change.subscriber.status != subscribers.ACTIVE:
            raise HTTPException(400, self._("This confirmation link is no longer valid. Subscribe again from the "
                                            "archive's front page."))
        if change.changed:
            logger.info("subscriber %s confirmed", subscriber_id)
        return self.page("../", self._("You are subscribed"),
                         self._("Thank you. The next issue of %(name)s will be sent to") % self.name,
                         address=change.subscriber.email)

    # ------------------------------------------------------------------ errors

    @staticmethod
    def not_allowed(allow: str) -> Callable[[Request], Awaitable[Response]]:
        """Return an endpoint answering 405 with ALLOW (so the archive's files do not answer 404)."""
        async def endpoint(request: Request) -> Response:
            raise HTTPException(405, headers={"Allow": allow})

        return endpoint

    async def error_page(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "") or ""
        if status == 404:
            detail = self._("There is no page at this address. The archive's front page lists every issue.")
        elif status == 405:
            detail = self._("This address does not answer that kind of request.")
        elif status in _DETAILS:
            detail = self._(_DETAILS[status])
        elif status == 500:
            detail = self._("Something went wrong on our side; nothing was changed. Try again later.")
        else:
            detail = self._(detail) if detail else ""  # the details raised outside WebApp are marked N_ (read_form)
        heading = self._(_HEADINGS.get(status, _HEADINGS[403]))
        root = "../" * (request.url.path.count("/") - 1) or "./"  # relative: works under any prefix
        return self.page(root, heading, detail, status=status, headers=getattr(exc, "headers", None) or {})


async def read_body(request: Request, limit: int) -> bytes:
    """Read a request's body of at most LIMIT bytes; 413 above, 400 when the client leaves half-way."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise HTTPException(413, f"A request here holds at most {limit:,} bytes.")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, f"A request here holds at most {limit:,} bytes.")
    except ClientDisconnect:
        # nobody is left to answer: one line in the log, no traceback
        logger.info("%s: the client went away before its request's body arrived", request.url.path)
        raise HTTPException(400, N_("The request's body did not arrive.")) from None
    return bytes(body)


async def read_form(request: Request, limit: int = FORM_LIMIT) -> dict[str, str]:
    """Read a urlencoded or multipart form of at most LIMIT bytes; 413 above, 415 for another type."""
    return dict(await read_pairs(request, limit))


async def read_pairs(request: Request, limit: int = FORM_LIMIT, max_fields: int = 20) -> list[tuple[str, str]]:
    """Read a form's (name, value) pairs in order, a name as often as it comes (checkboxes); as `read_form`."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded" or (not content_type and not body):
        try:
            return urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                          strict_parsing=False, max_num_fields=max_fields)
        except (UnicodeDecodeError, ValueError) as err:
            raise HTTPException(400, N_("The form could not be read.")) from err
    if content_type == "multipart/form-data":
        async def replay() -> AsyncGenerator[bytes, None]:
            yield bytes(body)
            yield b""

        try:
            form = await MultiPartParser(Headers(scope=request.scope), replay(), max_files=0,
                                         max_fields=max_fields, max_part_size=limit).parse()
        except MultiPartException as err:
            logger.info("%s: the form could not be read: %s", request.url.path, err.message)
            raise HTTPException(400, N_("The form could not be read.")) from err
        return [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    raise HTTPException(415, "Send the form as application/x-www-form-urlencoded or multipart/form-data.")


def make_app(settings: Settings, site_dir: Path | None = None,
             now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> ASGIApp:
    """Return the web application; with SITE_DIR it also serves the archive built there."""
    web = WebApp(settings, now)
    hooks = Webhooks(settings, now, web._in_thread, read_body)  # a secret missing from the environment stops here
    routes: list = [*hooks.routes(), *PreferencesPage(web, read_pairs).routes(),
        Route("/u/{token}", web.unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", web.unsubscribe, methods=["POST"]),
        Route("/subscribe", web.subscribe, methods=["POST"]),
        Route("/confirm/{token}", web.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", web.confirm, methods=["POST"]),
        Route("/subscribe", web.not_allowed("POST"), methods=[m for m in _METHODS if m != "POST"]),
        Route("/u/{token}", web.not_allowed("GET, HEAD, POST"), methods=[m for m in _METHODS if m not in _READ_WRITE]),
        Route("/confirm/{token}", web.not_allowed("GET, HEAD, POST"),
              methods=[m for m in _METHODS if m not in _READ_WRITE]),
    ]
    if site_dir is not None:
        routes.append(Mount("/", _with_headers(StaticFiles(directory=site_dir, html=True), _ARCHIVE_HEADERS)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        web.worker.start()  # mails queued before a stop or a crash go out now
        try:
            yield
        finally:
            web.worker.stop()

    app = Starlette(routes=routes, exception_handlers={HTTPException: web.error_page, 500: web.error_page},
                    lifespan=lifespan)
    return _with_headers(BodyDeadline(app, settings.web.request_timeout), _EVERY_RESPONSE)


def serve(settings: Settings, site_dir: Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the archive and the endpoints with uvicorn until interrupted."""
    import uvicorn

    proxies = list(settings.web.trusted_proxies)
    # no access log: its lines would carry personal unsubscribe and confirmation tokens
    uvicorn.run(make_app(settings, site_dir), host=host, port=port, log_level="info", server_header=False,
                access_log=False, lifespan="on", http=bounded_protocol(settings.web.request_timeout),
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                timeout_keep_alive=5, limit_concurrency=MAX_CONNECTIONS, h11_max_incomplete_event_size=16 * 1024)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


__all__ = ["FORM_LIMIT", "WebApp", "make_app", "read_form", "read_pairs", "serve"]
