"""The project a command works on: found once (--project or the current folder), its settings
loaded once, its database opened; shared by cli.py and cli_subscribers.py."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Optional

from newsletter import cli_output as output
from newsletter.errors import NewsletterError
from newsletter.settings import Settings, find_project, load_settings


class _State:
    project: Optional[Path] = None
    _settings: Optional[Settings] = None


_state = _State()


def settings() -> Settings:
    """Load the project's settings once (from --project or the current folder)."""
    if _state._settings is None:
        try:
            root = find_project(_state.project or Path.cwd())
            _state._settings = load_settings(root)
        except NewsletterError as err:
            output.fail(err)
    return _state._settings


def store():
    """Open the project's database (created and migrated on first use)."""
    from newsletter import store as store_module

    try:
        return store_module.open_database(settings())
    except NewsletterError as err:
        output.fail(err)


def parse_day(value: Optional[str]) -> date:
    """Return --date as a date, defaulting to today in the newsletter's time zone."""
    if value is None:
        return datetime.now(settings().tz).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        output.fail(f"--date {value!r}: expected a date as YYYY-MM-DD")


def parse_week(value: Optional[str]):
    """Return --week as an IsoWeek, defaulting to last week (the newsletter's time zone)."""
    from newsletter.weeks import IsoWeek

    if value is None:
        return IsoWeek.of(datetime.now(settings().tz).date()).previous()
    try:
        return IsoWeek.parse(value)
    except NewsletterError as err:
        output.fail(err)
