"""Benchmark the SMTP send against Postfix's C load generator, both sending to Postfix's smtp-sink.

    python bench/smtp.py --subscribers 4000 --concurrency 4 --runs 3
    python bench/smtp.py --size 35        # messages of about 35 KB, like the sample issues
    python bench/smtp.py --database postgresql --subscribers 4000 --runs 3   # SQLite vs PostgreSQL, 1 and 3 senders

Makes a temporary project with a realistic issue (15 articles, about 172 KB per message, or
eight articles sized to --size KB) and N subscribers, starts `smtp-sink` on a free port of
127.0.0.1, and in the same run measures: our `send_issue` over SMTP (the ledger's commit points
included), `smtp-source` sending N copies of one of our messages over the same number of reused
sessions to the same sink, how long one durable commit takes in the same folder (each message's
final "." waits for one, so connections / commit time bounds the send), and the EmailMessage
reference path (build_reference + smtplib's sendmail, same sessions). Ratios are what to read:
they hold on a noisy machine. Figures are medians over the runs.
Needs Postfix's smtp-sink and smtp-source (Debian/Ubuntu: `apt-get install postfix`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outbox import DAY, NON_ASCII_NAMES, cpu_seconds, make_project, reset, with_dkim  # noqa: E402  (bench/outbox.py)

POSTFIX_TOOLS = ("smtp-sink", "smtp-source")


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/lib/postfix") / name)
                                       if p.is_file()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(tool: str, port: int) -> subprocess.Popen:
    """Start smtp-sink on 127.0.0.1:PORT and wait until it accepts connections."""
    command = [tool]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # smtp-sink refuses to run as root
    command += [f"127.0.0.1:{port}", "256"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"smtp-sink did not start: {process.stderr.read().decode()}") from None
            time.sleep(0.05)
    process.kill()
    raise SystemExit("smtp-sink did not start listening within 5 s")


def smtp_source_seconds(tool: str, port: int, count: int, sessions: int, message: Path) -> float:
    """Time smtp-source sending COUNT copies of MESSAGE over SESSIONS reused sessions."""
    command = [tool, "-d", "-s", str(sessions), "-m", str(count), "-F", str(message),
               "-f", "bulletin@newsletter.example.org", "-t", "reader@example.org", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def commit_seconds(folder: Path, count: int = 100) -> float:
    """Median time of one durable SQLite commit (the ledger's settings: WAL, synchronous=FULL) in FOLDER.

    Each message's final "." waits for the commit that records it data_sent, so with C connections
    a send cannot beat C messages per commit time, whatever the network does.
    """
    from newsletter import store

    path = folder / "commit-probe.db"
    conn = store.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS probe (n INTEGER)")
    times = []
    for n in range(count):
        started = time.perf_counter()
        with store.write(conn):
            conn.execute("INSERT INTO probe VALUES (?)", (n,))
        times.append(time.perf_counter() - started)
    conn.close()
    for leftover in folder.glob("commit-probe.db*"):
        leftover.unlink()
    return statistics.median(times)


def reference_seconds(settings, rendered, port: int, count: int, sessions: int) -> float:
    """Time the naive path: an EmailMessage per subscriber, sent with smtplib's sendmail, SESSIONS threads."""
    from datetime import datetime, timezone

    from newsletter import messages
    from newsletter.models import Subscriber
    from newsletter.settings import secret_key

    key = secret_key(settings)
    signer = messages.dkim_signer(settings)  # with --dkim the reference signs too (each message whole)
    when = datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc)
    share = [range(n, count, sessions) for n in range(sessions)]

    def worker(ids: range) -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            for i in ids:
                person = Subscriber(i + 1, f"reader{i}@example.org", f"reader{i}@example.org",
                                    f"{NON_ASCII_NAMES[i % 5]} {i}" if i % 10 == 0 else f"Reader {i}", "active", "", "")
                raw = messages.build_reference(rendered, person, settings, key, when, signer=signer)
                client.sendmail("bulletin@newsletter.example.org", [person.email], raw)

    threads = [threading.Thread(target=worker, args=(ids,)) for ids in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


class DkimpySend:
    """The same signed send by dkimpy (the signer before: pure-Python RSA, the whole body per message), to a
    project of its own with COUNT subscribers, so that a run of it fits between ours on a busy machine."""

    def __init__(self, folder: Path, count: int, settings, args: argparse.Namespace) -> None:
        from newsletter import store
        from newsletter.pipeline import prepare_issue
        from newsletter.settings import load_settings

        self.project = make_project(folder, count, size_kb=args.size)
        self.settings = (load_settings(self.project).replace("delivery", **vars(settings.delivery))
                         .replace("smtp", **vars(settings.smtp)).replace("dkim", **vars(settings.dkim)))
        self.rendered = prepare_issue(self.settings, DAY).rendered
        self.conn = store.connect(self.settings.database_path)
        self.cpu_ms: list[float] = []  # CPU per message of each run

    def rate(self) -> float:
        """Send once; return its messages per second."""
        from functools import partial

        from newsletter import dkim, messages
        from newsletter.delivery import send_issue

        reset(self.conn, self.project)
        real = messages.dkim_signer
        messages.dkim_signer = partial(dkim.dkim_signer, reference=True)  # what send_issue asks for, this once
        try:
            started, cpu = time.perf_counter(), cpu_seconds()
            report = send_issue(self.conn, self.settings, self.rendered, force=True)
            self.cpu_ms.append((cpu_seconds() - cpu) * 1000 / report.written)
            return report.written / (time.perf_counter() - started)
        finally:
            messages.dkim_signer = real


def run(args: argparse.Namespace, sink_tool: str, source_tool: str) -> dict:
    from newsletter import store
    from newsletter.delivery import send_issue
    from newsletter.models import Subscriber
    from newsletter.pipeline import prepare_issue
    from newsletter.settings import load_settings, secret_key

    port = free_port()
    sink = start_sink(sink_tool, port)
    base = Path(tempfile.mkdtemp(prefix="smtp-bench-", dir=args.dir))
    try:
        project = make_project(base, args.subscribers, size_kb=args.size)
        settings = load_settings(project)
        settings = settings.replace("delivery", transport="smtp", concurrency=args.concurrency)
        settings = settings.replace("smtp", host="127.0.0.1", port=port, security="none")
        if args.dkim:
            settings = with_dkim(settings, base, ed25519=args.ed25519)
        rendered = prepare_issue(settings, DAY).rendered
        conn = store.connect(settings.database_path)
        sends, sources, commits = [], [], []
        # one of our messages, LF line ends (smtp-source -F adds CRLF and does the dot-stuffing)
        from newsletter import messages

        template = messages.MessageTemplate.build(rendered, settings, secret_key(settings),
                                                  __import__("datetime").datetime.now().astimezone(),
                                                  signer=messages.dkim_signer(settings))  # signed bytes with --dkim
        sample = template.personalize(Subscriber(1, "reader1@example.org", "reader1@example.org", "Reader 1",
                                                 "active", "", ""))
        message_file = base / "message.eml"
        message_file.write_bytes(sample.replace(b"\r\n", b"\n"))
        dkimpy = (DkimpySend(base / "dkimpy", min(args.reference_sample, args.subscribers), settings, args)
                  if args.dkim and args.reference_signer else None)
        dkimpy_rates: list[float] = []
        cpu_ms: list[float] = []
        for number in range(args.runs):
            if number:
                reset(conn, project)
            started, cpu = time.perf_counter(), cpu_seconds()
            report = send_issue(conn, settings, rendered, force=True)
            seconds = time.perf_counter() - started
            cpu_ms.append((cpu_seconds() - cpu) * 1000 / args.subscribers)
            assert report.written == args.subscribers, report
            sends.append((seconds, report.nbytes, report.seconds))
            sources.append(smtp_source_seconds(source_tool, port, args.subscribers, args.concurrency, message_file))
            commits.append(commit_seconds(base))
            if dkimpy is not None:  # taking turns with ours and smtp-source's, like them
                dkimpy_rates.append(dkimpy.rate())
        reference_count = min(args.reference_sample, args.subscribers)
        reference = reference_count / reference_seconds(settings, rendered, port, reference_count, args.concurrency)
        conn.close()
        if dkimpy is not None:
            dkimpy.conn.close()
    finally:
        sink.terminate()
        sink.wait()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    n = args.subscribers
    send_s = statistics.median(s for s, _, _ in sends)
    loop_s = statistics.median(s for _, _, s in sends)
    source_s = statistics.median(sources)
    ours = n / send_s
    theirs = n / source_s
    signed = {}
    if dkimpy_rates:
        dkimpy_rate = statistics.median(dkimpy_rates)
        signed = {"dkimpy_messages_per_s": dkimpy_rate, "dkimpy_runs": [round(r, 1) for r in dkimpy_rates],
                  "dkimpy_subscribers": min(args.reference_sample, args.subscribers),
                  "dkimpy_cpu_ms_per_message": statistics.median(dkimpy.cpu_ms) if dkimpy else 0.0,
                  "ratio_to_dkimpy": ours / dkimpy_rate}
    return signed | {
        "subscribers": n, "concurrency": args.concurrency, "runs": args.runs,
        "dkim": ("rsa-sha256" + (" + ed25519-sha256" if args.ed25519 else "")) if args.dkim else "",
        "message_kb": sends[0][1] / n / 1000,
        "cpu_ms_per_message": statistics.median(cpu_ms),
        "send_seconds": [round(s, 3) for s, _, _ in sends],
        "messages_per_s": ours, "mb_per_s": sends[0][1] / send_s / 1e6,
        "loop_messages_per_s": n / loop_s, "loop_ratio_to_smtp_source": (n / loop_s) / theirs,
        "smtp_source_seconds": [round(s, 3) for s in sources],
        "smtp_source_messages_per_s": theirs,
        "ratio_to_smtp_source": ours / theirs,
        "reference_messages_per_s": reference,
        "commit_ms": statistics.median(commits) * 1e3,
        # each final "." waits for a commit, and one commit records two messages of each connection
        "commit_bound_messages_per_s": 2 * args.concurrency / statistics.median(commits),
        "ratio_to_reference": ours / reference,
    }


def show(result: dict) -> None:
    print(f"{result['subscribers']:,} subscribers, {result['message_kb']:.0f} KB per message, "
          f"{result['concurrency']} connection(s) to smtp-sink on 127.0.0.1, median of {result['runs']} run(s)"
          + (f", DKIM-signed ({result['dkim']})" if result["dkim"] else ""))
    print(f"  newsletter send  {result['messages_per_s']:>8,.0f} messages/s  {result['mb_per_s']:>6,.0f} MB/s"
          f"   runs: {result['send_seconds']} s  (ledger commits included)")
    print(f"  (the sending loop alone, without freezing the issue and the snapshot: "
          f"{result['loop_messages_per_s']:,.0f} messages/s, {result['loop_ratio_to_smtp_source']:.0%} of smtp-source)")
    print(f"  smtp-source (C)  {result['smtp_source_messages_per_s']:>8,.0f} messages/s"
          f"               runs: {result['smtp_source_seconds']} s")
    print(f"  ratio to smtp-source        {result['ratio_to_smtp_source']:.0%}   "
          f"(target >= {'60% signed' if result['dkim'] else '70%'})")
    print(f"  a durable commit here takes {result['commit_ms']:.1f} ms (median): {result['concurrency']} connections "
          f"cannot pass {result['commit_bound_messages_per_s']:,.0f} messages/s (each final \".\" waits for a commit, "
          "which records two messages per connection)")
    print(f"  reference path   {result['reference_messages_per_s']:>8,.0f} messages/s  "
          "(EmailMessage + smtplib sendmail)")
    print(f"  ratio to the reference      {result['ratio_to_reference']:.1f}x")
    if "dkimpy_messages_per_s" in result:
        print(f"  signed by dkimpy {result['dkimpy_messages_per_s']:>8,.0f} messages/s  (the signer before: the same "
              f"send to {result['dkimpy_subscribers']} subscribers after each run; runs: {result['dkimpy_runs']}/s)")
        print(f"  ratio to dkimpy             {result['ratio_to_dkimpy']:.1f}x  (target >= 8x)")
        print(f"  CPU per message: {result['cpu_ms_per_message']:.2f} ms ours, "
              f"{result['dkimpy_cpu_ms_per_message']:.2f} ms with dkimpy (every thread of this process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=4, help="SMTP connections (and smtp-source sessions)")
    parser.add_argument("--size", type=float, default=0, metavar="KB",
                        help="build the issue to about KB kilobytes per message (default: 15 articles, about 172 KB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (the median is reported)")
    parser.add_argument("--reference-sample", type=int, default=200, help="messages for the reference path")
    parser.add_argument("--dkim", action="store_true", help="sign every message (a fresh 2048-bit RSA key)")
    parser.add_argument("--ed25519", action="store_true", help="with --dkim: an Ed25519 signature as well")
    parser.add_argument("--reference-signer", choices=("dkimpy",), default=None,
                        help="with --dkim: also time the same send signed by dkimpy (the signer before) to "
                             "--reference-sample subscribers, after each run")
    parser.add_argument("--dir", default=None, help="where the temporary project goes (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="postgresql: one sender on SQLite, then one and three at once on PostgreSQL (bench/"
                             "smtp_databases.py), instead of the comparison with smtp-source")
    args = parser.parse_args()
    tools = {name: find_tool(name) for name in POSTFIX_TOOLS}
    if not all(tools.values()):
        missing = ", ".join(name for name, path in tools.items() if not path)
        print(f"skipped: Postfix's {missing} not found; on Debian or Ubuntu `apt-get install postfix` "
              "installs smtp-sink and smtp-source (in /usr/sbin)")
        return
    if args.database == "postgresql":
        from smtp_databases import run_databases, show_databases

        port = free_port()
        sink = start_sink(tools["smtp-sink"], port)
        try:
            result = run_databases(args, port)
        finally:
            sink.terminate()
            sink.wait()
        print(json.dumps(result)) if args.json else show_databases(result)
        return
    result = run(args, tools["smtp-sink"], tools["smtp-source"])
    print(json.dumps(result) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        show(result)


if __name__ == "__main__":
    main()
