"""Settings: defaults < newsletter.toml < environment (secrets only) < flags, read once, frozen."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import secrets
import sqlite3
import tempfile
import tomllib
import typing
from dataclasses import dataclass, field
from email import policy as email_policy
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.errors import NewsletterError, ProjectError, SettingsError
from newsletter.i18n import check_language
from newsletter.rules import https_only

CONFIG_NAME = "newsletter.toml"
SECRET_KEY_ENV = "NEWSLETTER_SECRET_KEY"
SMTP_PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"
INBOX_PASSWORD_ENV = "NEWSLETTER_INBOX_PASSWORD"
DATABASE_URL_ENV = "NEWSLETTER_DATABASE_URL"  # the whole URL, password included: overrides [database] url
DATABASE_PASSWORD_ENV = "NEWSLETTER_DATABASE_PASSWORD"  # the password of [database] url
SECRET_KEY_FILE = "subscribers/secret.key"
WEBHOOK_SECRET_ENV = {"postmark": "NEWSLETTER_POSTMARK_PASSWORD", "mailgun": "NEWSLETTER_MAILGUN_SIGNING_KEY"}
WEBHOOK_SECRET_WHAT = {"postmark": "password of the webhook's HTTP basic auth in Postmark",
                       "mailgun": "HTTP webhook signing key in Mailgun's dashboard"}
SECRET_KEY_MIN_BYTES = 32  # the HMAC-SHA256 key length; shorter keys are guessable


@dataclass(frozen=True)
class NewsletterSettings:
    name: str = "Newsletter"
    tagline: str = ""
    short_name: str = ""  # empty: the name
    base_url: str = "https://newsletter.example.org"
    language: str = "en"
    timezone: str = "UTC"


@dataclass(frozen=True)
class SenderSettings:
    from_address: str = ""  # required to send: a message without it is refused
    reply_to: str = ""
    list_id: str = ""  # empty: the From address's domain
    unsubscribe_mailto: str = ""  # empty: List-Unsubscribe carries only the https link
    postal_address: str = ""  # `newsletter check` refuses to send bulk mail without one
    bounce_address: str = ""  # set: each message's envelope sender is bounces+TAG@domain (VERP), read back by `inbox`


@dataclass(frozen=True)
class IssueSettings:
    sections: tuple[str, ...] = ("News",)
    default_section: str = ""  # empty: the first of sections
    min_articles: int = 1
    empty_policy: str = "skip"
    subject: str = "{name}, {long_date}"
    greeting: str = ""  # empty: "Good morning, {name}." in the newsletter's language (its catalog)
    greeting_fallback: str = ""  # empty: "Good morning." in the newsletter's language


@dataclass(frozen=True)
class ScheduleSettings:
    send_time: str = "06:00"
    catch_up_hours: float = 6.0


@dataclass(frozen=True)
class DigestSettings:
    """The weekly digest: weekly readers get one on `weekday` at [schedule] send_time, for the week before."""

    weekday: str = "monday"
    subject: str = ""  # keys: DIGEST_KEYS; empty: "{name}: the week of {dates}" in the newsletter's language
    preheader: str = ""  # empty: "{articles} articles from {issues} issues: {lead_title}" in its language


# what the [digest] subject and preheader templates may use
DIGEST_KEYS = ("name", "short_name", "week", "dates", "issues", "articles", "lead_title")


@dataclass(frozen=True)
class DeliverySettings:
    transport: str = "outbox"
    rate: float = 0.0
    hourly_cap: int = 0
    concurrency: int = 4
    batch_size: int = 500
    # seconds a sender's claimed rows stay its own without it claiming more (several senders on
    # PostgreSQL): past it, another sender takes them over (a sender whose connection is gone at once)
    lease_seconds: float = 600.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"
    username: str = ""
    timeout: float = 30.0
    verify: bool = True  # check the server's TLS certificate and host name
    ca_file: str = ""  # extra CA certificates (PEM) to trust, e.g. a private relay's; relative to the project


@dataclass(frozen=True)
class DkimSettings:
    selector: str = ""
    domain: str = ""
    key_file: str = ""  # RSA private key (PEM, 2048 bits or more)
    ed25519_selector: str = ""  # a second signature, Ed25519-SHA256 (RFC 8463), under its own selector
    ed25519_key_file: str = ""  # Ed25519 private key (PEM, or dknewkey's base64 seed)
    canonicalization: str = "relaxed/simple"  # headers/body: relaxed or simple each


@dataclass(frozen=True)
class WebSettings:
    allowed_origins: tuple[str, ...] = ()  # other sites whose pages may post the sign-up form, e.g. "https://example.org"
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-For is believed
    request_timeout: float = 10.0  # seconds a client has to send a request's headers, and again its body


@dataclass(frozen=True)
class BouncesSettings:
    soft_limit: int = 3  # temporary bounces on this many different days (within window_days) mark an address bounced
    window_days: int = 14


@dataclass(frozen=True)
class InboxSettings:
    host: str = ""  # set: `newsletter inbox` reads this IMAP server (TLS), and the scheduler runs it
    port: int = 993
    username: str = ""
    folder: str = "INBOX"
    processed: str = "move"  # what happens to a message read: "move" to processed_folder, "flag" it, or "delete" it
    processed_folder: str = "Processed"
    human_folder: str = "For a human"  # messages the tool cannot act on
    verify: bool = True
    ca_file: str = ""  # extra CA certificates (PEM) to trust; relative to the project
    timeout: float = 30.0
    every_minutes: int = 5  # how often the scheduler reads the mailbox
    max_message_bytes: int = 10_000_000  # a larger message is not parsed: it is left for a human


@dataclass(frozen=True)
class DatabaseSettings:
    # empty: the SQLite file subscribers/newsletter.db; "postgresql://user@host:5432/db": a database
    # several hosts share (the password only from NEWSLETTER_DATABASE_PASSWORD)
    url: str = ""


@dataclass(frozen=True)
class SesWebhookSettings:
    enabled: bool = False  # POST /webhooks/ses takes Amazon SNS messages
    topics: tuple[str, ...] = ()  # the TopicArns whose messages are believed; required when enabled
    # hosts (a regular expression, matched in full) whose SigningCertURL and SubscribeURL are fetched
    cert_hosts: str = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
    ca_file: str = ""  # CA certificates (PEM) to trust instead of the system's when fetching; relative to the project


@dataclass(frozen=True)
class PostmarkWebhookSettings:
    enabled: bool = False  # POST /webhooks/postmark takes bounce and spam-complaint webhooks
    username: str = "postmark"  # HTTP basic auth; the password only from NEWSLETTER_POSTMARK_PASSWORD


@dataclass(frozen=True)
class MailgunWebhookSettings:
    enabled: bool = False  # POST /webhooks/mailgun; the signing key only from NEWSLETTER_MAILGUN_SIGNING_KEY
    max_age: float = 300.0  # seconds a signature's timestamp stays good; older (or reused) is refused


@dataclass(frozen=True)
class WebhooksSettings:
    """The email services' webhooks in `newsletter serve`, one table each: [webhooks.ses] and so on."""

    ses: SesWebhookSettings = field(default_factory=SesWebhookSettings)
    postmark: PostmarkWebhookSettings = field(default_factory=PostmarkWebhookSettings)
    mailgun: MailgunWebhookSettings = field(default_factory=MailgunWebhookSettings)


