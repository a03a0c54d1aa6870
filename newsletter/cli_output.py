"""What the command line prints: the error line, lists, log lines, send progress and reports.

Split from cli.py so that the commands there stay parse → call → report; these are the "report"
half for the commands whose output is more than a line (send, proofs, imports), plus the one test
hook that stops a send at a known point.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import NoReturn

import typer

from newsletter.errors import NewsletterError


def fail(err: NewsletterError | str) -> NoReturn:
    """Print `Error: …` to stderr and exit 1."""
    typer.echo(f"Error: {err}", err=True)
    raise typer.Exit(1)


def echo_lines(title: str, items: list, limit: int = 20) -> None:
    """Print TITLE and the first LIMIT items under it."""
    typer.echo(title)
    for item in items[:limit]:
        typer.echo(f"    {item}")
    if len(items) > limit:
        typer.echo(f"    … and {len(items) - limit:,} more")


@contextlib.contextmanager
def logs_to_stderr(quieter: str = "") -> Iterator[None]:
    """Send the library's log lines (INFO and up) to standard error while the block runs; QUIETER's WARNING and up."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S%z"))
    loggers = [(logging.getLogger("newsletter"), logging.INFO)]
    if quieter:
        loggers.append((logging.getLogger(quieter), logging.WARNING))
    for logger, level in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, _ in loggers:
            logger.removeHandler(handler)


