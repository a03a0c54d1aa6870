"""The time bounds uvicorn lacks: a deadline for a request's headers (its h11 protocol) and body (middleware).

uvicorn closes a connection left idle after a response (`timeout_keep_alive`), but a client that
connects and sends nothing, or trickles its headers a byte at a time, is kept for ever; with
`limit_concurrency` such connections make everyone else get 503. Here each connection must deliver
a complete request head within SECONDS of connecting or of its previous response, else it is
closed. The body then has as long again (BodyDeadline, 408 past it); the head's size is bounded by
`h11_max_incomplete_event_size`.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


def bounded_protocol(seconds: float) -> type[asyncio.Protocol]:
    """Return an h11 protocol class that closes a connection whose request head is SECONDS late."""

    class BoundedH11Protocol(H11Protocol):
        head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self.head_timer = self.loop.call_later(seconds, self._head_late)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_late(self) -> None:
            self.head_timer = None
            if self.cycle is None or self.cycle.response_complete:  # still no request head
                logger.debug("closed a connection that sent no complete request in %s s", seconds)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request is in: the body's deadline and the app take over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return BoundedH11Protocol


class BodyDeadline:
    """ASGI middleware: a request's body has SECONDS to arrive in full; a slower client gets 408."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False

        async def bounded() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"The request's body did not arrive within {self.seconds:g} seconds.") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded, send)


__all__ = ["BodyDeadline", "bounded_protocol"]