FEED_CONTENT = ("full", "summary")
FEED_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class FeedSettings:
    """One `[[feeds]]` table: a source of articles fetched by `newsletter fetch` (feeds/)."""

    url: str = ""  # http(s)://…, or file:PATH inside the project (read from disk, never fetched)
    name: str = ""  # the source line of its articles; empty: the feed's own title
    section: str = ""  # empty: [issue] default_section
    max_items: int = 10  # the most entries taken from one fetch (the newest)
    content: str = "full"  # "full": the entry's content; "summary": its summary only
    upgrade_http: bool = False  # an http: link in an entry becomes https: (else its text stays, the link goes)
    timeout: float = 20.0  # seconds to connect, and again between two reads
    max_bytes: int = 5_000_000  # a larger answer is refused while it streams


# The toml name of each section, and the toml names that differ from the field names.
_SECTIONS: dict[str, type] = {
    "newsletter": NewsletterSettings,
    "sender": SenderSettings,
    "issue": IssueSettings,
    "schedule": ScheduleSettings,
    "digest": DigestSettings,
    "delivery": DeliverySettings,
    "smtp": SmtpSettings,
    "dkim": DkimSettings,
    "web": WebSettings,
    "bounces": BouncesSettings,
    "inbox": InboxSettings,
    "webhooks": WebhooksSettings,
    "database": DatabaseSettings,
}
_TOML_NAMES = {("sender", "from_address"): "from"}  # field name -> toml key

