"""The email services' webhooks in `newsletter serve`: POST /webhooks/ses, /webhooks/postmark, /webhooks/mailgun.

Each endpoint is on only when its `[webhooks.<service>]` table says `enabled = true` (else 404). A
request is believed only after its service's check: SNS's signature (web/sns.py), Postmark's HTTP
basic auth, Mailgun's HMAC signature with a fresh, unused token (web/services.py). A request that
fails it gets 401 or 403 and changes nothing. A believed request becomes reports, and each report
one `feedback.apply`, which alone changes the list and records the subscriber's event; the answer
is 200 whatever the reports did (a bounce of an address the list no longer has is not an error),
503 when the database cannot be written (the service sends it again later).

Which issue a report is about: the one whose Message-ID it carries (SES with original headers,
Mailgun), else the latest issue delivered to that address on or before the day the message was
sent or the event happened (Postmark passes no Message-ID of ours).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter import feedback, subscribers
from newsletter.feedback import Feedback, FeedbackKind, Outcome
from newsletter.settings import Settings, webhook_secret
from newsletter.web import services
from newsletter.web.services import Report, WebhookRefused
from newsletter.web.sns import SnsVerifier, https_fetcher

logger = logging.getLogger(__name__)

BODY_LIMIT = 256 * 1024  # bytes; an SES notification with the original headers is a few KB
LOOK_BACK = 14  # issues searched for the one a report without our Message-ID is about

InThread = Callable[[Callable[[sqlite3.Connection], object]], Awaitable[object]]
ReadBody = Callable[[Request, int], Awaitable[bytes]]


def issue_day_of(conn: sqlite3.Connection, settings: Settings, report: Report) -> tuple[str | None, int | None]:
    """Return the issue REPORT is about and its subscriber's id, as far as the ledger tells."""
    if report.message_id:
        row = conn.execute("SELECT issue_day, subscriber_id FROM deliveries WHERE message_id = ?",
                           (report.message_id,)).fetchone()
        if row is not None:
            return row["issue_day"], row["subscriber_id"]
    person = subscribers.find_in(conn, report.email)
    if person is None:
        return None, None
    last = (report.at.astimezone(settings.tz).date().isoformat() if report.at else "9999-12-31")
    # one primary-key look-up per recent issue: deliveries has no index by subscriber
    row = conn.execute(
        "SELECT i.day FROM (SELECT day FROM issues WHERE day <= ? ORDER BY day DESC LIMIT ?) AS i"
        " JOIN deliveries d ON d.issue_day = i.day AND d.subscriber_id = ?"
        " WHERE d.state NOT IN ('pending', 'skipped') ORDER BY i.day DESC LIMIT 1",
        (last, LOOK_BACK, person.id)).fetchone()
    return (row["day"] if row else None), None


class Webhooks:
    """The enabled services' endpoints, their checks, and the hand-over to `feedback.apply`."""

    def __init__(self, settings: Settings, now: Callable[[], datetime], in_thread: InThread, read_body: ReadBody,
                 environ: Mapping[str, str] = os.environ) -> None:
        hooks = settings.webhooks
        self.settings = settings
        self.now = now
        self.in_thread = in_thread
        self.read_body = read_body
        self.ses: SnsVerifier | None = None
        self.postmark_password: str | None = None
        self.mailgun: services.MailgunSignatures | None = None
        if hooks.ses.enabled:
            ca_file = settings.root / hooks.ses.ca_file if hooks.ses.ca_file else None
            self.ses = SnsVerifier(hooks.ses.topics, https_fetcher(ca_file), hooks.ses.cert_hosts)
        if hooks.postmark.enabled:
            self.postmark_password = webhook_secret("postmark", environ)
        if hooks.mailgun.enabled:
            key = webhook_secret("mailgun", environ).encode("utf-8")
            self.mailgun = services.MailgunSignatures(key, hooks.mailgun.max_age)

    def routes(self) -> list[Route]:
        """Return a route for each enabled service."""
        enabled = {"ses": self.ses, "postmark": self.postmark_password, "mailgun": self.mailgun}
        endpoints = {"ses": self.from_ses, "postmark": self.from_postmark, "mailgun": self.from_mailgun}
        return [Route(f"/webhooks/{name}", self._answering(endpoints[name]), methods=["POST"])
                for name, on in enabled.items() if on is not None]

    @staticmethod
    def _answering(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                return await endpoint(request)
            except WebhookRefused as err:
                # one line, no body or address: a forger learns nothing, the editor sees why
                logger.warning("%s refused (%s): %s", request.url.path, err.status, err)
                return PlainTextResponse(f"{err}\n", status_code=err.status, headers=err.headers)

        return answer

    async def from_ses(self, request: Request) -> Response:
        assert self.ses is not None
        body = await self.read_body(request, BODY_LIMIT)
        now = self.now()
        message = await run_in_threadpool(self.ses.verify, body, now)  # may fetch the certificate
        if message.type == "SubscriptionConfirmation":
            await run_in_threadpool(self.ses.confirm, message)
            return PlainTextResponse(f"confirmed the subscription to {message.topic_arn}\n")
        if message.type == "UnsubscribeConfirmation":
            logger.warning("SNS says this endpoint was unsubscribed from %s", message.topic_arn)
            return PlainTextResponse("noted\n")
        return await self.apply(services.ses_reports(message.message), now)

    async def from_postmark(self, request: Request) -> Response:
        assert self.postmark_password is not None
        services.check_basic_auth(request.headers.get("authorization", ""),
                                  self.settings.webhooks.postmark.username, self.postmark_password)
        payload = services.read_json(await self.read_body(request, BODY_LIMIT), "postmark")
        return await self.apply(services.postmark_reports(payload), self.now())

    async def from_mailgun(self, request: Request) -> Response:
        assert self.mailgun is not None
        payload = services.read_json(await self.read_body(request, BODY_LIMIT), "mailgun")
        now = self.now()
        token = self.mailgun.check(payload.get("signature"), now)
        event = payload.get("event-data")
        try:
            if not isinstance(event, dict):
                raise WebhookRefused(400, "mailgun: the request has no event-data object")
            return await self.apply(services.mailgun_reports(event), now)
        except (HTTPException, WebhookRefused):
            self.mailgun.forget(token)  # nothing was done: the same request may come again
            raise

    async def apply(self, reports: list[Report], now: datetime) -> Response:
        """Hand each report to `feedback.apply`; answer 200 with one line per report."""
        def work(conn: sqlite3.Connection) -> list[Outcome]:
            outcomes = []
            for report in reports:
                issue_day, subscriber_id = issue_day_of(conn, self.settings, report)
                news = Feedback(FeedbackKind(report.kind), f"webhook:{report.source}", email=report.email,
                                subscriber_id=subscriber_id, issue_day=issue_day, status=report.status,
                                diagnostic=report.diagnostic, dedupe_key=report.dedupe_key)
                outcomes.append(feedback.apply(conn, self.settings, news, now))
            return outcomes

        outcomes: list[Outcome] = await self.in_thread(work)  # type: ignore[assignment]
        for outcome in outcomes:
            logger.info("webhook %s: %s", outcome.feedback.source, outcome)
        lines = [str(outcome) for outcome in outcomes] or ["nothing for the list"]
        return PlainTextResponse("\n".join(lines) + "\n")


__all__ = ["BODY_LIMIT", "Webhooks", "issue_day_of"]
