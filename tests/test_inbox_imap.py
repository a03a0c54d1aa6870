"""`newsletter inbox` over IMAP: a real Dovecot on 127.0.0.1, with its own configuration, a Maildir the
test fills and a TLS certificate the test makes."""

from __future__ import annotations

import mailbox
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app

from inbox_helpers import add_everyone, configure, personal, status

DOVECOT = Path("/usr/sbin/dovecot")
USER, PASSWORD = "bulletin-bounces", "a-test-password"


@dataclass
class Dovecot:
    port: int
    home: Path
    cert: Path

    def deliver(self, raw: bytes) -> None:
        """Put RAW in the mailbox's INBOX, as the MTA would."""
        box = mailbox.Maildir(self.home / "Maildir", create=True)
        key = box.add(raw)
        box.close()
        _give_to_nobody(self.home)
        assert key

    def folder(self, name: str) -> list[Path]:
        """Return the message files of folder NAME (Maildir++ layout: INBOX is the top)."""
        top = self.home / "Maildir" / ("" if name == "INBOX" else f".{name}")
        return [f for sub in ("new", "cur") if (top / sub).is_dir() for f in (top / sub).iterdir()]


def _give_to_nobody(path: Path) -> None:
    for folder, _, files in os.walk(path):
        shutil.chown(folder, "nobody", "nogroup")
        for name in files:
            shutil.chown(os.path.join(folder, name), "nobody", "nogroup")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
