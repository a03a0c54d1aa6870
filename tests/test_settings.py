"""newsletter.toml: defaults that work, typos and wrong types named, secrets never from the file."""

from __future__ import annotations

import textwrap
from email import policy as email_policy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from newsletter.errors import ProjectError, SettingsError
from newsletter.settings import find_project, load_settings, secret_key

from conftest import REPO


def write_config(folder: Path, text: str) -> Path:
    (folder / "newsletter.toml").write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def test_empty_file_gives_working_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ""))
    assert settings.delivery.transport == "outbox"
    assert settings.schedule.send_time == "06:00"
    assert settings.newsletter.base_url.startswith("https://")


def test_typo_in_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    write_config(tmp_path, """
        [schedule]
        sendtime = "07:00"
    """)
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "newsletter.toml") in message
    assert "'sendtime'" in message and "did you mean 'send_time'" in message


def test_unknown_section_is_named(tmp_path: Path) -> None:
    write_config(tmp_path, "[smpt]\nhost = 'x'\n")
    with pytest.raises(SettingsError, match=r"unknown section \[smpt\]"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[delivery]\nrate = 'fast'", "delivery.rate must be a number, not 'fast'"),
        ("[smtp]\nport = '25'", "smtp.port must be an integer, not '25'"),
        ("[issue]\nsections = 'Nuclear'", "issue.sections must be a list of strings"),
        ("[delivery]\ntransport = 'pigeon'", "delivery.transport must be one of 'outbox', 'smtp', not 'pigeon'"),
        ("[schedule]\nsend_time = '25:00'", "schedule.send_time must be HH:MM"),
        ("[newsletter]\ntimezone = 'Mars/Olympus'", "newsletter.timezone 'Mars/Olympus' is not a known time zone"),
        ("[newsletter]\nbase_url = 'http://x.example'", "newsletter.base_url must start with https://"),
        ("[issue]\ndefault_section = 'Sports'", "issue.default_section 'Sports' is not in issue.sections"),
        ("[bounces]\nsoft_limit = 0", "bounces.soft_limit and bounces.window_days must be at least 1"),
    ],
)
def test_wrong_value_names_key_and_expectation(tmp_path: Path, toml: str, expected: str) -> None:
    write_config(tmp_path, toml)
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path)
    assert expected in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "newsletter.toml"))


def test_password_in_the_file_is_refused(tmp_path: Path) -> None:
    write_config(tmp_path, "[smtp]\npassword = 'hunter2'\n")
    with pytest.raises(SettingsError, match="unknown key 'password'"):
        load_settings(tmp_path)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, "[newsletter\n")
    with pytest.raises(SettingsError, match="newsletter.toml"):
        load_settings(tmp_path)


def test_sample_project_settings_load() -> None:
    settings = load_settings(REPO)
    assert settings.newsletter.short_name == "SSB"
    assert "Missile Defense" in settings.issue.sections


def test_find_project_walks_up_and_explains_when_missing(tmp_path: Path) -> None:
    write_config(tmp_path, "")
    inner = tmp_path / "articles" / "2026-11-26"
    inner.mkdir(parents=True)
    assert find_project(inner) == tmp_path.resolve()
    with pytest.raises(ProjectError, match="newsletter init"):
        find_project(tmp_path.parent / "elsewhere")


def test_secret_key_file_is_created_once_with_0600(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ""))
    first = secret_key(settings, environ={})
    path = tmp_path / "subscribers" / "secret.key"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert secret_key(settings, environ={}) == first
    assert len(first) >= 32


def test_secret_key_from_the_environment_wins(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ""))
    key = "from-env-" + "k" * 32
    assert secret_key(settings, environ={"NEWSLETTER_SECRET_KEY": key}) == key.encode()
    assert not (tmp_path / "subscribers" / "secret.key").exists()


# --- issue 11: neutral defaults, sender values checked when the settings load ---------------------

SAMPLE_CONTENT = ("Sample Security Bulletin", "nuclear, biological", "Missile Defense", "Policy",
                  "1 Example Street", "SSB", "ssb.")


