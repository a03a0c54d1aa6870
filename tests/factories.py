"""Small hand-made values shared by the delivery tests (outbox and SMTP)."""

from __future__ import annotations

from datetime import date

from aiosmtpd.controller import Controller

from newsletter.models import GREETING_PLACEHOLDER, TOKEN_PLACEHOLDER, Issue, RenderedIssue

DAY = date(2026, 11, 26)


def make_rendered(day: date = DAY, words: str = "The interceptor talks resumed.") -> RenderedIssue:
    """A tiny rendered issue with the greeting and unsubscribe placeholders where messages.py expects them."""
    issue = Issue(day=day, number=7, subject=f"MDB {day:%B} {day.day}: Talks resume", preheader="Talks",
                  sections=(), archive_url=f"https://newsletter.example.org/{day}/")
    html = (f"<html><body><p>{GREETING_PLACEHOLDER}</p>\n<p>{words}</p>\n"
            f"<a href=\"https://newsletter.example.org/u/{TOKEN_PLACEHOLDER}\">Unsubscribe</a>\n</body></html>\n")
    text = f"{GREETING_PLACEHOLDER}\n\n{words}\n\nUnsubscribe: https://newsletter.example.org/u/{TOKEN_PLACEHOLDER}\n"
    return RenderedIssue(issue, html, text)


class LoopbackController(Controller):
    """aiosmtpd on a free port of 127.0.0.1 (port=0), which it reports as `.port` once listening."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def send_unchecked(*args, **kwargs):
    """`delivery.send_issue` with force=True: the delivery tests' hand-made issues are not meant to pass the check."""
    from newsletter.delivery import send_issue

    return send_issue(*args, force=True, **kwargs)
