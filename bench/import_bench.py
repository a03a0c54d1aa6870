"""Import a 100,000-row CSV into a fresh database and print rows per second.

    .venv/bin/python bench/import_bench.py [ROWS]

Every row is new, so the run measures the whole path: decoding, CSV parsing, address validation,
deduplication and one transaction of inserts. A second import of the same file (all unchanged)
is timed too: that is the cost of re-importing an export.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

from newsletter import importer, store, subscribers


def write_csv(path: Path, rows: int) -> None:
    """Write ROWS fictional subscribers in Mailchimp's export layout."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["Email Address", "First Name", "Last Name", "OPTIN_TIME", "TAGS"])
        for i in range(rows):
            writer.writerow([f"Reader.{i}+news@Example{i % 97}.com", f"Reader {i}", "Smith, Jr.", "2024-03-01 09:15:00", ""])


def main(rows: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "subscribers.csv"
        write_csv(source, rows)
        conn = store.connect(Path(folder) / "bench.db")
        for label in ("first import", "re-import"):
            started = time.perf_counter()
            report = importer.import_file(conn, source)
            seconds = time.perf_counter() - started
            print(
                f"{label}: {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s "
                f"(added {report.added:,}, unchanged {report.unchanged:,})"
            )
        print(f"{source.stat().st_size / 1e6:.1f} MB file; list now {sum(subscribers.count_by_status(conn).values()):,}")
        conn.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
