"""Helpers shared by the subscriber-list and import tests (their `conn` fixture is in conftest.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
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


# A process that changes the list the way a busy day does: adds, unsubscribes, imports, and the
# same address left and rejoined by every process. Arguments: the database (a SQLite path or a
# postgresql:// URL), the prefix of its addresses, the folder of import files, how many addresses.
_WRITER = """
import sys
from pathlib import Path
from newsletter import importer, store, subscribers

target, prefix, imports, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
conn = store.connect_url(target) if target.startswith("postgresql") else store.connect(Path(target))
sys.stdin.read()  # the parent closes stdin to start every writer together
for i in range(count):
    subscribers.add(conn, f"{prefix}{i}@example.com", name=f"{prefix} {i}")
    if i % 3 == 0:
        subscribers.unsubscribe(conn, f"{prefix}{i}@example.com")
    if i % 10 == 0:
        importer.import_file(conn, imports / f"{prefix}{i}.csv")
    subscribers.unsubscribe(conn, "shared@example.com")
    subscribers.add(conn, "shared@example.com", resubscribe=True)
print("done")
"""


def change_at_once(target: str, prefixes: tuple[str, ...], count: int, folder: Path) -> None:
    """Run one `_WRITER` process per prefix against TARGET at the same time; each must finish cleanly.

    Each imports COUNT / 10 files of 25 addresses; "locked" in a writer's errors fails the test.
    """
    for prefix in prefixes:
        for i in range(0, count, 10):
            (folder / f"{prefix}{i}.csv").write_text(
                "email,name\n" + "".join(f"{prefix}imp{i}-{j}@example.com,Imported\n" for j in range(25)),
                encoding="utf-8")
    workers = {prefix: subprocess.Popen([sys.executable, "-c", _WRITER, target, prefix, str(folder), str(count)],
                                        stdin=subprocess.PIPE, stdout=(folder / f"{prefix}.out").open("w"),
                                        stderr=(folder / f"{prefix}.err").open("w"))
               for prefix in prefixes}
    for worker in workers.values():
        worker.stdin.close()  # type: ignore[union-attr]
    for prefix, worker in workers.items():
        worker.wait(timeout=120)
        err = (folder / f"{prefix}.err").read_text()
        assert worker.returncode == 0 and (folder / f"{prefix}.out").read_text() == "done\n", err
        assert "locked" not in err
