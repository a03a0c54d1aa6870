"""DKIM signing (EMAIL.md rule 20): one signer per issue from [dkim], or none when it is empty."""

from __future__ import annotations

import re
from collections.abc import Callable

from newsletter.addresses import ascii_domain
from newsletter.errors import HeaderError, SettingsError
from newsletter.settings import Settings


def sign(raw: bytes, settings: Settings | None = None) -> bytes:
    """Return RAW signed as SETTINGS' [dkim] asks (a one-off mail: a confirmation), else unchanged.

    Without SETTINGS this is the signer of messages when no DKIM key is configured; an issue's
    many messages use `dkim_signer` once instead.
    """
    return dkim_signer(settings)(raw) if settings is not None else raw


# --- DKIM (EMAIL.md rule 20) ---------------------------------------------------------------------

# The headers every signature covers. dkimpy leaves List-Unsubscribe-Post out by default; a mail
# provider honours one-click unsubscribe only when it is signed. A header named here but absent from
# a message (Reply-To) is signed as absent, so nobody can add it on the way.
DKIM_SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post", b"precedence", b"auto-submitted",
)
_DKIM_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class DkimSigner:
    """Sign final message bytes with one key: rsa-sha256, d= the From domain, `relaxed/simple`.

    Simple body canonicalization: our bodies are 7-bit quoted-printable with short lines and no
    trailing spaces, which relays leave alone, and it costs a third less than relaxed per message.
    """

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")
        self._key = private_key

    def __repr__(self) -> str:  # never the key
        return f"DkimSigner(selector={self.selector.decode()!r}, domain={self.domain.decode()!r})"

    def __call__(self, raw: bytes) -> bytes:
        """Return RAW with a DKIM-Signature header in front."""
        import dkim

        header = dkim.sign(
            raw, self.selector, self.domain, self._key, include_headers=list(DKIM_SIGNED_HEADERS),
            canonicalize=(b"relaxed", b"simple"), linesep=b"\r\n",
        )
        return header + raw


def _ascii_domain_name(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    return ascii_domain(domain)


def dkim_signer(settings: Settings) -> Callable[[bytes], bytes]:
    """Return the signer [dkim] asks for: `sign` (no signature) when it is empty, else a DkimSigner.

    Every problem is an error before anything is sent: half a configuration, a selector that is not
    a DNS label, a domain that is not the From domain (DMARC would fail), a key that cannot be read.
    """
    config = settings.dkim
    where = f"{settings.root / 'newsletter.toml'}: [dkim]"
    if not (config.selector or config.domain or config.key_file):
        return sign
    missing = [name for name in ("selector", "domain", "key_file") if not getattr(config, name)]
    if missing:
        raise SettingsError(f"{where} is half configured: {', '.join(missing)} missing "
                            "(set selector, domain and key_file, or none of them)")
    if not _DKIM_SELECTOR.fullmatch(config.selector):
        raise SettingsError(f"{where} selector {config.selector!r} is not a DNS label such as 'news2026'")
    try:
        domain, from_domain = _ascii_domain_name(config.domain), _ascii_domain_name(settings.sender_domain)
    except HeaderError as err:
        raise SettingsError(f"{where} domain {config.domain!r} is not a valid domain name: {err}") from err
    if domain != from_domain:
        raise SettingsError(
            f"{where} domain {config.domain!r} is not the From domain {settings.sender_domain!r}: "
            "receivers check DMARC alignment, so d= must be the domain of [sender] from"
        )
    path = settings.root / config.key_file
    try:
        key = path.read_bytes()
    except OSError as err:
        raise SettingsError(f"{where} key_file {str(path)!r}: cannot read it: {err.strerror or err}") from err
    signer = DkimSigner(config.selector, domain, key)
    try:
        signer(b"From: a@" + domain.encode("ascii") + b"\r\nSubject: key check\r\n\r\nbody\r\n")
    except Exception as err:  # dkimpy raises its own errors, and ValueError/IndexError on bad PEM
        raise SettingsError(f"{where} key_file {str(path)!r}: not a usable PEM private key ({err})") from err
    return signer


__all__ = ["DKIM_SIGNED_HEADERS", "DkimSigner", "dkim_signer", "sign"]
