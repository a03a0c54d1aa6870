"""A certificate authority of the test's own, an HTTPS server on 127.0.0.1, and SNS messages signed
as SNS signs them: the real parts of the SES webhook's tests (test_sns.py, test_webhooks.py)."""

from __future__ import annotations

import base64
import functools
import http.server
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.web.sns import canonical

TOPIC = "arn:aws:sns:eu-west-1:123456789012:newsletter-feedback"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass
class Authority:
    """A CA that issues a TLS certificate for 127.0.0.1 and an SNS-like signing certificate."""

    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def __post_init__(self) -> None:
        now = datetime.now(timezone.utc)
        self.certificate = (x509.CertificateBuilder().subject_name(_name("Test CA")).issuer_name(_name("Test CA"))
                            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
                            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                            .sign(self.key, hashes.SHA256()))

    def issue(self, common: str, days: int = 30, ip: str = "") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(self.certificate.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days)))
        if ip:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                            critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    @functools.cached_property
    def localhost(self) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        """The TLS key and certificate of 127.0.0.1 (made once: RSA keys take a while)."""
        return self.issue("127.0.0.1", ip="127.0.0.1")

    def write(self, path: Path) -> Path:
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class HttpsServer:
    """An HTTPS server on 127.0.0.1 serving FILES by path; every GET it answers is in `requests`."""

    def __init__(self, authority: Authority, tmp: Path, files: dict[str, bytes]) -> None:
        key, certificate = authority.localhost
        (tmp / "server.pem").write_bytes(pem(certificate))
        (tmp / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        self.files = files
        self.requests: list[str] = []
        self.hit = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                body = server.files.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")
                server.hit.set()

            def log_message(self, *args) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "server.pem", tmp / "server.key")
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sign(fields: dict, key: rsa.RSAPrivateKey, version: str = "2") -> dict:
    """Return FIELDS with SignatureVersion and the Signature SNS would give them with KEY."""
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = key.sign(canonical(fields), padding.PKCS1v15(), algorithm)
    return {**fields, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode("ascii")}


def notification(message: dict, cert_url: str, key: rsa.RSAPrivateKey, version: str = "2",
                 message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", topic: str = TOPIC) -> dict:
    """Return a signed SNS Notification carrying MESSAGE (an SES notification) as its JSON string."""
    return sign({
        "Type": "Notification", "MessageId": message_id, "TopicArn": topic,
        "Message": json.dumps(message), "Timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "SigningCertURL": cert_url, "UnsubscribeURL": cert_url.rsplit("/", 1)[0] + "/?Action=Unsubscribe",
    }, key, version)


def confirmation(subscribe_url: str, cert_url: str, key: rsa.RSAPrivateKey, topic: str = TOPIC) -> dict:
    """Return a signed SNS SubscriptionConfirmation whose SubscribeURL is SUBSCRIBE_URL."""
    return sign({
        "Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425c464de12884c0", "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, "
                   "visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url, "Timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "SigningCertURL": cert_url,
    }, key)


def ses_bounce(address: str, bounce_type: str = "Permanent", status: str = "5.1.1",
               message_id: str = "", feedback_id: str = "0100018c-bounce-0001") -> dict:
    """Return an SES bounce notification for ADDRESS, as SES publishes it to SNS."""
    mail = {"timestamp": "2026-11-26T06:00:05.000Z", "source": "bulletin@newsletter.example.org",
            "messageId": "0100018c1f2e3d4c-5b6a7980-aaaa-bbbb-cccc-123456789abc-000000",
            "destination": [address]}
    if message_id:
        mail |= {"headersTruncated": False, "headers": [{"name": "Message-ID", "value": message_id}],
                 "commonHeaders": {"from": ["bulletin@newsletter.example.org"], "to": [address],
                                   "messageId": message_id, "subject": "The bulletin"}}
    return {"notificationType": "Bounce", "mail": mail, "bounce": {
        "bounceType": bounce_type, "bounceSubType": "General", "feedbackId": feedback_id,
        "timestamp": "2026-11-26T06:00:07.000Z", "reportingMTA": "dsn; a1-2.smtp-out.eu-west-1.amazonses.com",
        "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": status,
                               "diagnosticCode": f"smtp; 550 {status} <{address}>... User unknown"}]}}


def ses_complaint(address: str, feedback_id: str = "0100018c-complaint-0001") -> dict:
    """Return an SES complaint notification for ADDRESS (a feedback-loop report passed on by SES)."""
    return {"notificationType": "Complaint", "mail": {
        "timestamp": "2026-11-26T06:00:05.000Z", "source": "bulletin@newsletter.example.org",
        "messageId": "0100018c1f2e3d4c-complained-000000", "destination": [address]},
        "complaint": {"userAgent": "ExampleCorp Feedback Loop (V0.01)", "complainedRecipients": [{"emailAddress": address}],
                      "complaintFeedbackType": "abuse", "arrivalDate": "2026-11-26T09:14:00.000Z",
                      "timestamp": "2026-11-26T09:14:02.000Z", "feedbackId": feedback_id}}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority()


@pytest.fixture(scope="module")
def signer(authority):
    """The key and certificate SNS would sign with (issued by the test's CA)."""
    return authority.issue("sns.eu-west-1.amazonaws.com")


@pytest.fixture
def aws(authority, signer, tmp_path):
    """An HTTPS server on 127.0.0.1 serving the signing certificate and a subscription's confirmation."""
    folder = tmp_path / "aws"
    folder.mkdir()
    server = HttpsServer(authority, folder, {"/SimpleNotificationService-test.pem": pem(signer[1]),
                                             "/confirm": b"<ConfirmSubscriptionResponse/>"})
    server.cert_url = server.url + "/SimpleNotificationService-test.pem"
    server.ca_file = authority.write(folder / "ca.pem")
    yield server
    server.stop()
