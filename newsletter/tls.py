"""One TLS client context for every server the tool connects to (the SMTP relay, the IMAP inbox)."""

from __future__ import annotations

import ssl
from pathlib import Path

from newsletter.errors import NewsletterError


def client_context(root: Path, ca_file: str, verify: bool, where: str,
                   error: type[NewsletterError]) -> ssl.SSLContext:
    """Return a context trusting the system's CAs, or CA_FILE (relative to ROOT) instead; VERIFY off trusts anything.

    ERROR (raised with WHERE, the settings table) names a CA file that is missing or not PEM.
    """
    cafile = None
    if ca_file:
        path = root / ca_file
        if not path.is_file():
            raise error(f"{where} ca_file {str(path)!r} does not exist")
        cafile = str(path)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as err:
        raise error(f"{where} ca_file {cafile!r} is not a PEM certificate file: {err}") from err
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