def test_missing_keys_get_neutral_defaults_not_the_sample_newsletter(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, """
        [sender]
        from = "Jo's Letter <jo@letter.example.net>"
    """))
    shown = repr(settings)
    assert [text for text in SAMPLE_CONTENT if text in shown] == []
    assert settings.issue.sections == ("News",) and settings.issue.default_section == "News"
    assert settings.sender.postal_address == "" and settings.newsletter.tagline == ""
    assert settings.sender.list_id == "letter.example.net"  # the From domain
    assert settings.newsletter.short_name == settings.newsletter.name


def test_own_sections_without_default_section_work_for_every_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    write_config(tmp_path, """
        [sender]
        from = "Jo <jo@letter.example.net>"

        [issue]
        sections = ["World", "Sport"]
    """)
    assert load_settings(tmp_path).issue.default_section == "World"
    (tmp_path / "people.csv").write_text("email,name\nada@example.org,Ada\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--project", str(tmp_path), "subscribers", "import", str(tmp_path / "people.csv")])
    assert result.exit_code == 0, result.output
    day = tmp_path / "articles" / "2026-11-26"
    day.mkdir(parents=True)
    (day / "note.txt").write_text("A plain note\n\nIt names no section.\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--project", str(tmp_path), "build", "--date", "2026-11-26"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('from = "@"', "sender.from '@'"),
        ('from = "The List"', "sender.from 'The List' is not an address"),
        ('from = "Jo <jo@example.org>\\r\\nBcc: all@example.org"', "sender.from: contains the control character U+000D"),
        ('from = "Jo <jo@example.org\\nBcc: all@example.org>"', "sender.from: contains the control character U+000A"),
        ('from = "=?utf-8?q?Jo?= <jo@example.org>"', "sender.from: looks like an RFC 2047 encoded word"),
        ('from = "Smith, Jo <jo@example.org>"', "does not read as one address"),
        ('from = "Jo <jo@example.org>, Eve <eve@example.net>"', "is not an address"),
        ('from = "Jö <jö@example.org>"', "the part before @ must be ASCII"),
        ('reply_to = "editors"', "sender.reply_to 'editors'"),
        ('reply_to = "ed@example.org\\u2028Bcc: x@example.org"', "sender.reply_to: contains the control character U+2028"),
        ('unsubscribe_mailto = "Jo <jo@example.org>"', "sender.unsubscribe_mailto 'Jo <jo@example.org>' is not an address"),
        ('unsubscribe_mailto = "out@example.org?subject=x"', "sender.unsubscribe_mailto"),
        ('list_id = "bulletin"', "sender.list_id 'bulletin' is not a list id"),
        ('list_id = "a b.example.org"', "sender.list_id 'a b.example.org' is not a list id"),
        ('list_id = "=?utf-8?q?x?=.example.org"', "sender.list_id: looks like an RFC 2047 encoded word"),
    ],
)
def test_bad_sender_value_is_refused_at_load_naming_file_and_key(tmp_path: Path, toml: str, expected: str) -> None:
    write_config(tmp_path, "[sender]\n" + toml + "\n")
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'newsletter.toml'}: sender.")
    assert expected in str(err.value)


