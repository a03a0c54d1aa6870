"""One message to one recipient, outside any issue (the sign-up confirmation), by the configured transport.

With the outbox transport the message lands in `outbox/_confirmations/mail/new/` (a Maildir: written
into tmp/, made durable, then renamed into new/, so a mail client never sees half a file). With the
smtp transport it goes through `delivery.smtp.send_one`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from pathlib import Path

from newsletter.errors import DeliveryError
from newsletter.files import fsync_dir, write_atomic
from newsletter.settings import Settings

logger = logging.getLogger(__name__)

CONFIRMATIONS_FOLDER = "_confirmations"


def confirmations_maildir(settings: Settings) -> Path:
    """Return the Maildir where the outbox transport puts single messages."""
    return settings.outbox_dir / CONFIRMATIONS_FOLDER / "mail"


def _unique_name() -> str:
    # the Maildir convention: time, something unique on this host, the host name
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{time.time_ns()}.P{os.getpid()}R{secrets.token_hex(6)}.{host}.eml"


def _write_maildir(maildir: Path, raw: bytes) -> Path:
    try:
        for folder in ("tmp", "new", "cur"):
            (maildir / folder).mkdir(parents=True, exist_ok=True)
        name = _unique_name()
        staged = write_atomic(maildir, f"tmp/{name}", raw)  # fsynced, inside the Maildir
        target = maildir / "new" / name
        os.rename(staged, target)
        fsync_dir(target.parent)
    except OSError as err:
        raise DeliveryError(f"{maildir}: cannot write the message: {err}") from err
    return target


def send_single(settings: Settings, raw: bytes, recipient: str) -> Path | None:
    """Send RAW to RECIPIENT by the configured transport; return the file written, if any."""
    transport = settings.delivery.transport
    if transport == "outbox":
        path = _write_maildir(confirmations_maildir(settings), raw)
        logger.info("wrote a message to %s into %s", recipient, path)
        return path
    if transport == "smtp":
        try:
            from newsletter.delivery.smtp import send_one
        except ImportError as err:
            raise DeliveryError(
                f"{settings.root / 'newsletter.toml'}: [delivery] transport = \"smtp\": SMTP sending is not "
                "available yet in this version; set transport = \"outbox\""
            ) from err
        send_one(settings, raw, recipient)
        logger.info("sent a message to %s by SMTP", recipient)
        return None
    raise DeliveryError(f"{settings.root / 'newsletter.toml'}: unknown [delivery] transport {transport!r}")


__all__ = ["CONFIRMATIONS_FOLDER", "confirmations_maildir", "send_single"]
