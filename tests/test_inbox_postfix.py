"""A bounce written by a real MTA: a send through a test-only Postfix relays to aiosmtpd ("the internet"),
which refuses one recipient; Postfix writes its own DSN to that message's VERP envelope sender, and
`newsletter inbox --stdin` reads it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factories import DAY, LoopbackController, make_rendered
from newsletter import store, subscribers
from newsletter.cli import app
from factories import send_unchecked as send_issue
from newsletter.settings import load_settings, secret_key
from newsletter.verp import Verp

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
BOUNCES = "bounces@bounces.newsletter.example.org"


class Internet:
    """aiosmtpd as every other mail server: refuses gone@example.net, keeps the rest with their envelope."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == "gone@example.net":
            return "550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"

    def to(self, prefix: str) -> list[tuple[str, list[str], bytes]]:
        with self.lock:
            return [r for r in self.received if any(rcpt.startswith(prefix) for rcpt in r[1])]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _master_cf(port: int) -> str:
    """Debian's master.cf, with smtpd on 127.0.0.1:PORT and no chroot (the queue lives in a temp folder)."""
    lines = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line.startswith(("#", " ", "\t")) or len(fields) < 8:
            lines.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"127.0.0.1:{port}"
        fields[4] = "n"
        lines.append("  ".join(fields))
    return "\n".join(lines) + "\n"


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.newsletter.example.org
mydestination =
relayhost = [127.0.0.1]:{internet}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
smtputf8_enable = no
"""


@pytest.fixture
def postfix(request) -> Iterator[tuple[int, Internet]]:
    if not Path(POSTFIX).exists() or not Path("/etc/postfix/master.cf").exists():
        pytest.skip("Postfix is needed for the real-DSN test; .ci/run installs it")
    if os.geteuid() != 0:
        pytest.skip("a test-only Postfix instance needs root to start")
    internet = Internet()
    controller = LoopbackController(internet, hostname="127.0.0.1", port=0)
    controller.start()
    root = Path(tempfile.mkdtemp(prefix="newsletter-postfix-"))
    root.chmod(0o755)  # Postfix's unprivileged daemons walk to their queue
    conf = root / "conf"
    conf.mkdir()
    port = _free_port()
    (conf / "main.cf").write_text(MAIN_CF.format(root=root, internet=controller.port))
    (conf / "master.cf").write_text(_master_cf(port))
    (root / "queue").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix")
    started = subprocess.run([POSTFIX, "-c", str(conf), "start"], capture_output=True, text=True, timeout=60)
    try:
        if started.returncode != 0:
            log = (root / "maillog").read_text() if (root / "maillog").exists() else ""
            pytest.skip(f"the test Postfix did not start: {started.stderr}{log}")
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the test Postfix never listened"
                threading.Event().wait(0.05)
        yield port, internet
    finally:
        subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True, timeout=60)
        controller.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.1)


@pytest.mark.slow
def test_a_dsn_written_by_postfix_bounces_the_subscriber_its_verp_tag_names(project, postfix):
    port, internet = postfix
    settings = load_settings(project).replace("sender", bounce_address=BOUNCES).replace(
        "delivery", transport="smtp", concurrency=1).replace(
        "smtp", host="127.0.0.1", port=port, security="none", timeout=10.0)
    (project / "newsletter.toml").write_text(
        (project / "newsletter.toml").read_text().replace('bounce_address = ""', f'bounce_address = "{BOUNCES}"'))
    conn = store.connect(settings.database_path)
    gone = subscribers.add(conn, "gone@example.net").subscriber
    ada = subscribers.add(conn, "ada@example.com").subscriber
    send_issue(conn, settings, make_rendered())
    _wait_for(lambda: internet.to("bounces+") and internet.to("ada@"), "the DSN and ada's message")

    verp = Verp(secret_key(settings), settings.sender.list_id, BOUNCES)
    [(ada_sender, _, _)] = internet.to("ada@")
    assert ada_sender == verp.address(DAY, ada.id)  # Postfix kept our envelope sender
    [(dsn_sender, dsn_rcpt, dsn)] = internet.to("bounces+")
    assert dsn_sender in ("", "<>") and dsn_rcpt == [verp.address(DAY, gone.id)]  # the null sender
    assert b"report-type=delivery-status" in dsn and b"(Postfix)" in dsn

    # the MTA hands the DSN to the alias pipe; Delivered-To is what a local delivery adds
    piped = f"Delivered-To: {dsn_rcpt[0]}\r\n".encode() + dsn
    result = CliRunner().invoke(app, ["--project", str(project), "inbox", "--stdin"], input=piped)
    assert result.exit_code == 0, result.output
    assert "read 1 message: 1 bounce (1 permanent, 0 temporary)" in result.stdout
    assert subscribers.get(conn, "gone@example.net").status == "bounced"
    assert subscribers.get(conn, "ada@example.com").status == "active"