_CHOICES = {
    ("issue", "empty_policy"): ("skip", "notice"),
    ("delivery", "transport"): ("outbox", "smtp"),
    ("smtp", "security"): ("starttls", "ssl", "none"),
    ("inbox", "processed"): ("move", "flag", "delete"),
}


@dataclass(frozen=True)
class Settings:
    root: Path
    newsletter: NewsletterSettings = field(default_factory=NewsletterSettings)
    sender: SenderSettings = field(default_factory=SenderSettings)
    issue: IssueSettings = field(default_factory=IssueSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    digest: DigestSettings = field(default_factory=DigestSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    web: WebSettings = field(default_factory=WebSettings)
    bounces: BouncesSettings = field(default_factory=BouncesSettings)
    inbox: InboxSettings = field(default_factory=InboxSettings)
    webhooks: WebhooksSettings = field(default_factory=WebhooksSettings)
    feeds: tuple[FeedSettings, ...] = ()  # the [[feeds]] tables, in order
    database: DatabaseSettings = field(default_factory=DatabaseSettings)

    def __post_init__(self) -> None:
        # the defaults that follow other settings, filled once here so every reader sees the value
        derived = (
            ("newsletter", "short_name", self.newsletter.name),
            ("sender", "list_id", self.sender_domain),
            ("issue", "default_section", self.issue.sections[0] if self.issue.sections else ""),
        )
        for section, key, value in derived:
            if not getattr(getattr(self, section), key):
                object.__setattr__(self, section, dataclasses.replace(getattr(self, section), **{key: value}))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.newsletter.timezone)

    @property
    def articles_dir(self) -> Path:
        return self.root / "articles"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def database_path(self) -> Path:
        return self.root / "subscribers" / "newsletter.db"

    def database_url(self, environ: typing.Mapping[str, str] = os.environ) -> str:
        """Return the PostgreSQL URL to use, password included, or "" for the SQLite file."""
        if url := environ.get(DATABASE_URL_ENV, "").strip():
            if not _is_postgres_url(url):
                raise SettingsError(f"{DATABASE_URL_ENV}: {hide_password(url)!r} is not a URL such as "
                                    "'postgresql://newsletter:PASSWORD@db.example.org/newsletter'")
            return url
        if not self.database.url:
            return ""
        password = environ.get(DATABASE_PASSWORD_ENV, "")
        if not password:
            return self.database.url
        from newsletter.postgres import with_password

        return with_password(self.database.url, password)

    @property
    def sender_domain(self) -> str:
        """The domain of the From address: Message-IDs live on it."""
        return self.sender.from_address.rsplit("@", 1)[-1].strip(" >").lower()

    def replace(self, section: str, **changes: object) -> Settings:
        """Return a copy with some values of one section changed (flags override the file)."""
        updated = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: updated})