def test_check_refuses_from_at_sign_naming_the_setting(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    write_config(tmp_path, '[sender]\nfrom = "@"\n')
    result = CliRunner().invoke(app, ["--project", str(tmp_path), "check", "--date", "2026-11-26"])
    assert result.exit_code == 1
    assert f"Error: {tmp_path / 'newsletter.toml'}: sender.from '@'" in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1.0"])
def test_catch_up_hours_must_be_a_finite_number(tmp_path: Path, value: str) -> None:
    write_config(tmp_path, f"[schedule]\ncatch_up_hours = {value}\n")
    with pytest.raises(SettingsError, match=r"newsletter.toml: schedule.catch_up_hours must be a finite number"):
        load_settings(tmp_path)


def toml_string(value: str) -> str:
    """VALUE as a TOML basic string, every control character escaped."""
    escaped = (f"\\u{ord(c):04X}" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in '"\\' else c for c in value)
    return '"' + "".join(escaped) + '"'


@given(name=st.text(max_size=30), local=st.text(max_size=12))
@example(name=".", local="desk")  # once made the email package's own parser raise AttributeError
@example(name="", local=" 0")  # white space inside <...> is folding, not part of the address
@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_from_that_loads_makes_a_one_line_header_with_that_address(tmp_path: Path, name: str, local: str) -> None:
    value = f"{name} <{local}@example.org>"
    (tmp_path / "newsletter.toml").write_text(f"[sender]\nfrom = {toml_string(value)}\n", encoding="utf-8")
    try:
        settings = load_settings(tmp_path)
    except SettingsError as err:
        assert str(err).startswith(f"{tmp_path / 'newsletter.toml'}: sender.from")
        return
    header = email_policy.SMTP.header_factory("From", settings.sender.from_address)
    assert not any(ch in settings.sender.from_address for ch in "\r\n\x00")
    assert "=?" not in settings.sender.from_address
    assert [a.addr_spec for a in header.addresses] == [f"{local}@example.org".strip()]


# --- issue 11: the key that signs every unsubscribe link is never silently replaced ------------------

def test_init_makes_the_secret_key_owner_only(project: Path) -> None:
    key = project / "subscribers" / "secret.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert len(key.read_bytes().strip()) >= 32


@pytest.fixture
def sent_project(project: Path, runner) -> Path:
    """An init project that has sent today's issue to one subscriber."""
    from newsletter.cli import app

    for args in (["subscribers", "add", "ada@example.org", "--name", "Ada"], ["send"]):
        result = runner.invoke(app, ["--project", str(project), *args])
        assert result.exit_code == 0, result.output
    return project


def _break_key(key: Path, how: str) -> None:
    if how == "missing":
        key.unlink()
    elif how == "empty":
        key.write_bytes(b"")
    elif how == "short":
        key.write_bytes(b"0123456789abcdef\n")  # 16 bytes
    elif how == "unreadable":
        key.unlink()
        key.mkdir()  # root reads any file whatever its mode; nobody reads a folder as a file


@pytest.mark.parametrize("how", ["missing", "empty", "short", "unreadable"])
@pytest.mark.parametrize("command", [["send"], ["preview", "--subscriber", "ada@example.org", "--text"],
                                     ["send", "--test-to", "proof@example.org"], ["serve", "--port", "1"]])
def test_a_broken_key_after_a_send_is_an_error_naming_the_file(
    sent_project: Path, runner, how: str, command: list[str]
) -> None:
    from newsletter.cli import app

    key = sent_project / "subscribers" / "secret.key"
    _break_key(key, how)
    def state() -> tuple[bool, bytes | None]:
        return key.exists(), key.read_bytes() if key.is_file() else None

    before = state()
    result = runner.invoke(app, ["--project", str(sent_project), *command])
    assert result.exit_code == 1, result.output
    assert f"Error: {key}: " in result.output
    assert state() == before  # nothing made in its place


def test_a_project_that_never_sent_gets_a_new_key_on_first_use(project: Path, runner) -> None:
    from newsletter.cli import app

    (project / "subscribers" / "secret.key").unlink()
    result = runner.invoke(app, ["--project", str(project), "send"])
    assert result.exit_code == 0, result.output
    assert len((project / "subscribers" / "secret.key").read_bytes().strip()) == 64


def test_a_short_key_from_the_environment_is_refused(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ""))
    with pytest.raises(SettingsError, match="NEWSLETTER_SECRET_KEY: the key must be at least 32 bytes"):
        secret_key(settings, environ={"NEWSLETTER_SECRET_KEY": "short"})


def test_webhook_tables_load_each_service_on_its_own(tmp_path: Path) -> None:
    write_config(tmp_path, """
        [webhooks.ses]
        enabled = true
        topics = ["arn:aws:sns:eu-west-1:123456789012:newsletter-feedback"]

        [webhooks.mailgun]
        enabled = true
        max_age = 120
    """)
    hooks = load_settings(tmp_path).webhooks
    assert hooks.ses.enabled and hooks.ses.topics == ("arn:aws:sns:eu-west-1:123456789012:newsletter-feedback",)
    assert hooks.ses.cert_hosts.startswith("sns")  # the AWS rule unless told otherwise
    assert hooks.mailgun.enabled and hooks.mailgun.max_age == 120.0
    assert not hooks.postmark.enabled


