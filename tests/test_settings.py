"""newsletter.toml: defaults that work, typos and wrong types named, secrets never from the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

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
