"""DKIM signing (EMAIL.md rule 20): the one signer of every message, made from [dkim].

`dkim_signer(settings)` is the entry point: it returns `sign` (no signature) when [dkim] is empty,
else a `DkimSigner`. Call the signer on a message's final bytes (a confirmation, a proof, a
digest: `sign(raw, settings)` for a one-off); an issue's `MessageTemplate` asks it once for
`prepare(segments)` and signs each spliced message with the shared body hashed once per issue
(dkim_canon.SplicedBody). RSA-SHA256 (2048 bits or more) and, when configured, Ed25519-SHA256
(RFC 8463) as a second signature, both through OpenSSL (`cryptography`). dkimpy verifies in the
tests; `DkimpySigner` (the signer before, pure-Python RSA) is the reference the benchmark compares.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from newsletter.addresses import ascii_domain
from newsletter.dkim_canon import (
    Canonicalization, SignedHeaders, SplicedBody, body_hash, head_of, head_segments, split_message,
)
from newsletter.errors import HeaderError, SettingsError
from newsletter.settings import Settings


def sign(raw: bytes, settings: Settings | None = None) -> bytes:
    """Return RAW signed as SETTINGS' [dkim] asks (a one-off mail: a confirmation), else unchanged.

    Without SETTINGS this is the signer of messages when no DKIM key is configured; an issue's
    many messages use `dkim_signer` once instead.
    """
    return dkim_signer(settings)(raw) if settings is not None else raw


# The headers every signature covers. dkimpy leaves List-Unsubscribe-Post out by default; a mail
# provider honours one-click unsubscribe only when it is signed. A header named here but absent from
# a message (Reply-To) is signed as absent, so nobody can add it on the way.
DKIM_SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post", b"precedence", b"auto-submitted",
)
MIN_RSA_BITS = 2048
_DKIM_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_LINE = 78  # where the DKIM-Signature header is folded
_BH_SLOT = b"#" * 44  # where bh= goes in a folded header
_PKCS1, _SHA256 = padding.PKCS1v15(), hashes.SHA256()


@dataclass(frozen=True)
class SigningKey:
    """One private key and the selector that publishes its public half."""

    selector: bytes
    private: RSAPrivateKey | Ed25519PrivateKey

    def __repr__(self) -> str:  # never the key
        return f"SigningKey({self.selector.decode()!r}, {self.algorithm.decode()})"

    @property
    def algorithm(self) -> bytes:
        return b"ed25519-sha256" if isinstance(self.private, Ed25519PrivateKey) else b"rsa-sha256"

    def sign(self, data: bytes) -> bytes:
        """Return the signature of DATA (the header hash input) for the b= tag."""
        if isinstance(self.private, Ed25519PrivateKey):  # RFC 8463: Ed25519 over the SHA-256 digest
            return self.private.sign(hashlib.sha256(data).digest())
        return self.private.sign(data, _PKCS1, _SHA256)


def _fold(pieces: Sequence[bytes], line: bytes) -> tuple[bytes, bytes]:
    """Append PIECES to LINE, starting a new line (CRLF, space) where one would pass _LINE octets."""
    done = []
    for piece in pieces:
        if len(line) + len(piece) > _LINE and line.strip():
            done.append(line)
            line = b" " + piece.lstrip(b" ")
        else:
            line += piece
    return b"\r\n".join(done + [b""]) if done else b"", line


class DkimSigner:
    """Sign messages for DOMAIN with each of KEYS: one DKIM-Signature header per key, the first on top."""

    def __init__(self, domain: str, keys: Sequence[SigningKey], canonicalization: str = "relaxed/simple",
                 headers: Sequence[bytes] = DKIM_SIGNED_HEADERS, clock: Callable[[], float] = time.time) -> None:
        self.domain = domain.encode("ascii")
        self.keys = tuple(keys)
        self.canon = Canonicalization(canonicalization)
        self.headers = tuple(headers)
        self._clock = clock
        names = [name + b":" for name in self.headers]
        names[-1] = names[-1][:-1]
        self._h = names  # the h= value, in pieces it may be folded between
        self._fields = SignedHeaders(self.canon, self.headers)
        # per key: the moment of the last prefix made, and that prefix as written and canonical, cut at bh=
        self._prefixes: dict[bytes, tuple[int, tuple[bytes, bytes], tuple[bytes, bytes]]] = {}

    def __repr__(self) -> str:
        return f"DkimSigner(domain={self.domain.decode()!r}, keys={list(self.keys)!r}, {self.canon.value})"

    def __call__(self, raw: bytes) -> bytes:
        """Return RAW (final bytes, CRLF line ends) with the DKIM-Signature headers in front."""
        head, body = split_message(raw)
        return self.signature(head, hashlib.sha256(self.canon.body(body)).digest(), int(self._clock())) + raw

    def prepare(self, segments: Sequence[bytes]) -> SplicedSigner | None:
        """Return a signer for messages spliced from SEGMENTS, its shared body hashed now (None: sign whole)."""
        spliced = SplicedBody.make(self.canon, segments)
        return SplicedSigner(self, tuple(segments), spliced) if spliced is not None else None

    def signature(self, head: bytes, digest: bytes, moment: int, fields: SignedHeaders | None = None) -> bytes:
        """Return the DKIM-Signature headers for the header block HEAD and the body's SHA-256 DIGEST.

        FIELDS canonicalizes HEAD's signed fields (a template's, with its static fields done once);
        they are the same data for every key, so they are made once per message.
        """
        out = []
        bh = body_hash(digest)
        signed = (fields or self._fields).data(head)
        for key in self.keys:
            written, canonical = self._prefix(key, moment)
            value = base64.b64encode(key.sign(signed + canonical[0] + bh + canonical[1]))
            # folded: " b=" and 75 octets, then 77 a line
            rest = b"".join(b"\r\n " + value[i:i + _LINE - 1] for i in range(_LINE - 3, len(value), _LINE - 1))
            out.append(written[0] + bh + written[1] + value[: _LINE - 3] + rest + b"\r\n")
        return b"".join(out)

    def _prefix(self, key: SigningKey, moment: int) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        """Return KEY's DKIM-Signature header up to its empty b= (what is signed), as written and in
        canonical form (no final CRLF), each cut where the bh= value goes."""
        cached = self._prefixes.get(key.selector)
        if cached is not None and cached[0] == moment:
            return cached[1], cached[2]
        # folded once per key and moment: bh= is always 44 octets (SHA-256 in base64), and neither
        # it nor the slot holds a space or a line break, so canonicalizing around the slot is exact
        first = (b"DKIM-Signature: v=1; a=" + key.algorithm + b"; c=" + self.canon.value.encode()
                 + b"; d=" + self.domain + b";")
        folded, line = _fold([b" s=" + key.selector + b";", b" t=%d;" % moment, b" q=dns/txt;", b" h="]
                             + self._h + [b";", b" bh=" + _BH_SLOT + b";"], first)
        prefix = folded + line + b"\r\n b="
        written, canonical = _cut(prefix), _cut(self.canon.header(prefix)[:-2])
        self._prefixes[key.selector] = (moment, written, canonical)  # one moment kept: `serve` signs for months
        return written, canonical


def _cut(prefix: bytes) -> tuple[bytes, bytes]:
    before, after = prefix.split(_BH_SLOT)
    return before, after


class SplicedSigner:
    """The signer of one template's messages: the header hash per message, the body's shared part once."""

    def __init__(self, signer: DkimSigner, segments: tuple[bytes, ...], body: SplicedBody) -> None:
        self._signer = signer
        self._segments = segments
        self._body = body
        self._fields = SignedHeaders(signer.canon, signer.headers, head_segments(segments, body))
        self._moment = int(signer._clock())  # t=: when the signing started

    def signature(self, values: Sequence[bytes]) -> bytes:
        """Return the DKIM-Signature headers of the message SEGMENTS and VALUES (one per slot) make."""
        digest = self._body.hash(values)
        if digest is None:  # a value that does not end a line: canonicalize this message whole
            parts = [self._segments[0]]
            for value, segment in zip(values, self._segments[1:]):
                parts += (value, segment)
            body = split_message(b"".join(parts))[1]
            digest = hashlib.sha256(self._signer.canon.body(body)).digest()
        return self._signer.signature(head_of(self._segments, values, self._body), digest, self._moment, self._fields)


class DkimpySigner:
    """The reference signer: dkimpy's `dkim.sign` (pure-Python RSA, the whole body per message)."""

    def __init__(self, signer: DkimSigner) -> None:
        self._signer = signer

    def __call__(self, raw: bytes) -> bytes:
        import dkim

        out = b""
        for key in self._signer.keys:
            private = key.private
            if isinstance(private, Ed25519PrivateKey):
                pem = base64.b64encode(private.private_bytes(
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
            else:
                pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption())
            header_canon, body_canon = self._signer.canon.value.encode().split(b"/")
            out += dkim.sign(raw, key.selector, self._signer.domain, pem, include_headers=list(self._signer.headers),
                             canonicalize=(header_canon, body_canon), linesep=b"\r\n",
                             signature_algorithm=key.algorithm)
        return out + raw


# --- from the settings --------------------------------------------------------------------------

def _load_key(path_text: str, settings: Settings, setting: str, ed25519: bool) -> RSAPrivateKey | Ed25519PrivateKey:
    where = f"{settings.root / 'newsletter.toml'}: [dkim]"
    path = settings.root / path_text
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SettingsError(f"{where} {setting} {str(path)!r}: cannot read it: {err.strerror or err}") from err
    kind = "Ed25519" if ed25519 else "RSA"
    try:
        if ed25519 and b"-----BEGIN" not in data:  # dknewkey's form: the 32-byte seed in base64
            return Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip(), validate=True))
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, binascii.Error) as err:
        raise SettingsError(f"{where} {setting} {str(path)!r}: not a usable PEM private key ({err})") from err
    if ed25519 and isinstance(key, Ed25519PrivateKey):
        return key
    if not ed25519 and isinstance(key, RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise SettingsError(f"{where} {setting} {str(path)!r}: an RSA key of {key.key_size} bits; DKIM keys need "
                                f"{MIN_RSA_BITS} bits or more (`openssl genrsa -out dkim.pem 2048`)")
        return key
    raise SettingsError(f"{where} {setting} {str(path)!r}: not an {kind} private key "
                        f"({type(key).__name__.removeprefix('_')})")


def _selector(value: str, where: str, setting: str) -> bytes:
    if not _DKIM_SELECTOR.fullmatch(value):
        raise SettingsError(f"{where} {setting} {value!r} is not a DNS label such as 'news2026'")
    return value.encode("ascii")


def _ascii_domain_name(domain: str) -> str:
    return ascii_domain(domain.strip().rstrip(".").lower())


def dkim_signer(settings: Settings, *, reference: bool = False) -> Callable[[bytes], bytes]:
    """Return the signer [dkim] asks for: `sign` (no signature) when it is empty, else a DkimSigner.

    REFERENCE returns dkimpy's signer with the same keys instead (for the benchmark). Every problem
    is an error before anything is sent: half a configuration, a selector that is not a DNS label,
    a domain that is not the From domain (DMARC would fail), a key that cannot be read or is too short.
    """
    config = settings.dkim
    where = f"{settings.root / 'newsletter.toml'}: [dkim]"
    if not (config.selector or config.domain or config.key_file or config.ed25519_selector or config.ed25519_key_file):
        return sign
    missing = [name for name in ("selector", "domain", "key_file") if not getattr(config, name)]
    if missing:
        raise SettingsError(f"{where} is half configured: {', '.join(missing)} missing "
                            "(set selector, domain and key_file, or none of them)")
    if bool(config.ed25519_selector) != bool(config.ed25519_key_file):
        raise SettingsError(f"{where} is half configured: set both ed25519_selector and ed25519_key_file, or neither")
    if config.canonicalization not in Canonicalization.NAMES:
        raise SettingsError(f"{where} canonicalization {config.canonicalization!r} is not one of "
                            f"{', '.join(Canonicalization.NAMES)}")
    keys = [SigningKey(_selector(config.selector, where, "selector"),
                       _load_key(config.key_file, settings, "key_file", ed25519=False))]
    if config.ed25519_selector:
        if config.ed25519_selector.lower() == config.selector.lower():
            raise SettingsError(f"{where} ed25519_selector {config.ed25519_selector!r} is the RSA selector: "
                                "each key needs a DNS record of its own")
        keys.append(SigningKey(_selector(config.ed25519_selector, where, "ed25519_selector"),
                               _load_key(config.ed25519_key_file, settings, "ed25519_key_file", ed25519=True)))
    try:
        domain, from_domain = _ascii_domain_name(config.domain), _ascii_domain_name(settings.sender_domain)
    except HeaderError as err:
        raise SettingsError(f"{where} domain {config.domain!r} is not a valid domain name: {err}") from err
    if domain != from_domain:
        raise SettingsError(
            f"{where} domain {config.domain!r} is not the From domain {settings.sender_domain!r}: "
            "receivers check DMARC alignment, so d= must be the domain of [sender] from"
        )
    signer = DkimSigner(domain, keys, config.canonicalization)
    return DkimpySigner(signer) if reference else signer


__all__ = ["DKIM_SIGNED_HEADERS", "DkimSigner", "DkimpySigner", "SigningKey", "SplicedSigner", "dkim_signer", "sign"]