def shown(path: Path) -> str:
    """Show PATH relative to the current folder when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_prepared(prepared) -> None:
    """Print what preparing the issue said: its warnings, and the empty policy's reasons (the issue's, and
    those of the readers whose sections have nothing today)."""
    for warning in prepared.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    if prepared.skipped_reason:
        typer.echo(prepared.skipped_reason)
    for variant in prepared.variants:
        if variant.skipped_reason:
            typer.echo(variant.skipped_reason)


def report_proofs(proof) -> None:
    """Say where the [TEST] copies went."""
    if proof.files:
        for path in proof.files:
            typer.echo(f"Wrote a [TEST] copy to {shown(path)}")
    for address in proof.delivered if not proof.files else ():
        typer.echo(f"Sent a [TEST] copy to {address} through {proof.server}")
    for address, reply in proof.refused:
        typer.echo(f"Error: {proof.server}: refused {address}: {reply}", err=True)
    if proof.refused:
        raise typer.Exit(1)


def send_progress(when: date):
    """A context giving a progress(done, total) callback: a rich bar on a terminal, one line otherwise."""
    import contextlib

    if not sys.stdout.isatty():
        announced: list[int] = []

        def announce(done: int, total: int) -> None:
            if not announced:
                announced.append(total)
                typer.echo(f"{when}: writing {total:,} message{'' if total == 1 else 's'}")

        return contextlib.nullcontext(announce)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeRemainingColumn)

    @contextlib.contextmanager
    def bar():
        # started at the first update, so what is printed before the send (warnings) is not under it
        columns = (TextColumn("Sending"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn())
        with contextlib.ExitStack() as stack:
            shown: list[Progress] = []

            def update(done: int, total: int) -> None:
                if not shown:
                    shown.append(stack.enter_context(Progress(*columns, transient=True)))
                    shown[0].add_task("send", total=None, rate="")
                speed = shown[0].tasks[0].speed
                shown[0].update(shown[0].tasks[0].id, completed=done, total=total,
                                rate=f"{speed:,.0f} messages/s" if speed else "")

            yield update

    return bar()


# --- the one test hook: stop a send at a known point (the kill and SIGTERM tests) --------------------

TEST_PAUSE_AFTER = "NEWSLETTER_TEST_PAUSE_AFTER"


def test_pause_after() -> int | None:
    """Read NEWSLETTER_TEST_PAUSE_AFTER once; None when it is not set."""
    import os

    value = os.environ.get(TEST_PAUSE_AFTER)
    if value is None:
        return None
    if not value.isdigit():
        fail(f"{TEST_PAUSE_AFTER} (a test hook) must be a number of messages, not {value!r}")
    return int(value)


def pause_for_tests(progress, stop, after: int):
    """Wrap PROGRESS: once the send reports AFTER messages done, say so and wait for a stop.

    A test hook, and only that: NEWSLETTER_TEST_PAUSE_AFTER=N makes `newsletter send` print
    "test hook: paused after D of T messages" (D >= N) and block until SIGTERM or Ctrl-C sets STOP;
    a test then kills or stops the send at exactly that point instead of after a guessed sleep.
    The outbox reports a batch once its files are durable and its rows say sent (the next batch
    is claimed and staged in tmp/); SMTP reports a message once the server answered it (its row is
    recorded with the next commit). N=0 pauses after start-up and recovery, before any claim.
    """
    import time

    paused: list[int] = []

    def pausing(done: int, total: int) -> None:
        progress(done, total)
        if done >= after and not paused:
            paused.append(done)
            typer.echo(f"test hook: paused after {done:,} of {total:,} messages")
            while not stop.is_set():
                # polled: Event.wait could deadlock with the signal handler that sets the event
                time.sleep(0.01)

    return pausing


def _command(name: str, when: date) -> str:
    """Return the command that sends (or shows) WHEN again: a day's issue, or a week's digest."""
    from newsletter.weeks import DigestKey

    if isinstance(when, DigestKey):
        return f"newsletter {name} --digest --week {when.week}"
    return f"newsletter {name} --date {when}"


def report_send(report, when: date) -> None:
    """Print the outcome of a send: one summary line and a hint."""
    if report.nothing_to_do:
        typer.echo(f"{when}: already sent to {report.sent:,}; nothing to do")
        if report.changed:
            typer.echo(f"Warning: {when}: the articles changed after the issue was sent; the change was not sent",
                       err=True)
        return
    if report.rebuilt:
        typer.echo(f"{when}: the issue changed since sending started: {report.earlier_version:,} already had "
                   f"the earlier version; the new version went to the {report.written:,} written now")
    if report.recovery.sent or report.recovery.released:
        typer.echo(f"Resumed an interrupted send: {report.recovery.sent:,} already written, "
                   f"{report.recovery.released:,} to write again")
    if report.recovered_in_doubt:
        typer.echo(f"Resumed an interrupted send: {report.recovered_in_doubt:,} message(s) were in doubt "
                   "(the server had the recipient, perhaps the message)")
    if report.retried_failed:
        typer.echo(f"Sending again to {report.retried_failed:,} message(s) that failed (--retry-failed)")
    if report.in_doubt_retried:
        typer.echo(f"Retrying {report.in_doubt_retried:,} message(s) in doubt once, with the same Message-ID")
    if report.expired:
        typer.echo(f"Expired {report.expired:,} unsent message(s) of earlier issues (a later issue has started)")
    plural = "" if report.written == 1 else "s"
    where = shown(report.destination) + "/" if isinstance(report.destination, Path) else report.destination
    typer.echo(f"Sent {report.written:,} message{plural} in {report.seconds:.2f} s "
               f"({report.rate:,.0f} messages/s) to {where}")
    if report.skipped:
        typer.echo(f"Skipped {report.skipped:,} subscriber(s) who left after the send started")
    if report.failed:
        bounced = f" ({report.bounced:,} bounced: those subscribers are now marked bounced)" if report.bounced else ""
        typer.echo(f"Warning: {report.failed:,} message(s) {report.failed_means}{bounced}; see `{_command('status', when)}`",
                   err=True)
    if report.in_doubt:
        typer.echo(f"Warning: {report.in_doubt:,} message(s) in doubt (the connection dropped after the final \".\"); "
                   f"see `{_command('status', when)}`", err=True)
    if report.stopped:
        typer.echo(f"Stopped at a clean point: {report.sent:,} of {report.total:,} written; "
                   f"`{_command('send', when)}` resumes")
        return
    if report.waiting_retries:
        typer.echo(f"{report.waiting_retries:,} message(s) deferred by the server (4xx), next retry at "
                   f"{report.next_retry_at or 'once due'}: run `{_command('send', when)}` again then "
                   "(or with --retry-now)")
    if report.hint:
        typer.echo(report.hint)


def report_digest(result) -> None:
    """Print the outcome of a digest send: each variant's summary, then the week's."""
    week = result.week
    if not result.sent and not result.checks:
        typer.echo(f"{week}: no reader is owed a digest (weekly readers, and readers who switched mid-week, "
                   "get the week's issues they did not get as dailies)")
        return
    import dataclasses

    for n, report in enumerate(result.sent, 1):  # the transport's hint once, after the last
        report_send(report if n == len(result.sent) else dataclasses.replace(report, hint=""), report.day)
    if result.nothing:
        typer.echo(f"{week}: {result.nothing:,} reader(s) had no article in their sections this week: no digest")
    outboxes = sorted({shown(r.destination) + "/" for r in result.sent if isinstance(r.destination, Path)})
    typer.echo(f"{week}: digest sent to {sum(r.sent for r in result.sent):,} of {result.total:,} reader(s) in "
               f"{len(result.sent)} variant(s)" + (f"; look in {', '.join(outboxes)}" if outboxes else ""))
