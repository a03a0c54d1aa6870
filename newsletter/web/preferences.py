"""A reader's preferences page, `/p/TOKEN`, the link at the foot of every email.

- `GET /p/TOKEN` shows the sections of `[issue] sections` as checkboxes (every box ticked for a
  reader who chose none: they receive every section), daily or a weekly digest, and a button that
  unsubscribes (it posts to the reader's `/u/TOKEN`). A GET changes nothing: mail scanners follow links.
- `POST /p/TOKEN`, the Save button, from this site only (`WebApp.check_origin`, as every form here),
  sets both through `subscribers.set_preferences`, which records the change and its time. It
  applies from the next issue whose send has not started: a send freezes its readers when it starts.
- A token this project did not make answers 400 and names nobody. Plain forms, no script, no
  login, no cookie.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import events, signing, subscribers
from newsletter.errors import SubscriberError
from newsletter.i18n import N_
from newsletter.models import Frequency, Subscriber

if TYPE_CHECKING:
    from newsletter.web.app import WebApp

logger = logging.getLogger(__name__)

TEMPLATE = "preferences.html.j2"
ROOT = "../"  # the page is one folder deep: /p/TOKEN
_OTHER_METHODS = ("PUT", "DELETE", "PATCH", "OPTIONS")

ReadPairs = Callable[..., Awaitable[list[tuple[str, str]]]]


class PreferencesPage:
    """The `/p/TOKEN` endpoints of one WebApp (its settings, key, templates, database and origin check)."""

    def __init__(self, web: WebApp, read_pairs: ReadPairs) -> None:
        self.web = web
        self.read_pairs = read_pairs
        self.settings = web.settings
        self.sections = web.settings.issue.sections
        self.signer = signing.preferencer(web.key, web.settings.sender.list_id) if web.key else None

    def routes(self) -> list[Route]:
        return [
            Route("/p/{token}", self.show, methods=["GET"]),
            Route("/p/{token}", self.save, methods=["POST"]),
            Route("/p/{token}", self.web.not_allowed("GET, HEAD, POST"), methods=list(_OTHER_METHODS)),
        ]

    def _subscriber_id(self, token: str) -> int:
        found = self.signer.verify(token) if self.signer is not None else None
        if not found:
            raise HTTPException(400, N_("This preferences link is not one of ours, or it was cut short. Copy the "
                                        "whole link from the foot of the email, or use the link of a more recent "
                                        "email."))
        return found[0]

    async def show(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self._subscriber_id(token)
        person = await self.web._in_thread(lambda conn: subscribers.get_id(conn, subscriber_id))
        if person is None or person.status != subscribers.ACTIVE:
            return self._not_receiving(person)
        return self._form(person, token)

    async def save(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self._subscriber_id(token)
        self.web.check_origin(request)
        pairs = await self.read_pairs(request, max_fields=len(self.sections) + 10)
        chosen = [value for name, value in pairs if name == "section"]
        frequency = next((value for name, value in reversed(pairs) if name == "frequency"), "")
        person = await self.web._in_thread(lambda conn: subscribers.get_id(conn, subscriber_id))
        if person is None or person.status != subscribers.ACTIVE:
            return self._not_receiving(person)
        _ = self.web._
        known = {name.casefold() for name in self.sections}
        if unknown := [name for name in chosen if name.strip().casefold() not in known]:
            return self._form(person, token, status=400, error=_(
                "%(section)s is not a section of this newsletter. Nothing was changed.") % {"section": unknown[0]})
        if frequency not in tuple(Frequency):
            return self._form(person, token, status=400, error=_(
                "Choose how often: every issue, or a weekly digest. Nothing was changed."))
        sections = subscribers.known_sections(chosen, self.sections)
        if not sections:
            return self._form(person, token, status=400, error=_(
                "Tick at least one section, or unsubscribe with the button below. Nothing was changed."))
        if sections == frozenset(self.sections):
            sections = frozenset()  # every section: new ones too, as for a reader who never chose

        def apply(conn: sqlite3.Connection) -> tuple[Subscriber | None, bool]:
            try:
                changed = subscribers.set_preferences(conn, subscriber_id, sections=sections,
                                                      frequency=Frequency(frequency), source=events.WEB)
            except SubscriberError:  # erased between the look-up and the change
                return None, False
            return subscribers.get_id(conn, subscriber_id), changed

        after, changed = await self.web._in_thread(apply)
        if after is None:
            return self._not_receiving(None)
        if changed:
            logger.info("subscriber %s changed their preferences on the web", subscriber_id)
        choice = {"choice": self._summary(after)}
        notice = (_("Saved. From the next issue, %(choice)s.") if changed else _("Nothing changed: %(choice)s.")) % choice
        return self._form(after, token, notice=notice)

    # ------------------------------------------------------------------ pages

    def _summary(self, person: Subscriber) -> str:
        _ = self.web._
        named = ", ".join(s for s in self.sections if s in person.sections) or _("every section")
        if person.frequency == Frequency.WEEKLY:
            return _("you receive a weekly digest of %(sections)s") % {"sections": named}
        return _("you receive every issue with %(sections)s") % {"sections": named}

    def _form(self, person: Subscriber, token: str, *, notice: str = "", error: str = "",
              status: int = 200) -> Response:
        ticked = person.sections or frozenset(self.sections)
        unsubscribe = signing.unsubscribe_token(self.web.key, person.id, self.settings.sender.list_id)
        return self.web.render(
            TEMPLATE, ROOT, self.web._("Your preferences"), status=status, address=person.email, action=token,
            unsubscribe_action=f"{ROOT}u/{unsubscribe}", notice=notice, error=error,
            sections=[{"name": name, "checked": name in ticked} for name in self.sections],
            frequency=str(person.frequency),
        )

    def _not_receiving(self, person: Subscriber | None) -> Response:
        _, name = self.web._, self.web.name
        if person is None:
            return self.web.page(ROOT, _("Not on the list"), _(
                "This address is no longer on the list of %(name)s, so there is nothing to choose. Subscribe "
                "again from the archive's front page.") % name)
        return self.web.page(ROOT, _("You are not subscribed"), _(
            "%(name)s is not sent to this address at the moment, so there is nothing to choose. To receive it "
            "again, subscribe from the archive's front page.") % name, address=person.email)


__all__ = ["PreferencesPage"]