service imap-login {{
  chroot =
  inbound_listener_placeholder
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if not DOVECOT.exists() or shutil.which("openssl") is None:
        pytest.skip("Dovecot (Debian dovecot-imapd) and openssl are needed for the IMAP tests; .ci/run installs them")
    if os.geteuid() != 0:
        pytest.skip("the Dovecot test runs the server as root with its mail owned by 'nobody'")
    # not under tmp_path: Dovecot's unprivileged processes must be able to walk to their files
    root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    root.chmod(0o755)
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"), "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        home = root / "mail"
        home.mkdir()
        mailbox.Maildir(home / "Maildir", create=True).close()
        _give_to_nobody(home)
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:65534:65534::{home}\n")
        port = _free_port()
        config = CONFIG.format(root=root, port=port).replace("  inbound_listener_placeholder\n", "")
        (root / "dovecot.conf").write_text(config)
        server = subprocess.Popen([str(DOVECOT), "-F", "-c", str(root / "dovecot.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
                    server.kill()
                    pytest.fail(f"Dovecot did not start: {server.stderr.read().decode() if server.stderr else ''}{log}")
                threading.Event().wait(0.05)  # polling a port with a deadline: Dovecot has no readiness signal
        try:
            yield Dovecot(port, home, root / "cert.pem")
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def imap_project(project: Path, server: Dovecot, **changes: str) -> None:
    values = {"host": '"127.0.0.1"', "port": str(server.port), "username": f'"{USER}"',
              "ca_file": f'"{server.cert}"', **changes}
    text = (project / "newsletter.toml").read_text()
    for key, value in values.items():
        lines = [line for line in text.splitlines() if line.startswith(f"{key} = ")]
        # the [inbox] table is the last in the file init writes: change its line, the last of that key
        head, _, tail = text.rpartition(lines[-1])
        text = head + f"{key} = {value}" + tail
    (project / "newsletter.toml").write_text(text)


def inbox_cli(project: Path, password: str = PASSWORD):
    return CliRunner().invoke(app, ["--project", str(project), "inbox"],
                              env={"NEWSLETTER_INBOX_PASSWORD": password})


def test_inbox_reads_dovecot_over_tls_and_moves_each_message_where_it_belongs(project, dovecot):
    settings = configure(project)
    conn = add_everyone(settings)
    imap_project(project, dovecot)
    for name in ("postfix_permanent.eml", "arf_yahoo.eml", "out_of_office_outlook.eml", "question.eml",
                 "mailto_unsubscribe.eml"):
        dovecot.deliver(personal(name, settings, conn))
    result = inbox_cli(project)
    assert result.exit_code == 0, result.output
    assert f"127.0.0.1:{dovecot.port}: read 5 messages: 1 bounce (1 permanent, 0 temporary), 1 complaint, " \
           "1 unsubscribe, 1 auto-reply ignored, 1 left for a human; 3 subscribers changed" in result.stdout
    assert [status(conn, a) for a in ("gone@example.net", "complainer@yahoo.example.com", "dee@example.com",
                                      "ada@example.com")] == ["bounced", "unsubscribed", "unsubscribed", "active"]
    assert (len(dovecot.folder("INBOX")), len(dovecot.folder("Processed")), len(dovecot.folder("For a human"))) == (0, 4, 1)
    again = inbox_cli(project)
    assert "read 0 messages" in again.stdout


def test_flag_mode_leaves_messages_in_place_and_reads_each_once(project, dovecot):
    settings = configure(project)
    conn = add_everyone(settings)
    imap_project(project, dovecot, processed='"flag"')
    dovecot.deliver(personal("gmail_quota.eml", settings, conn))
    dovecot.deliver(personal("question.eml", settings, conn))
    assert "read 2 messages" in inbox_cli(project).stdout
    assert "read 0 messages" in inbox_cli(project).stdout
    assert len(dovecot.folder("INBOX")) == 2 and not dovecot.folder("Processed")


def test_a_huge_message_on_the_server_is_never_fetched(project, dovecot):
    settings = configure(project)
    conn = add_everyone(settings)
    imap_project(project, dovecot)
    dovecot.deliver(personal("postfix_permanent.eml", settings, conn) + b"x" * (30 * 1024 * 1024))
    result = inbox_cli(project)
    assert "left for a human: larger than 10000000 bytes: not read" in result.stdout
    assert status(conn, "gone@example.net") == "active"
    assert len(dovecot.folder("For a human")) == 1


def test_a_wrong_password_or_an_untrusted_certificate_is_one_clear_error(project, dovecot):
    configure(project)
    imap_project(project, dovecot)
    result = inbox_cli(project, password="wrong")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: 127.0.0.1:{dovecot.port}: login failed for '{USER}'")
    imap_project(project, dovecot, ca_file='""')
    result = inbox_cli(project)
    assert result.exit_code == 1
    assert f"Error: 127.0.0.1:{dovecot.port}: cannot connect over TLS: " in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    result = inbox_cli(project, password="")
    assert "NEWSLETTER_INBOX_PASSWORD is empty" in result.stderr


@pytest.mark.slow
def test_the_scheduler_reads_the_mailbox_when_inbox_is_set(project, dovecot, monkeypatch):
    from test_schedule import wait_for
    from test_schedule_e2e import Scheduler

    settings = configure(project)
    conn = add_everyone(settings)
    imap_project(project, dovecot)
    dovecot.deliver(personal("postfix_permanent.eml", settings, conn))
    monkeypatch.setenv("NEWSLETTER_INBOX_PASSWORD", PASSWORD)
    scheduler = Scheduler(project)
    try:
        wait_for(lambda: scheduler.logged("read 1 message: 1 bounce"), "the scheduler's inbox run")
    finally:
        scheduler.terminate()
        scheduler.kill()
    assert status(conn, "gone@example.net") == "bounced"


def test_delete_mode_deletes_what_was_acted_on_and_keeps_what_is_for_a_human(project, dovecot):
    settings = configure(project)
    conn = add_everyone(settings)
    imap_project(project, dovecot, processed='"delete"')
    dovecot.deliver(personal("postfix_permanent.eml", settings, conn))
    dovecot.deliver(personal("question.eml", settings, conn))
    assert "read 2 messages" in inbox_cli(project).stdout
    assert (len(dovecot.folder("INBOX")), len(dovecot.folder("For a human"))) == (0, 1)
    assert not dovecot.folder("Processed")
