"""Benchmark the outbox send against the file system's and the disk's limits and the EmailMessage reference path.

    python bench/outbox.py --subscribers 100000 --runs 3
    python bench/outbox.py --subscribers 100000 --compare-memory
    python bench/outbox.py --subscribers 100000 --variants 8

Makes a temporary project with a realistic issue (15 articles of about 600 words) and N
subscribers, runs the real `send_issue`, and prints messages/s, MB/s and peak memory next to
references measured in the same run: the same files written by `tar -x` and one `sync -f` (the
file system's limit for one file per message, which is the outbox's contract), the same number
of bytes written into one file by `dd conv=fdatasync` (the disk's bandwidth: a limit no design
with one file per message reaches with small files) and `messages.build_reference` on a sample
of subscribers. Ratios are what to read: they hold on a noisy machine. Figures are medians over
the runs.

With --variants N the issue has N sections of two articles each and the readers choose sections:
the whole day's send (`sending.send_day`: render each variant, check each, freeze, write) with the
readers spread over N variants is timed against the same send with every reader in one variant.
Each variant leaves out one section, so every message has the same size in both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date, datetime, timezone
from pathlib import Path

DAY = date(2026, 11, 26)
WORDS = (
    "ministers interceptor guarantees treaty inspection uranium enrichment facility delegation "
    "agreement sanctions missile launch warhead verification protocol council regional security "
    "defense officials reported statement according spokesman negotiations program nuclear "
    "biological chemical agency satellite imagery border exercise talks envoy parliament budget "
    "the of and to in a that for on with as by at from said would after before during while"
).split()
NON_ASCII_NAMES = ("Zoë Ångström", "José Núñez", "Łukasz Żółć", "Ærøskøbing Ødegaard", "Søren Kierk")


def make_project(root: Path, subscribers: int, seed: int = 7, size_kb: float = 0, sections: int = 0) -> Path:
    """Create a project in ROOT with DAY's articles and SUBSCRIBERS active subscribers.

    Without SIZE_KB the issue is 15 articles of 30 sentences (about 172 KB per message); with it,
    the articles are sized so that one message is about SIZE_KB kilobytes (see `fit_size`). With
    SECTIONS, the issue has that many sections ("Section 1" …) of two articles each.
    """
    from newsletter import store
    from newsletter.project import init_project

    project = init_project(root / "project", "The Benchmark Bulletin", "TBB", DAY.isoformat(), "November 26")
    if sections:
        from newsletter.project import POSTAL_PLACEHOLDER

        config = project / "newsletter.toml"
        names = ", ".join(f'"Section {k + 1}"' for k in range(sections))
        text = config.read_text(encoding="utf-8").replace('sections = ["News", "Analysis"]', f"sections = [{names}]")
        text = re.sub(r'(?m)^default_section = .*$', 'default_section = "Section 1"', text)
        config.write_text(text.replace(POSTAL_PLACEHOLDER, "Bench, 1 Road, City"), encoding="utf-8")
        write_articles(project, 2 * sections, 30, seed, sections=True)
    elif size_kb:
        fit_size(project, size_kb, seed)
    else:
        write_articles(project, 15, 30, seed)
    conn = store.connect(project / "subscribers" / "newsletter.db")
    now = store.now_iso()
    with store.write(conn):
        rows = (
            (f"reader{i}@example.org", f"reader{i}@example.org",
             f"{NON_ASCII_NAMES[i % len(NON_ASCII_NAMES)]} {i}" if i % 10 == 0 else f"Reader {i}",
             "active", now, now)
            for i in range(subscribers)
        )
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    return project


def write_articles(project: Path, articles: int, sentences: int, seed: int = 7, sections: bool = False) -> None:
    """Replace DAY's articles with ARTICLES synthetic ones of SENTENCES sentences each (5 to a paragraph);
    with SECTIONS, two to each of "Section 1", "Section 2" …, else in News and Analysis by turns."""
    rng = random.Random(seed)
    day_dir = project / "articles" / DAY.isoformat()
    shutil.rmtree(day_dir, ignore_errors=True)
    day_dir.mkdir(parents=True)
    for n in range(articles):
        paragraphs = []
        for first in range(0, sentences, 5):
            words = ((" ".join(rng.choices(WORDS, k=20)).capitalize() + ".")
                     for _ in range(min(5, sentences - first)))
            paragraphs.append(" ".join(words) + " (Interfax, November 25)")
        (day_dir / f"article-{n:02d}.md").write_text(textwrap.dedent(f"""\
            ---
            title: Article {n + 1} on regional security talks
            section: {f"Section {n // 2 + 1}" if sections else ("News" if n % 2 else "Analysis")}
            summary: One sentence about article {n + 1}.
            sources: ["Interfax, November 25", "Wire, November 24"]
            ---
            """) + "\n\n".join(paragraphs) + "\n", encoding="utf-8")


def message_bytes(project: Path) -> int:
    """Return the size of one subscriber's message of DAY's issue in PROJECT."""
    from newsletter import messages
    from newsletter.models import Subscriber
    from newsletter.pipeline import prepare_issue
    from newsletter.settings import load_settings, secret_key

    settings = load_settings(project)
    template = messages.MessageTemplate.build(prepare_issue(settings, DAY).rendered, settings,
                                              secret_key(settings), datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc))
    return len(template.personalize(Subscriber(1, "reader1@example.org", "reader1@example.org", "Reader 1",
                                               "active", "", "")))


def fit_size(project: Path, size_kb: float, seed: int = 7) -> int:
    """Write DAY's articles so that one message is about SIZE_KB kB; return its size in bytes.

    Eight articles (like the sample issues) below 100 kB, fifteen above; the sentences per article
    are fitted on a straight line through two trial builds (a message grows linearly with them).
    """
    articles = 8 if size_kb < 100 else 15
    target = size_kb * 1000
    low, high = 5, 30
    sizes = {}
    for sentences in (low, high):
        write_articles(project, articles, sentences, seed)
        sizes[sentences] = message_bytes(project)
    per_sentence = (sizes[high] - sizes[low]) / (high - low)
    sentences = max(1, round(low + (target - sizes[low]) / per_sentence))
    write_articles(project, articles, sentences, seed)
    return message_bytes(project)


def with_dkim(settings, folder: Path, *, ed25519: bool = False):
    """Return SETTINGS signing with a fresh 2048-bit RSA key (and an Ed25519 one) made in FOLDER by openssl."""
    rsa, ed = folder / "dkim-rsa.pem", folder / "dkim-ed25519.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(rsa), "2048"], check=True, capture_output=True)
    values = {"selector": "bench", "domain": settings.sender_domain, "key_file": str(rsa)}
    if ed25519:
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True, capture_output=True)
        values |= {"ed25519_selector": "bench-ed", "ed25519_key_file": str(ed)}
    return settings.replace("dkim", **values)


def send_runs(conn, project: Path, variants: list, rendered, args: argparse.Namespace, *,
              dd_folder: Path | None = None, tar_folder: Path | None = None,
              ) -> tuple[list[list[dict]], list[float], list[float]]:
    """Run the real outbox send ARGS.runs times with each of VARIANTS' settings, taking turns (so a
    machine that gets busier slows them alike); return each variant's runs, the dd times (if
    DD_FOLDER) and the tar -x times of the first variant's files (if TAR_FOLDER)."""
    from newsletter.delivery import send_issue

    sends: list[list[dict]] = [[] for _ in variants]
    dds, tars = [], []
    for _ in range(args.runs):
        for number, settings in enumerate(variants):
            reset(conn, project)
            os.sync()
            if args.trace:
                import tracemalloc

                tracemalloc.start()
            started, cpu = time.perf_counter(), cpu_seconds()
            report = send_issue(conn, settings, rendered, sync=args.sync, force=True)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            traced = 0
            if args.trace:
                traced = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert report.written == args.subscribers, report
            sends[number].append({"seconds": seconds, "nbytes": report.nbytes, "traced": traced, "cpu": cpu})
            if number == 0 and tar_folder is not None:
                archive = archive_messages(tar_folder, project / "outbox" / DAY.isoformat() / "mail" / "new")
        reset(conn, project)  # free the disk space before the same bytes are written again
        if tar_folder is not None:
            os.sync()
            tars.append(tar_seconds(tar_folder, archive))
        if dd_folder is not None:
            os.sync()
            dds.append(dd_seconds(dd_folder, sends[0][-1]["nbytes"]))
    return sends, dds, tars