def find_project(start: Path) -> Path:
    """Return the project folder: START or the nearest parent holding newsletter.toml."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ProjectError(
        f"{start}: not a newsletter project (no {CONFIG_NAME} here or above); "
        "create one with `newsletter init DIR` or name one with `newsletter --project DIR`"
    )


def load_settings(root: Path) -> Settings:
    """Read ROOT/newsletter.toml once into frozen Settings, rejecting unknown keys and wrong types."""
    path = root / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"{path}: not found; create a project with `newsletter init DIR`") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"{path}: {err}") from err
    sections: dict[str, typing.Any] = {}
    for name, value in raw.items():
        if name == "feeds":
            sections[name] = _load_feeds(path, value)
            continue
        if name not in _SECTIONS:
            raise SettingsError(
                f"{path}: unknown section [{name}]; expected one of "
                + ", ".join(f"[{s}]" for s in _SECTIONS) + ", [[feeds]]"
            )
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: {name} must be a table [{name}]")
        sections[name] = _load_section(path, name, value)
    settings = Settings(root=root, **sections)
    _check_values(path, settings)
    return settings


def _load_feeds(path: Path, value: object) -> tuple[FeedSettings, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SettingsError(f"{path}: feeds must be tables written [[feeds]], one per feed")
    feeds = []
    for number, table in enumerate(value, 1):
        feed = typing.cast(FeedSettings, _load_section(path, f"feeds #{number}", table, FeedSettings))
        feeds.append(feed)
    return tuple(feeds)


def _check_feeds(path: Path, settings: Settings) -> None:
    seen: set[str] = set()
    for number, feed in enumerate(settings.feeds, 1):
        where = f"{path}: [[feeds]] #{number}"
        scheme = feed.url.split(":", 1)[0].lower() if ":" in feed.url else ""
        if scheme not in FEED_SCHEMES or not feed.url.split(":", 1)[1].strip("/"):
            raise SettingsError(f"{where}: url {feed.url!r} must be an http:// or https:// address "
                                "(or file:PATH to a file inside the project)")
        if scheme == "file":
            feed_file(settings.root, feed.url, where)
        if feed.url in seen:
            raise SettingsError(f"{where}: url {feed.url!r} is listed twice")
        seen.add(feed.url)
        if feed.section and feed.section not in settings.issue.sections:
            raise SettingsError(f"{where}: section {feed.section!r} is not in issue.sections "
                                f"({', '.join(settings.issue.sections)})")
        if feed.content not in FEED_CONTENT:
            raise SettingsError(f"{where}: content must be 'full' or 'summary', not {feed.content!r}")
        if not 1 <= feed.max_items <= 100:
            raise SettingsError(f"{where}: max_items must be between 1 and 100, not {feed.max_items}")
        if not 0 < feed.timeout <= 300 or not 1_000 <= feed.max_bytes <= 100_000_000:
            raise SettingsError(f"{where}: timeout must be between 0 and 300 seconds and max_bytes between "
                                "1000 and 100000000")


def feed_file(root: Path, url: str, where: str = "") -> Path:
    """Return the file a `file:` feed URL names; refuse one outside the project ROOT."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SettingsError(f"{where or url}: a file: feed must be on this machine, not on {parts.netloc!r}")
    name = unquote(parts.path)
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise SettingsError(f"{where or url}: {url!r} is outside the project folder; a file: feed must be "
                            "inside it (write file:feeds/NAME.xml)")
    return target


def _load_section(path: Path, section: str, values: dict, cls: type | None = None) -> object:
    cls = cls or _SECTIONS[section]
    hints = typing.get_type_hints(cls)
    field_of = {_TOML_NAMES.get((section, f.name), f.name): f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in field_of:
            close = [t for t in field_of if _similar(key, t)]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(
                f"{path}: unknown key {key!r} in [{section}]{hint}; expected one of "
                + ", ".join(sorted(field_of))
            )
        name = field_of[key]
        kwargs[name] = _coerce(path, f"{section}.{key}", value, hints[name])
    return cls(**kwargs)


def _similar(a: str, b: str) -> bool:
    squash = lambda s: re.sub(r"[^a-z]", "", s.lower())  # noqa: E731
    return squash(a) == squash(b) or (len(a) > 3 and (a in b or b in a))


def _coerce(path: Path, key: str, value: object, hint: object) -> object:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{path}: {key} must be a list of strings, not {value!r}")
        return tuple(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a table in a section: [webhooks.ses]
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: {key} must be a table [{key}]")
        return _load_section(path, key, value, hint)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]  # ok: an int or a float
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a new field type needs a rule here
        raise TypeError(f"no coercion for {hint}")
    if not ok:
        expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
        raise SettingsError(f"{path}: {key} must be {expected}, not {value!r}")
    return value


def _check_values(path: Path, settings: Settings) -> None:
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(settings, section), key)
        if value not in allowed:
            raise SettingsError(
                f"{path}: {section}.{key} must be one of {', '.join(map(repr, allowed))}, not {value!r}"
            )
    check_language(f"{path}: newsletter.language", settings.newsletter.language)
    try:
        ZoneInfo(settings.newsletter.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"{path}: newsletter.timezone {settings.newsletter.timezone!r} is not a known time zone "
            "(expected a name such as 'Europe/Vienna' or 'UTC')"
        ) from None
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", settings.schedule.send_time):
        raise SettingsError(
            f"{path}: schedule.send_time must be HH:MM on a 24-hour clock, not {settings.schedule.send_time!r}"
        )
    if not https_only(settings.newsletter.base_url):
        raise SettingsError(f"{path}: newsletter.base_url must start with https://, not {settings.newsletter.base_url!r}")
    _check_sender(path, settings.sender)
    if not math.isfinite(settings.schedule.catch_up_hours) or settings.schedule.catch_up_hours < 0:
        raise SettingsError(
            f"{path}: schedule.catch_up_hours must be a finite number of hours, at least 0, "
            f"not {settings.schedule.catch_up_hours!r}"
        )
    if not settings.issue.sections:
        raise SettingsError(f"{path}: issue.sections must name at least one section")
    if settings.issue.default_section not in settings.issue.sections:
        raise SettingsError(
            f"{path}: issue.default_section {settings.issue.default_section!r} is not in issue.sections"
        )
    if not 0 < settings.delivery.lease_seconds < math.inf:
        raise SettingsError(f"{path}: delivery.lease_seconds must be a positive number of seconds")
    for key in ("min_articles", "batch_size", "concurrency"):
        section = "issue" if key == "min_articles" else "delivery"
        minimum = 0 if key == "min_articles" else 1
        if getattr(getattr(settings, section), key) < minimum:
            raise SettingsError(f"{path}: {section}.{key} must be at least {minimum}")
    for key in ("rate", "hourly_cap"):
        if getattr(settings.delivery, key) < 0:
            raise SettingsError(f"{path}: delivery.{key} must not be negative (0 means no limit)")
    _check_web(path, settings.web)
    if settings.bounces.soft_limit < 1 or settings.bounces.window_days < 1:
        raise SettingsError(f"{path}: bounces.soft_limit and bounces.window_days must be at least 1")
    _check_inbox(path, settings.inbox)
    _check_webhooks(path, settings.webhooks)
    _check_digest(path, settings.digest)
    _check_feeds(path, settings)
    _check_database(path, settings.database)


