"""Helpers shared by the subscriber-list and import tests (their `conn` fixture is in conftest.py)."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

from newsletter import subscribers

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def write(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def snapshot(conn: sqlite3.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute("SELECT * FROM subscribers ORDER BY id")]


def people(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return [(s.email, s.name, s.status) for s in subscribers.iter_subscribers(conn)]
