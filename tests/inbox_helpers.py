"""Helpers shared by the inbox tests: a project that reads its bounces, and the fixture messages made personal."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

from newsletter import messages, store, subscribers
from newsletter.settings import Settings, load_settings, secret_key
from newsletter.verp import Verp

FIXTURES = Path(__file__).parent / "fixtures" / "inbox"
DAY = date(2026, 11, 30)
BOUNCE_ADDRESS = "bounces@bounces.newsletter.example.org"
LIST_ID = "ssb.newsletter.example.org"

# each fixture, the address it is about, and that address's status after the inbox read it
EXPECTED = {
    "postfix_permanent.eml": ("gone@example.net", "bounced"),
    "exim_permanent.eml": ("gone@example.net", "bounced"),
    "exchange_permanent.eml": ("left@contoso.example.com", "bounced"),
    "exchange_legacy.eml": ("olduser@legacy.example.com", "bounced"),
    "gmail_permanent.eml": ("nobody.here@gmail.example.com", "bounced"),
    "yahoo_permanent.eml": ("closed@yahoo.example.com", "bounced"),
    "qmail_permanent.eml": ("moved@qmail.example.org", "bounced"),
    "gmail_quota.eml": ("full@example.net", "active"),  # one temporary bounce: counted
    "postfix_expired.eml": ("full@example.net", "active"),
    "postfix_delayed.eml": ("slow@example.net", "active"),  # a warning only
    "arf_yahoo.eml": ("complainer@yahoo.example.com", "unsubscribed"),
    "arf_microsoft_redacted.eml": ("complainer@yahoo.example.com", "unsubscribed"),
    "arf_other_list.eml": ("ada@example.com", "active"),
    "out_of_office_outlook.eml": ("ada@example.com", "active"),
    "vacation_gmail.eml": ("bob@example.com", "active"),
    "out_of_office_plain.eml": ("cy@example.org", "active"),
    "mailto_unsubscribe.eml": ("dee@example.com", "unsubscribed"),
    "mailto_token_in_body.eml": ("dee@example.com", "unsubscribed"),
    "mailto_no_token.eml": ("ada@example.com", "active"),
    "question.eml": ("fay@example.com", "active"),
}


def configure(project: Path, *, bounce_address: str = BOUNCE_ADDRESS, extra: str = "") -> Settings:
    """Give PROJECT (made by init) the list id, unsubscribe and bounce addresses the fixtures name."""
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8")
    text = text.replace('list_id = "bulletin.newsletter.example.org"', f'list_id = "{LIST_ID}"')
    text = text.replace('bounce_address = ""', f'bounce_address = "{bounce_address}"')
    path.write_text(text + extra, encoding="utf-8")
    return load_settings(project)


def add_everyone(settings: Settings) -> sqlite3.Connection:
    """Put every address the fixtures name on the list, active."""
    conn = store.connect(settings.database_path)
    for address in sorted({address for address, _ in EXPECTED.values()}):
        subscribers.add(conn, address)
    return conn


def personal(name: str, settings: Settings, conn: sqlite3.Connection, about: str | None = None,
             day: date = DAY) -> bytes:
    """Return fixture NAME with its VERP address and unsubscribe token made for ABOUT (default: its own address)."""
    raw = (FIXTURES / name).read_bytes()
    person = subscribers.get(conn, about or EXPECTED[name][0])
    key = secret_key(settings)
    verp = Verp(key, settings.sender.list_id, settings.sender.bounce_address or BOUNCE_ADDRESS)
    token = messages.unsubscribe_token(key, person.id, settings.sender.list_id)
    return raw.replace(b"VERP_ADDRESS", verp.address(day, person.id).encode()).replace(
        b"UNSUBSCRIBE_TOKEN", token.encode())


def status(conn: sqlite3.Connection, address: str) -> str:
    return subscribers.get(conn, address).status