def _check_digest(path: Path, digest: DigestSettings) -> None:
    import string

    from newsletter.weeks import WEEKDAYS

    if digest.weekday not in WEEKDAYS:
        raise SettingsError(f"{path}: digest.weekday must be one of {', '.join(WEEKDAYS)}, not {digest.weekday!r}")
    allowed = ", ".join("{" + key + "}" for key in DIGEST_KEYS)
    for key in ("subject", "preheader"):
        template = getattr(digest, key)
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as err:
            raise SettingsError(f"{path}: digest.{key} is not a valid template ({err}); use keys {allowed}") from None
        for name in fields:
            if name not in DIGEST_KEYS:
                shown = "{" + name + "}"
                raise SettingsError(f"{path}: digest.{key} uses unknown key {shown}; allowed keys: {allowed}")


def _check_inbox(path: Path, inbox: InboxSettings) -> None:
    if inbox.host and not inbox.username:
        raise SettingsError(f"{path}: inbox.username is empty; the IMAP server {inbox.host} needs one "
                            f"(its password comes from {INBOX_PASSWORD_ENV})")
    if not 0 < inbox.port < 65536:
        raise SettingsError(f"{path}: inbox.port must be between 1 and 65535, not {inbox.port}")
    if inbox.every_minutes < 1 or inbox.max_message_bytes < 10_000 or not 0 < inbox.timeout < 3600:
        raise SettingsError(f"{path}: inbox.every_minutes must be at least 1, inbox.max_message_bytes at least "
                            "10000, inbox.timeout between 0 and 3600 seconds")
    for key in ("folder", "processed_folder", "human_folder"):
        value = getattr(inbox, key)
        if not value.strip() or not value.isascii() or re.search(r'[\x00-\x1f\x7f"\\]', value):
            raise SettingsError(f"{path}: inbox.{key} {value!r} is not a folder name (ASCII, no quotes or backslashes)")


def _check_web(path: Path, web: WebSettings) -> None:
    import ipaddress

    for origin in web.allowed_origins:
        if not re.fullmatch(r"https?://[a-z0-9.-]+(:[0-9]{1,5})?", origin):
            raise SettingsError(f"{path}: web.allowed_origins: {origin!r} is not an origin such as 'https://example.org' "
                                "(scheme and host in lower case, no path)")
    for proxy in web.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError(f"{path}: web.trusted_proxies: {proxy!r} is not an IP address or network") from None
    if not 0 < web.request_timeout < 3600:
        raise SettingsError(f"{path}: web.request_timeout must be between 0 and 3600 seconds")