@pytest.mark.parametrize(("toml", "expected"), [
    ("[webhooks.ses]\nenabled = true", "webhooks.ses.topics must name the SNS topics"),
    ("[webhooks.ses]\ncert_hosts = 'sns.(['", "webhooks.ses.cert_hosts is not a regular expression"),
    ("[webhooks.mailgun]\nsigning_key = 'key-abc'", r"unknown key 'signing_key' in \[webhooks.mailgun\]"),
    ("[webhooks.postmark]\npassword = 'hunter2'", r"unknown key 'password' in \[webhooks.postmark\]"),
    ("[webhooks]\nses = 1", r"webhooks.ses must be a table \[webhooks.ses\]"),
    ("[webhooks.sendgrid]\nenabled = true", r"unknown key 'sendgrid' in \[webhooks\]"),
    ("[webhooks.mailgun]\nmax_age = 0", "webhooks.mailgun.max_age must be between 0 and 3600"),
])
def test_webhook_settings_errors_name_the_table_and_key(tmp_path: Path, toml: str, expected: str) -> None:
    write_config(tmp_path, toml)
    with pytest.raises(SettingsError, match=expected):
        load_settings(tmp_path)


def test_a_webhook_secret_comes_only_from_the_environment() -> None:
    from newsletter.settings import webhook_secret

    assert webhook_secret("mailgun", {"NEWSLETTER_MAILGUN_SIGNING_KEY": "key-abc"}) == "key-abc"
    with pytest.raises(SettingsError, match="NEWSLETTER_POSTMARK_PASSWORD is not set"):
        webhook_secret("postmark", {})


def test_init_writes_the_webhook_tables_off_with_their_defaults(project: Path) -> None:
    from newsletter.settings import WebhooksSettings

    text = (project / "newsletter.toml").read_text()
    assert "[webhooks.ses]" in text and "[webhooks.postmark]" in text and "[webhooks.mailgun]" in text
    assert load_settings(project).webhooks == WebhooksSettings()


def test_the_database_url_takes_its_password_from_the_environment_only(tmp_path: Path) -> None:
    write_config(tmp_path, """
        [database]
        url = "postgresql://news:hunter2@db.example.org/news"
    """)
    with pytest.raises(SettingsError, match=r"database.url holds a password; .* NEWSLETTER_DATABASE_PASSWORD") as err:
        load_settings(tmp_path)
    assert "hunter2" not in str(err.value)
    write_config(tmp_path, """
        [database]
        url = "postgresql://news@db.example.org:5433/news"
    """)
    settings = load_settings(tmp_path)
    assert settings.database_url({}) == "postgresql://news@db.example.org:5433/news"
    assert settings.database_url({"NEWSLETTER_DATABASE_PASSWORD": "p@ss/word"}) == \
        "postgresql://news:p%40ss%2Fword@db.example.org:5433/news"
    whole = "postgresql://other:secret@db2.example.org/other"
    assert settings.database_url({"NEWSLETTER_DATABASE_URL": whole}) == whole


def test_a_database_url_that_is_not_postgresql_is_named(tmp_path: Path) -> None:
    write_config(tmp_path, """
        [database]
        url = "mysql://news@db.example.org/news"
    """)
    with pytest.raises(SettingsError, match=r"newsletter.toml: database.url 'mysql://news@db.example.org/news' is not"):
        load_settings(tmp_path)
    settings = load_settings(write_config(tmp_path, ""))
    assert settings.database_url({}) == ""  # SQLite, the default
    with pytest.raises(SettingsError, match=r"^NEWSLETTER_DATABASE_URL: 'sqlite:///x.db' is not a URL"):
        settings.database_url({"NEWSLETTER_DATABASE_URL": "sqlite:///x.db"})