def cpu_seconds() -> float:
    """Return the CPU time this process has used (every thread, user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dd_seconds(folder: Path, nbytes: int) -> float:
    """Time `dd conv=fdatasync` writing NBYTES (rounded up to 1 MiB) into one file in FOLDER."""
    target = folder / "dd.bin"
    count = max(1, -(-nbytes // (1 << 20)))
    started = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}", "conv=fdatasync"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def archive_messages(folder: Path, messages_dir: Path) -> Path:
    """Put the message files of MESSAGES_DIR into one tar archive in FOLDER (not timed)."""
    archive = folder / "messages.tar"
    subprocess.run(["tar", "-c", "-f", str(archive), "-C", str(messages_dir), "."], check=True, capture_output=True)
    return archive


def tar_seconds(folder: Path, archive: Path) -> float:
    """Time `tar -x` writing ARCHIVE's files into a new folder in FOLDER, then one `sync -f` of it."""
    target = folder / "tar-x"
    target.mkdir()
    started = time.perf_counter()
    # -m and --no-same-owner: no utime or chown per file (the outbox sets neither)
    subprocess.run(["tar", "-x", "-m", "--no-same-owner", "-f", str(archive), "-C", str(target)], check=True,
                   capture_output=True)
    subprocess.run(["sync", "-f", str(target)], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    archive.unlink()
    return seconds


def reference_rate(settings, rendered, sample: int) -> float:
    """Messages per second of the EmailMessage reference path (encode only) on SAMPLE subscribers."""
    from newsletter import messages
    from newsletter.models import Subscriber
    from newsletter.settings import secret_key

    key = secret_key(settings)
    when = datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc)
    people = [Subscriber(i + 1, f"reader{i}@example.org", f"reader{i}@example.org",
                         f"{NON_ASCII_NAMES[i % 5]} {i}" if i % 10 == 0 else f"Reader {i}", "active", "", "")
              for i in range(sample)]
    started = time.perf_counter()
    for person in people:
        messages.build_reference(rendered, person, settings, key, when)
    return sample / (time.perf_counter() - started)


