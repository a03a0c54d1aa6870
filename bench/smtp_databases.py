"""`bench/smtp.py --database postgresql`: the SMTP send on SQLite and on PostgreSQL in the same run.

One sender on SQLite, then one and three senders at once on PostgreSQL (a throwaway server made by
tests/pg_server.py, durable like a production server: fsync and synchronous_commit on; or the empty
database in NEWSLETTER_DATABASE_URL), all to one smtp-sink. Each sender is its own process, as on
several hosts; the figure to read is the rate per sender.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from outbox import DAY, make_project  # noqa: E402  (bench/outbox.py)

REPO = Path(__file__).resolve().parent.parent
WORKER = """
import sys, time
from pathlib import Path
from newsletter import store
from newsletter.delivery import send_issue
from newsletter.pipeline import prepare_issue
from newsletter.settings import load_settings
from datetime import date

project, port, concurrency, url = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
settings = load_settings(project).replace("delivery", transport="smtp", concurrency=concurrency)
settings = settings.replace("smtp", host="127.0.0.1", port=port, security="none")
rendered = prepare_issue(settings, date.fromisoformat(sys.argv[5])).rendered
conn = store.connect_url(url) if url else store.connect(settings.database_path)
sys.stdin.read()  # every sender starts at once
started = time.perf_counter()
report = send_issue(conn, settings, rendered, force=True)
print(report.written, time.perf_counter() - started)
"""


def _server_url() -> tuple[str, object | None]:
    """An empty PostgreSQL database: NEWSLETTER_DATABASE_URL's, or one on a throwaway server."""
    if url := os.environ.get("NEWSLETTER_DATABASE_URL"):
        return url, None
    sys.path.insert(0, str(REPO / "tests"))
    from pg_server import Server

    server = Server(durable=True)  # each commit flushed to disk, as SQLite's (synchronous=FULL) are
    if reason := server.start():
        server.stop()
        raise SystemExit(f"skipped: {reason}")
    return server.new_database(), server


def _reset(url: str, project: Path) -> None:
    from newsletter import store

    conn = store.connect_url(url) if url else store.connect(project / "subscribers" / "newsletter.db")
    with store.write(conn):
        conn.execute("DELETE FROM deliveries")
        conn.execute("DELETE FROM issue_structures")
        conn.execute("DELETE FROM issues")
    conn.close()


def _round(project: Path, port: int, concurrency: int, url: str, workers: int) -> tuple[int, float]:
    """Run WORKERS senders at once; return the messages they wrote and the seconds until the last ended."""
    env = {**os.environ, "NEWSLETTER_DATABASE_URL": url} if url else {
        k: v for k, v in os.environ.items() if k != "NEWSLETTER_DATABASE_URL"}
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, str(project), str(port), str(concurrency), url,
                                   DAY.isoformat()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(workers)]
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
    written, seconds = 0, 0.0
    for process in processes:
        assert process.stdout is not None
        out = process.stdout.read()
        assert process.wait(timeout=1800) == 0, f"a sender failed: {out}"
        count, elapsed = out.split()
        written, seconds = written + int(count), max(seconds, float(elapsed))
    return written, seconds


def run_databases(args: argparse.Namespace, port: int) -> dict:
    """Measure one sender on SQLite, one and three on PostgreSQL, to the sink on PORT."""
    from newsletter import dbcopy, store

    base = Path(tempfile.mkdtemp(prefix="smtp-db-bench-", dir=args.dir))
    project = make_project(base, args.subscribers, size_kb=args.size)
    url, server = _server_url()
    try:
        with store.connect(project / "subscribers" / "newsletter.db") as sqlite, \
                store.connect_url(url) as postgres:
            dbcopy.copy(sqlite, postgres, "bench")
        results: dict[str, list[float]] = {"sqlite_1": [], "postgresql_1": [], "postgresql_3": []}
        ones = [("sqlite_1", "", 1), ("postgresql_1", url, 1)]
        for number in range(args.runs):
            order = ones if number % 2 == 0 else ones[::-1]  # taking turns at going first: no order effect
            for name, target, workers in (*order, ("postgresql_3", url, 3)):
                print(f"  {name} ...", file=sys.stderr, flush=True)
                _reset(target, project)
                written, seconds = _round(project, port, args.concurrency, target, workers)
                assert written == args.subscribers, (name, written)
                results[name].append(written / seconds / workers)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    rates = {name: statistics.median(values) for name, values in results.items()}
    # each round's ratio, then their median: the host's speed drifts over minutes, and a round's three
    # sends run within one minute of each other
    paired = {name: [pg / sq for pg, sq in zip(results[name], results["sqlite_1"])]
              for name in ("postgresql_1", "postgresql_3")}
    return {"subscribers": args.subscribers, "concurrency": args.concurrency, "runs": args.runs,
            "per_sender_messages_per_s": rates,
            "per_sender_runs": {name: [round(rate) for rate in values] for name, values in results.items()},
            "postgresql_1_to_sqlite": statistics.median(paired["postgresql_1"]),
            "postgresql_1_to_sqlite_runs": [round(ratio, 3) for ratio in paired["postgresql_1"]],
            "postgresql_3_to_sqlite": statistics.median(paired["postgresql_3"]),
            "postgresql_3_total_messages_per_s": rates["postgresql_3"] * 3,
            # the three together against the one: on one machine they share its cores (and the sink), so
            # their per-sender rate says how the cores divide; this says whether they slow each other down
            "postgresql_3_together_to_sqlite": 3 * statistics.median(paired["postgresql_3"])}


def show_databases(result: dict) -> None:
    rates = result["per_sender_messages_per_s"]
    print(f"{result['subscribers']:,} subscribers, {result['concurrency']} connection(s) per sender to smtp-sink, "
          f"median of {result['runs']} run(s); messages per second per sender:")
    print(f"  SQLite, 1 sender          {rates['sqlite_1']:>8,.0f}")
    print(f"  PostgreSQL, 1 sender      {rates['postgresql_1']:>8,.0f}   "
          f"{result['postgresql_1_to_sqlite']:.0%} of SQLite's (target >= 80%; the median of each round's "
          f"ratio: {', '.join(f'{ratio:.0%}' for ratio in result['postgresql_1_to_sqlite_runs'])})")
    print(f"  PostgreSQL, 3 senders     {rates['postgresql_3']:>8,.0f}   "
          f"{result['postgresql_3_to_sqlite']:.0%} of SQLite's; {result['postgresql_3_total_messages_per_s']:,.0f} "
          f"messages/s together, {result['postgresql_3_together_to_sqlite']:.0%} of the one SQLite sender's rate "
          "(one machine's cores shared by three: a per-sender figure needs a host each)")
