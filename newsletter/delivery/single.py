"""One message to one recipient, outside any issue (the sign-up confirmation), by the configured transport.

With the outbox transport the message lands in `outbox/_confirmations/mail/new/` (a Maildir: written
into tmp/, made durable, then renamed into new/, so a mail client never sees half a file). With the
smtp transport it goes out over one connection.
"""

from __future__ import annotations

from pathlib import Path

from newsletter.delivery.outbox import CONFIRMATIONS_FOLDER
from newsletter.delivery.transport import open_transport
from newsletter.settings import Settings


def confirmations_maildir(settings: Settings) -> Path:
    """Return the Maildir where the outbox transport puts single messages."""
    return settings.outbox_dir / CONFIRMATIONS_FOLDER / "mail"


def send_single(settings: Settings, raw: bytes, recipient: str) -> Path | None:
    """Send RAW to RECIPIENT by the configured transport; return the file written, if any."""
    carrier = open_transport(settings)
    try:
        return carrier.deliver_one(raw, recipient)
    finally:
        carrier.close()


__all__ = ["CONFIRMATIONS_FOLDER", "confirmations_maildir", "send_single"]
