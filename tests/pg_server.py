"""A throwaway PostgreSQL server for the test session: initdb and pg_ctl in a temporary folder, a
random port on 127.0.0.1, its unix socket in the same folder. initdb refuses to run as root, so as
root the server runs as `nobody` (runuser) in a folder that user owns. Each test gets a database of
its own, copied from a migrated template once and emptied for the next test after it (creating and
dropping a database takes over a second; emptying one, a tenth)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from newsletter import store

sqlite_connect = store.connect  # SQLite's own, which the PostgreSQL pass replaces in `store` for the tests
BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
TEMPLATE = "newsletter_template"


def _binary(name: str) -> str | None:
    for folder in BIN_DIRS:
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One PostgreSQL server; `start` returns why it could not start, or None."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # fsync every commit, as a production server does (the benchmark); tests need not
        self.folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.port = 0
        self.as_user: list[str] = []
        self._names = itertools.count(1)
        self._free: list[str] = []

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> str | None:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not initdb or not pg_ctl:
            return "PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)"
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if not runuser:
                return "running as root and runuser is missing: initdb refuses root"
            self.as_user = [runuser, "-u", "nobody", "--"]
            shutil.chown(self.folder, "nobody")
        data = self.folder / "data"
        done = self._run([initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8",
                          "--locale=C.UTF-8"])
        if done.returncode != 0:
            return f"initdb failed: {done.stderr.strip()[-500:]}"
        for _ in range(5):  # another process may take the port between choosing and binding it
            self.port = _free_port()
            options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            done = self._run([pg_ctl, "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"])
            if done.returncode == 0:
                return self._make_template()
        return f"pg_ctl could not start the server: {(self.folder / 'log').read_text()[-500:]}"

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=300,
                              cwd=self.folder)

    def _make_template(self) -> str | None:
        from newsletter import postgres, store

        self.admin(f"CREATE DATABASE {TEMPLATE}")
        conn = store.connect_url(self.url(TEMPLATE))
        conn.close()
        postgres.close_pools()
        return None

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """Return the URL of an empty, migrated database nobody else uses."""
        if self._free:
            return self._free.pop()
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def release(self, url: str) -> None:
        """Empty the database at URL (rows deleted, ids from 1 again) for the next test."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        # a server a test left running, or a killed sender's session: end them first
        self.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                   " AND pid <> pg_backend_pid()")
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            tables = [row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                " AND table_name <> 'newsletter_schema'")]
            conn.execute("SET LOCAL session_replication_role = replica")  # no foreign-key checks: any order
            for table in tables:
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM newsletter_schema WHERE version > %s", (len(store.MIGRATIONS),))
            for (sequence,) in conn.execute(
                    "SELECT pg_get_serial_sequence(table_name, 'id') FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND column_name = 'id'").fetchall():
                if sequence:
                    conn.execute("SELECT setval(%s, 1, false)", (sequence,))
        self._free.append(url)

    def stop(self) -> None:
        pg_ctl = _binary("pg_ctl")
        if self.port and pg_ctl:
            self._run([pg_ctl, "-D", str(self.folder / "data"), "-m", "immediate", "stop"])
        shutil.rmtree(self.folder, ignore_errors=True)