# "Name <list@example.org>" or a bare address
_MAILBOX = re.compile(r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<angle>[^<>]*)>|(?P<bare>[^<>\s]+))\s*")
# RFC 2919: a list-id is a dot-atom with at least one dot, e.g. "daily.example.org"
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


def _check_sender(path: Path, sender: SenderSettings) -> None:
    """Refuse sender values that would make a broken or forged header, naming the file and the key."""
    from newsletter.headers import check_header_value

    values = {"from": sender.from_address, "reply_to": sender.reply_to,
              "unsubscribe_mailto": sender.unsubscribe_mailto, "list_id": sender.list_id,
              "bounce_address": sender.bounce_address}
    try:
        for key, value in values.items():
            check_header_value(f"sender.{key}", value)
    except NewsletterError as err:
        raise SettingsError(f"{path}: {err}") from err
    if sender.from_address:  # unset, nothing can be sent: messages.py says so when it builds one
        _check_mailbox(path, "sender.from", sender.from_address, named=True)
    if sender.reply_to:
        _check_mailbox(path, "sender.reply_to", sender.reply_to, named=True)
    if sender.unsubscribe_mailto:
        _check_mailbox(path, "sender.unsubscribe_mailto", sender.unsubscribe_mailto, named=False)
    if sender.bounce_address:
        _check_mailbox(path, "sender.bounce_address", sender.bounce_address, named=False)
        if "+" in sender.bounce_address.split("@")[0] or len(sender.bounce_address.split("@")[0]) > 24:
            raise SettingsError(f"{path}: sender.bounce_address {sender.bounce_address!r}: the part before @ must "
                                "be at most 24 characters and have no '+' (each message adds +TAG to it)")
    if sender.list_id and (len(sender.list_id) > 255 or not _LIST_ID.fullmatch(sender.list_id)):
        raise SettingsError(
            f"{path}: sender.list_id {sender.list_id!r} is not a list id such as 'daily.example.org' "
            "(letters, digits and dots, with at least one dot; RFC 2919)"
        )


def _check_mailbox(path: Path, key: str, value: str, *, named: bool) -> None:
    from newsletter import addresses

    match = _MAILBOX.fullmatch(value)
    address = match and (match["angle"] if match["angle"] is not None else match["bare"])
    if match is None or not address or (not named and match["angle"] is not None):
        shape = "'Name <list@example.org>' or 'list@example.org'" if named else "'list@example.org'"
        raise SettingsError(f"{path}: {key} {value!r} is not an address such as {shape}")
    try:
        _, ascii_form = addresses.normalize(address.strip())
    except addresses.EmailNotValidError as err:
        raise SettingsError(f"{path}: {key} {value!r}: not a valid address: {err}") from err
    if ascii_form is None:
        raise SettingsError(f"{path}: {key} {value!r}: the part before @ must be ASCII (no SMTPUTF8 here)")
    # the email package must read it back as this one mailbox (a bare comma would make two)
    try:
        parsed = email_policy.SMTP.header_factory("From", value)
        addresses_read = [a.addr_spec for a in parsed.addresses]
    except (AttributeError, IndexError, TypeError, ValueError):
        # the email package's own parser gives up on some names (a lone "." raises AttributeError)
        addresses_read = []
    if not addresses_read or parsed.defects or addresses_read != [address.strip()]:
        raise SettingsError(
            f"{path}: {key} {value!r} does not read as one address; put a name holding , ; : or @ "
            'in double quotes: \'"Name, Inc." <list@example.org>\''
        )


def _is_postgres_url(url: str) -> bool:
    return url.split("://", 1)[0] in ("postgresql", "postgres") and "://" in url


