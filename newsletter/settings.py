"""Settings: defaults < newsletter.toml < environment (secrets only) < flags, read once, frozen."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.errors import ProjectError, SettingsError
from newsletter.rules import https_only

CONFIG_NAME = "newsletter.toml"
SECRET_KEY_ENV = "NEWSLETTER_SECRET_KEY"
SMTP_PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"
SECRET_KEY_FILE = "subscribers/secret.key"


@dataclass(frozen=True)
class NewsletterSettings:
    name: str = "The Sample Security Bulletin"
    tagline: str = "Daily news on nuclear, biological and chemical weapons, terrorism and related issues"
    short_name: str = "SSB"
    base_url: str = "https://newsletter.example.org"
    language: str = "en"
    timezone: str = "UTC"


@dataclass(frozen=True)
class SenderSettings:
    from_address: str = "The Sample Security Bulletin <bulletin@newsletter.example.org>"
    reply_to: str = ""
    list_id: str = "ssb.newsletter.example.org"
    unsubscribe_mailto: str = "unsubscribe@newsletter.example.org"
    postal_address: str = "Sample Security Bulletin, 1 Example Street, Example City"


@dataclass(frozen=True)
class IssueSettings:
    sections: tuple[str, ...] = (
        "Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy",
    )
    default_section: str = "Policy"
    min_articles: int = 1
    empty_policy: str = "skip"
    subject: str = "{name}, {long_date}"
    greeting: str = "Good morning, {name}."
    greeting_fallback: str = "Good morning."


@dataclass(frozen=True)
class ScheduleSettings:
    send_time: str = "06:00"
    catch_up_hours: float = 6.0


@dataclass(frozen=True)
class DeliverySettings:
    transport: str = "outbox"
    rate: float = 0.0
    hourly_cap: int = 0
    concurrency: int = 4
    batch_size: int = 500


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
    key_file: str = ""


@dataclass(frozen=True)
class WebSettings:
    allowed_origins: tuple[str, ...] = ()  # other sites whose pages may post the sign-up form, e.g. "https://example.org"
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-For is believed
    request_timeout: float = 10.0  # seconds a client has to send a request's headers, and again its body


# The toml name of each section, and the toml names that differ from the field names.
_SECTIONS: dict[str, type] = {
    "newsletter": NewsletterSettings,
    "sender": SenderSettings,
    "issue": IssueSettings,
    "schedule": ScheduleSettings,
    "delivery": DeliverySettings,
    "smtp": SmtpSettings,
    "dkim": DkimSettings,
    "web": WebSettings,
}
_TOML_NAMES = {("sender", "from_address"): "from"}  # field name -> toml key

_CHOICES = {
    ("issue", "empty_policy"): ("skip", "notice"),
    ("delivery", "transport"): ("outbox", "smtp"),
    ("smtp", "security"): ("starttls", "ssl", "none"),
}


@dataclass(frozen=True)
class Settings:
    root: Path
    newsletter: NewsletterSettings = field(default_factory=NewsletterSettings)
    sender: SenderSettings = field(default_factory=SenderSettings)
    issue: IssueSettings = field(default_factory=IssueSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    web: WebSettings = field(default_factory=WebSettings)

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
    sections: dict[str, object] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise SettingsError(
                f"{path}: unknown section [{name}]; expected one of "
                + ", ".join(f"[{s}]" for s in _SECTIONS)
            )
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: {name} must be a table [{name}]")
        sections[name] = _load_section(path, name, value)
    settings = Settings(root=root, **sections)
    _check_values(path, settings)
    return settings


def _load_section(path: Path, section: str, values: dict) -> object:
    cls = _SECTIONS[section]
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
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
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
    if "@" not in settings.sender.from_address:
        raise SettingsError(f"{path}: sender.from must be an address such as 'Name <list@example.org>'")
    if not settings.issue.sections:
        raise SettingsError(f"{path}: issue.sections must name at least one section")
    if settings.issue.default_section not in settings.issue.sections:
        raise SettingsError(
            f"{path}: issue.default_section {settings.issue.default_section!r} is not in issue.sections"
        )
    for key in ("min_articles", "batch_size", "concurrency"):
        section = "issue" if key == "min_articles" else "delivery"
        minimum = 0 if key == "min_articles" else 1
        if getattr(getattr(settings, section), key) < minimum:
            raise SettingsError(f"{path}: {section}.{key} must be at least {minimum}")
    for key in ("rate", "hourly_cap"):
        if getattr(settings.delivery, key) < 0:
            raise SettingsError(f"{path}: delivery.{key} must not be negative (0 means no limit)")
    _check_web(path, settings.web)


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


def secret_key(settings: Settings, environ: typing.Mapping[str, str] = os.environ) -> bytes:
    """Return the token key: from the environment, else the project's 0600 key file (made on first use)."""
    if value := environ.get(SECRET_KEY_ENV):
        return value.encode("utf-8")
    path = settings.root / SECRET_KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def smtp_password(environ: typing.Mapping[str, str] = os.environ) -> str:
    """Return the SMTP password, which only ever comes from the environment."""
    return environ.get(SMTP_PASSWORD_ENV, "")


__all__ = [
    "Settings", "find_project", "load_settings", "secret_key", "smtp_password",
    "CONFIG_NAME",
]