def personalize_rate(settings, rendered, sample: int) -> float:
    """Messages per second of the fast path alone (MessageTemplate.personalize, no writing)."""
    from newsletter import messages
    from newsletter.models import Subscriber
    from newsletter.settings import secret_key

    template = messages.MessageTemplate.build(rendered, settings, secret_key(settings),
                                              datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc),
                                              signer=messages.dkim_signer(settings))
    people = [Subscriber(i + 1, f"reader{i}@example.org", f"reader{i}@example.org",
                         f"{NON_ASCII_NAMES[i % 5]} {i}" if i % 10 == 0 else f"Reader {i}", "active", "", "")
              for i in range(sample)]
    started = time.perf_counter()
    for person in people:
        template.personalize(person)
    return sample / (time.perf_counter() - started)


def signing_costs(unsigned_settings, signed_settings, rendered, sample: int = 300, rounds: int = 5) -> dict:
    """Thread CPU (ms) per message of making it unsigned and signed, and of what signing is made of: each key's
    private-key operation alone and SHA-256 over one message's bytes (the body hash's floor). The least of
    ROUNDS rounds over SAMPLE readers, in this thread alone: what one signature costs, whatever the machine's load."""
    import hashlib

    from newsletter import messages
    from newsletter.models import Subscriber
    from newsletter.settings import secret_key

    when = datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc)
    key = secret_key(unsigned_settings)
    unsigned = messages.MessageTemplate.build(rendered, unsigned_settings, key, when)
    signer = messages.dkim_signer(signed_settings)
    signed = messages.MessageTemplate.build(rendered, signed_settings, key, when, signer=signer)
    people = [Subscriber(i + 1, f"reader{i}@example.org", f"reader{i}@example.org", f"Reader {i}", "active", "", "")
              for i in range(sample)]
    data = signed.personalize(people[0])
    header = data[: data.index(b"\r\n\r\n")]  # about what a signature's header hash covers

    # every part is timed for each reader in turn, so a busy moment slows all parts of a round alike;
    # the round with the least total is kept
    parts = {"unsigned_ms": unsigned.personalize, "signed_ms": signed.personalize,
             "sha256_ms": lambda _: hashlib.sha256(data).digest()}
    for signing_key in signer.keys:
        parts[f"{signing_key.algorithm.decode()}_ms"] = lambda _, signing_key=signing_key: signing_key.sign(header)
    best: dict = {}
    for _ in range(rounds):
        spent = dict.fromkeys(parts, 0.0)
        for person in people:
            for name, work in parts.items():
                started = time.thread_time()
                work(person)
                spent[name] += time.thread_time() - started
        if not best or sum(spent.values()) < sum(best.values()):
            best = spent
    return {name: seconds / sample * 1000 for name, seconds in best.items()}


