"""uvicorn's h11 protocol with the one bound it lacks: a deadline for a request's headers.

uvicorn closes a connection left idle after a response (`timeout_keep_alive`), but a client that
connects and sends nothing, or trickles its headers a byte at a time, is kept for ever; with
`limit_concurrency` such connections make everyone else get 503. Here each connection must deliver
a complete request head within SECONDS of connecting or of its previous response, else it is
closed. The body has its own deadline (app._BodyDeadline); the head's size is bounded by
`h11_max_incomplete_event_size`.
"""

from __future__ import annotations

import asyncio
import logging

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


__all__ = ["bounded_protocol"]