def hide_password(url: str) -> str:
    """URL with any password replaced, for an error message."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _check_database(path: Path, database: DatabaseSettings) -> None:
    url = database.url
    if not url:
        return
    if not _is_postgres_url(url):
        raise SettingsError(f"{path}: database.url {hide_password(url)!r} is not a URL such as "
                            "'postgresql://newsletter@db.example.org:5432/newsletter' (leave it out for SQLite)")
    if hide_password(url) != url:
        raise SettingsError(f"{path}: database.url holds a password; remove it from the file and set "
                            f"{DATABASE_PASSWORD_ENV} in the environment instead")


def _check_webhooks(path: Path, hooks: WebhooksSettings) -> None:
    if hooks.ses.enabled and not hooks.ses.topics:
        raise SettingsError(f"{path}: webhooks.ses.topics must name the SNS topics SES publishes to, "
                            "such as 'arn:aws:sns:eu-west-1:123456789012:newsletter-feedback'")
    try:
        re.compile(hooks.ses.cert_hosts)
    except re.error as err:
        raise SettingsError(f"{path}: webhooks.ses.cert_hosts is not a regular expression: {err}") from None
    if hooks.postmark.enabled and not hooks.postmark.username:
        raise SettingsError(f"{path}: webhooks.postmark.username must not be empty")
    if not 0 < hooks.mailgun.max_age <= 3600:
        raise SettingsError(f"{path}: webhooks.mailgun.max_age must be between 0 and 3600 seconds")


def webhook_secret(name: str, environ: typing.Mapping[str, str] = os.environ) -> str:
    """Return the secret of an enabled webhook (it only ever comes from the environment), or refuse."""
    variable = WEBHOOK_SECRET_ENV[name]
    if not environ.get(variable):
        raise SettingsError(f"[webhooks.{name}] is enabled but {variable} is not set in the environment; "
                            f"set it to the {WEBHOOK_SECRET_WHAT[name]}")
    return environ[variable]


def secret_key(settings: Settings, environ: typing.Mapping[str, str] = os.environ) -> bytes:
    """Return the token key: from the environment, else the project's 0600 key file.

    The file is made only while the project has never sent an issue: after that, every link
    already in someone's inbox is signed with it, and a new key would silently break them all.
    """
    if value := environ.get(SECRET_KEY_ENV):
        if len(value.encode("utf-8")) < SECRET_KEY_MIN_BYTES:
            raise SettingsError(f"{SECRET_KEY_ENV}: the key must be at least {SECRET_KEY_MIN_BYTES} bytes")
        return value.encode("utf-8")
    path = settings.root / SECRET_KEY_FILE
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        if issues_were_sent(settings):
            raise SettingsError(
                f"{path}: missing, but issues were already sent with unsubscribe links signed by it; "
                f"restore the file from a backup (or set {SECRET_KEY_ENV}). A new key would break every link sent"
            ) from None
        return create_secret_key(path)
    except OSError as err:
        raise SettingsError(f"{path}: cannot read the key that signs unsubscribe links: {err.strerror}") from err
    if len(key) < SECRET_KEY_MIN_BYTES:
        raise SettingsError(
            f"{path}: the key that signs unsubscribe links is {'empty' if not key else f'{len(key)} bytes'}; "
            f"it must be at least {SECRET_KEY_MIN_BYTES} bytes. Restore it from a backup; if no issue was "
            "ever sent, delete it and a new one is made"
        )
    return key


def create_secret_key(path: Path) -> bytes:
    """Write a new random key to PATH (0600, in a 0700 folder), or return the one another process made."""
    from newsletter.files import fsync_dir, private_dir

    private_dir(path.parent)
    key = secrets.token_hex(32).encode("ascii")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret.key.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # never replaces: whoever links first wins, and nobody sees half a key
    except FileExistsError:
        return path.read_bytes().strip()
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return key


def issues_were_sent(settings: Settings) -> bool:
    """Tell whether the ledger holds any issue; a database that cannot be read counts as yes."""
    if settings.database_url():
        from newsletter import store

        try:
            conn = store.open_database(settings)
            try:
                return conn.execute("SELECT 1 FROM issues LIMIT 1").fetchone() is not None
            finally:
                conn.close()
        except store.errors(NewsletterError):
            return True
    database = settings.database_path
    if not database.exists():
        return False
    try:
        conn = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return "issues" in tables and conn.execute("SELECT 1 FROM issues LIMIT 1").fetchone() is not None
        finally:
            conn.close()
    except sqlite3.Error:
        return True


def smtp_password(environ: typing.Mapping[str, str] = os.environ) -> str:
    """Return the SMTP password, which only ever comes from the environment."""
    return environ.get(SMTP_PASSWORD_ENV, "")


def inbox_password(environ: typing.Mapping[str, str] = os.environ) -> str:
    """Return the IMAP password of [inbox], which only ever comes from the environment."""
    return environ.get(INBOX_PASSWORD_ENV, "")


__all__ = [
    "Settings", "find_project", "load_settings", "secret_key", "smtp_password", "inbox_password", "webhook_secret",
    "CONFIG_NAME", "FeedSettings", "feed_file",
]