def reset(conn, project: Path) -> None:
    """Forget the previous run: its ledger rows and its outbox."""
    from newsletter import store

    with store.write(conn):
        conn.execute("DELETE FROM deliveries")
        conn.execute("DELETE FROM issues")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.rmtree(project / "outbox" / DAY.isoformat(), ignore_errors=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> dict:
    from newsletter import store
    from newsletter.pipeline import prepare_issue
    from newsletter.settings import load_settings

    base = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    try:
        project = make_project(base, args.subscribers, size_kb=args.size)
        settings = load_settings(project)
        if args.batch_size:
            settings = settings.replace("delivery", batch_size=args.batch_size)
        rendered = prepare_issue(settings, DAY).rendered
        conn = store.connect(settings.database_path)
        before_send_mb = rss_mb()
        # with --dkim, the same send signed, in the same process, taking turns with the unsigned one
        variants = [settings] + ([with_dkim(settings, base, ed25519=args.ed25519)] if args.dkim else [])
        (sends, *signed_runs), dds, tars = send_runs(conn, project, variants, rendered, args,
                                                     dd_folder=None if args.no_dd else base,
                                                     tar_folder=None if args.no_tar else base)
        signed = signed_runs[0] if signed_runs else []
        signed_fast = personalize_rate(variants[-1], rendered, min(args.subscribers, 2000)) if signed else 0.0
        costs = signing_costs(settings, variants[-1], rendered) if signed else {}
        reference = reference_rate(settings, rendered, args.reference_sample)
        fast = personalize_rate(settings, rendered, min(args.subscribers, 5000))
        conn.close()
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    n = args.subscribers
    send_s = statistics.median(s["seconds"] for s in sends)
    nbytes = sends[0]["nbytes"]
    result = {
        "subscribers": n,
        "runs": args.runs,
        "message_kb": nbytes / n / 1000,
        "send_seconds": [round(s["seconds"], 3) for s in sends],
        "messages_per_s": n / send_s,
        "mb_per_s": nbytes / send_s / 1e6,
        "peak_rss_mb": rss_mb(),
        "rss_before_send_mb": before_send_mb,
        "traced_peak_mb": max(s["traced"] for s in sends) / 1e6,
        "reference_messages_per_s": reference,
    }
    if tars:
        tar_s = statistics.median(tars)
        result.update({
            "tar_seconds": [round(s, 3) for s in tars],
            "tar_messages_per_s": n / tar_s,
            "tar_mb_per_s": nbytes / tar_s / 1e6,
            "ratio_to_file_system": tar_s / send_s,
        })
    if dds:
        dd_s = statistics.median(dds)
        result.update({
            "dd_seconds": [round(s, 3) for s in dds],
            "dd_messages_per_s": n / dd_s,
            "dd_mb_per_s": nbytes / dd_s / 1e6,
            "ratio_to_disk": (n / send_s) / (n / dd_s),
        })
    result["ratio_to_reference"] = result["messages_per_s"] / reference
    if signed:
        signed_s = statistics.median(s["seconds"] for s in signed)
        result.update({
            "dkim": "rsa-sha256" + (" + ed25519-sha256" if args.ed25519 else ""),
            "signed_send_seconds": [round(s["seconds"], 3) for s in signed],
            "signed_messages_per_s": n / signed_s,
            "signed_ratio_to_unsigned": send_s / signed_s,
            "signed_personalize_messages_per_s": signed_fast,
            # CPU per message holds on a busy machine, where the rates above are each one's share of the CPU
            "unsigned_cpu_ms_per_message": statistics.median(s["cpu"] for s in sends) * 1000 / n,
            "signed_cpu_ms_per_message": statistics.median(s["cpu"] for s in signed) * 1000 / n,
            "signing_costs": costs,
        })
    result["personalize_messages_per_s"] = fast
    result["personalize_ratio_to_reference"] = fast / reference
    return result


def choose_sections(conn, sections: int, spread: bool) -> None:
    """Give every reader all sections but one: the same one for all, or one of SECTIONS by id."""
    from newsletter import store

    names = [f"Section {k + 1}" for k in range(sections)]
    keys = ["\n".join(sorted(n for n in names if n != left_out)) for left_out in names]
    with store.write(conn):
        if not spread:
            conn.execute("UPDATE subscribers SET sections = ?", (keys[0],))
        else:
            conn.executemany("UPDATE subscribers SET sections = ? WHERE id % ? = ?",
                             [(key, sections, k) for k, key in enumerate(keys)])


def run_variants(args: argparse.Namespace) -> dict:
    """Time the day's send with the readers in ARGS.variants variants against the same send in one."""
    from newsletter import sending, store
    from newsletter.settings import load_settings

    base = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    seconds: dict[str, list[float]] = {"one": [], "spread": []}
    try:
        project = make_project(base, args.subscribers, sections=args.variants)
        settings = load_settings(project)
        conn = store.connect(settings.database_path)
        for _ in range(args.runs):
            for kind in ("one", "spread"):
                reset(conn, project)
                choose_sections(conn, args.variants, kind == "spread")
                os.sync()
                started = time.perf_counter()
                done = sending.send_day(settings, DAY, conn=conn, force=True)
                seconds[kind].append(time.perf_counter() - started)
                assert done.sent is not None and done.sent.written == args.subscribers, done
                assert len(done.prepared.variants) == (args.variants if kind == "spread" else 1)
        conn.close()
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    one, spread = statistics.median(seconds["one"]), statistics.median(seconds["spread"])
    return {"subscribers": args.subscribers, "variants": args.variants, "runs": args.runs,
            "one_seconds": [round(x, 2) for x in seconds["one"]],
            "spread_seconds": [round(x, 2) for x in seconds["spread"]],
            "one_messages_per_s": args.subscribers / one, "spread_messages_per_s": args.subscribers / spread,
            "ratio": one / spread}


def show_variants(result: dict) -> None:
    n, k = result["subscribers"], result["variants"]
    print(f"{n:,} subscribers, the whole send (render, check, freeze, write), median of {result['runs']} run(s)")
    print(f"  one variant     {result['one_messages_per_s']:>9,.0f} messages/s   runs: {result['one_seconds']} s")
    print(f"  {k} variants      {result['spread_messages_per_s']:>9,.0f} messages/s   runs: {result['spread_seconds']} s")
    print(f"  ratio            {result['ratio']:.0%}   (target >= 90%)")


def show(result: dict) -> None:
    n = result["subscribers"]
    print(f"{n:,} subscribers, {result['message_kb']:.0f} KB per message, median of {result['runs']} run(s)")
    print(f"  outbox send     {result['messages_per_s']:>9,.0f} messages/s  {result['mb_per_s']:>7,.0f} MB/s"
          f"   runs: {result['send_seconds']} s")
    if "tar_messages_per_s" in result:
        print(f"  tar -x, sync -f {result['tar_messages_per_s']:>9,.0f} messages/s  {result['tar_mb_per_s']:>7,.0f} MB/s"
              f"   runs: {result['tar_seconds']} s  (the same files: the file system's limit)")
        print(f"  ratio to the file system's limit   {result['ratio_to_file_system']:.0%}")
    if "dd_messages_per_s" in result:
        print(f"  dd fdatasync    {result['dd_messages_per_s']:>9,.0f} messages/s  {result['dd_mb_per_s']:>7,.0f} MB/s"
              f"   runs: {result['dd_seconds']} s  (the same bytes in one file: the disk's bandwidth)")
        print(f"  ratio to the disk's bandwidth      {result['ratio_to_disk']:.0%}")
    if "signed_messages_per_s" in result:
        print(f"  signed send     {result['signed_messages_per_s']:>9,.0f} messages/s  ({result['dkim']})"
              f"   runs: {result['signed_send_seconds']} s")
        print(f"  signed / unsigned           {result['signed_ratio_to_unsigned']:.0%}   (target >= 50%)")
        print(f"  signed personalize alone {result['signed_personalize_messages_per_s']:>7,.0f} messages/s "
              "(splice + sign, no disk)")
        print(f"  CPU per message: {result['unsigned_cpu_ms_per_message']:.2f} ms unsigned, "
              f"{result['signed_cpu_ms_per_message']:.2f} ms signed (every thread; the rates are CPU-bound "
              "when the machine has no idle core)")
        costs = result["signing_costs"]
        keys = [name[:-3] for name in costs if name.endswith("-sha256_ms")]
        rest = costs["signed_ms"] - costs["unsigned_ms"] - costs["sha256_ms"] - sum(costs[f"{k}_ms"] for k in keys)
        print(f"  signing one message, one thread: {costs['signed_ms'] - costs['unsigned_ms']:.3f} ms of CPU = "
              + " + ".join(f"{k} {costs[f'{k}_ms']:.3f}" for k in keys)
              + f" + SHA-256 of the body {costs['sha256_ms']:.3f} + the rest {rest:.3f} (canonicalization, Python); "
              f"made unsigned {costs['unsigned_ms']:.3f} ms")
    print(f"  reference path  {result['reference_messages_per_s']:>9,.0f} messages/s  (EmailMessage, encode only)")
    print(f"  ratio to the reference      {result['ratio_to_reference']:.0f}x  (target >= 30x)")
    print(f"  personalize alone {result['personalize_messages_per_s']:>7,.0f} messages/s  "
          f"= {result['personalize_ratio_to_reference']:.0f}x the reference (the CPU side, no disk)")
    print(f"  peak RSS {result['peak_rss_mb']:.0f} MB (before the send {result['rss_before_send_mb']:.0f} MB)"
          + (f", traced Python peak during the send {result['traced_peak_mb']:.1f} MB"
             if result["traced_peak_mb"] else ""))


def compare_memory(args: argparse.Namespace) -> None:
    """Run 1,000 and N subscribers in fresh processes; compare their peak memory."""
    figures = {}
    for count in (1000, args.subscribers):
        command = [sys.executable, __file__, "--subscribers", str(count), "--runs", "1", "--no-dd", "--no-tar", "--json",
                   "--reference-sample", "20", "--trace"]
        if args.dir:
            command += ["--dir", args.dir]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        figures[count] = json.loads(output.splitlines()[-1])
    small, large = figures[1000], figures[args.subscribers]
    print(f"peak RSS: {small['peak_rss_mb']:.0f} MB at 1,000, {large['peak_rss_mb']:.0f} MB at "
          f"{args.subscribers:,}: ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (target <= 1.5)")
    print(f"traced Python peak during the send: {small['traced_peak_mb']:.1f} MB at 1,000, "
          f"{large['traced_peak_mb']:.1f} MB at {args.subscribers:,}: "
          f"ratio {large['traced_peak_mb'] / small['traced_peak_mb']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--size", type=float, default=0, metavar="KB",
                        help="build the issue to about KB kilobytes per message (default: 15 articles, about 172 KB)")
    parser.add_argument("--runs", type=int, default=3, help="send runs (the median is reported)")
    parser.add_argument("--batch-size", type=int, default=0, help="override [delivery] batch_size")
    parser.add_argument("--sync", choices=("auto", "syncfs", "fsync"), default="auto")
    parser.add_argument("--reference-sample", type=int, default=200)
    parser.add_argument("--dkim", action="store_true",
                        help="also run the send DKIM-signed (a fresh 2048-bit RSA key) and compare it with the unsigned one")
    parser.add_argument("--ed25519", action="store_true", help="with --dkim: an Ed25519 signature as well")
    parser.add_argument("--dir", default=None, help="where the temporary project goes (default: $TMPDIR)")
    parser.add_argument("--no-dd", action="store_true", help="skip the dd reference")
    parser.add_argument("--no-tar", action="store_true", help="skip the tar -x reference")
    parser.add_argument("--trace", action="store_true", help="trace Python allocations (slower)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    parser.add_argument("--variants", type=int, default=0,
                        help="compare a send spread over N variants (sets of sections) with the same send in one")
    parser.add_argument("--compare-memory", action="store_true",
                        help="run 1,000 and --subscribers in fresh processes and compare peak memory")
    args = parser.parse_args()
    if args.compare_memory:
        compare_memory(args)
        return
    if args.variants:
        result = run_variants(args)
        print(json.dumps(result)) if args.json else show_variants(result)
        return
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)


if __name__ == "__main__":
    main()
