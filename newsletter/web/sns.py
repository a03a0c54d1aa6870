"""Amazon SNS messages posted to `newsletter serve`: their signature, their certificate, the confirmation.

SES reports bounces and complaints to an SNS topic, and SNS posts each message to our HTTPS
endpoint as JSON. A message is believed only when:
- its TopicArn is one of `[webhooks.ses] topics`;
- its SigningCertURL is https on an SNS host (`sns.<region>.amazonaws.com`, or the setting
  `cert_hosts`), fetched over verified TLS without following redirects, and the certificate is
  within its validity dates (kept in memory by URL, so one fetch serves many messages);
- its Signature is that certificate's RSA signature (PKCS#1 v1.5, SHA1 for SignatureVersion 1,
  SHA256 for 2) over the canonical string: the signed fields of its Type, in order, each as
  "Name\\nvalue\\n".
A SubscriptionConfirmation is then confirmed by fetching its SubscribeURL, under the same host
rule; any other URL is never fetched, whatever the message says.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import logging
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.web.services import WebhookRefused, read_json

logger = logging.getLogger(__name__)

AWS_HOSTS = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"  # the default of [webhooks.ses] cert_hosts
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION,
    "UnsubscribeConfirmation": _CONFIRMATION,
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
FETCH_LIMIT = 64 * 1024  # bytes of a certificate or a confirmation answer
FETCH_TIMEOUT = 10.0  # seconds
CACHED_CERTIFICATES = 32

Fetch = Callable[[str], bytes]


@dataclass(frozen=True)
class SnsMessage:
    """A verified SNS message: a Notification (its `message` is SES's JSON) or a (un)subscription."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    subscribe_url: str = ""


def canonical(fields: dict) -> bytes:
    """Return the string SNS signs for FIELDS: each signed field of its Type as "Name\\nvalue\\n"."""
    return "".join(f"{name}\n{fields[name]}\n" for name in SIGNED_FIELDS[fields["Type"]]
                   if fields.get(name) is not None).encode("utf-8")


def https_fetcher(ca_file: Path | None = None, timeout: float = FETCH_TIMEOUT, limit: int = FETCH_LIMIT) -> Fetch:
    """Return a function that GETs an https URL with verified TLS, no redirects, at most LIMIT bytes."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def fetch(url: str) -> bytes:
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=context)
        try:
            connection.request("GET", urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")))
            answer = connection.getresponse()
            body = answer.read(limit + 1)
        finally:
            connection.close()
        if answer.status != 200:
            raise WebhookRefused(403, f"ses: {parts.hostname} answered {answer.status} for {url}")
        if len(body) > limit:
            raise WebhookRefused(403, f"ses: {url} is over {limit:,} bytes")
        return body

    return fetch


class SnsVerifier:
    """Verify SNS messages for some topics, fetching signing certificates from allowed hosts only."""

    def __init__(self, topics: tuple[str, ...], fetch: Fetch, hosts: str = AWS_HOSTS) -> None:
        self.topics = frozenset(topics)
        self.fetch = fetch
        self.hosts = re.compile(hosts)
        self._certificates: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def check_url(self, url: str, what: str) -> str:
        """Return URL if it is https on an allowed host; else refuse (403): it is never fetched."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not self.hosts.fullmatch((parts.hostname or "").lower()):
            raise WebhookRefused(403, f"ses: the {what} {url!r} is not an https URL on an SNS host; not fetched")
        return url

    def verify(self, body: bytes, now: datetime) -> SnsMessage:
        """Return the message in BODY if SNS signed it for one of our topics; else refuse (400, 403)."""
        fields = read_json(body, "ses")
        kind = fields.get("Type")
        if kind not in SIGNED_FIELDS:
            raise WebhookRefused(400, f"ses: {kind!r} is not a type of SNS message")
        required = [name for name in SIGNED_FIELDS[kind] if name != "Subject"] + ["Signature", "SigningCertURL"]
        wrong = [name for name in required if not isinstance(fields.get(name), str)]
        if wrong or not isinstance(fields.get("Subject", ""), (str, type(None))):
            raise WebhookRefused(400, f"ses: the SNS message lacks {', '.join(wrong) or 'a string Subject'}")
        if fields["TopicArn"] not in self.topics:
            raise WebhookRefused(403, f"ses: topic {fields['TopicArn']!r} is not in [webhooks.ses] topics")
        algorithm = _HASHES.get(str(fields.get("SignatureVersion", "")))
        if algorithm is None:
            raise WebhookRefused(403, f"ses: SignatureVersion {fields.get('SignatureVersion')!r} is not 1 or 2")
        try:
            signature = base64.b64decode(fields["Signature"], validate=True)
        except binascii.Error:
            raise WebhookRefused(403, "ses: the Signature is not base64") from None
        certificate = self.certificate(fields["SigningCertURL"], now)
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRefused(403, f"ses: the certificate at {fields['SigningCertURL']} holds no RSA key")
        try:
            key.verify(signature, canonical(fields), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise WebhookRefused(403, "ses: the SNS signature does not match the message") from None
        return SnsMessage(kind, fields["MessageId"], fields["TopicArn"], fields["Message"],
                          fields.get("SubscribeURL", ""))

    def certificate(self, url: str, now: datetime) -> x509.Certificate:
        """Return the signing certificate at URL (cached), refusing a bad host or an expired certificate."""
        self.check_url(url, "SigningCertURL")
        with self._lock:
            certificate = self._certificates.get(url)
        if certificate is None:
            try:
                certificate = x509.load_pem_x509_certificate(self._get(url))
            except ValueError as err:
                raise WebhookRefused(403, f"ses: {url} is not a PEM certificate: {err}") from None
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise WebhookRefused(403, f"ses: the certificate at {url} is not valid at {now:%Y-%m-%d %H:%M} UTC")
        with self._lock:
            self._certificates[url] = certificate
            while len(self._certificates) > CACHED_CERTIFICATES:
                del self._certificates[next(iter(self._certificates))]
        return certificate

    def confirm(self, message: SnsMessage) -> None:
        """Confirm a subscription to one of our topics by fetching its SubscribeURL (allowed hosts only)."""
        self._get(self.check_url(message.subscribe_url, "SubscribeURL"))
        logger.info("confirmed the SNS subscription to %s", message.topic_arn)

    def _get(self, url: str) -> bytes:
        try:
            return self.fetch(url)
        except (OSError, http.client.HTTPException) as err:  # the network, not the sender: SNS retries a 503
            logger.warning("cannot fetch %s: %s", url, err)
            raise WebhookRefused(503, f"ses: cannot fetch {url}: {err}", {"Retry-After": "60"}) from err


__all__ = ["AWS_HOSTS", "SIGNED_FIELDS", "SnsMessage", "SnsVerifier", "canonical", "https_fetcher"]
