"""The command line: each command parses flags, calls one library function, and reports.

Heavy modules (premailer, lxml, apscheduler, the renderer) are imported inside the commands that
use them, so `newsletter --help` and `newsletter subscribers count` start at once.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Optional

import typer

from newsletter.delivery.states import InDoubt, IssueState, State
from newsletter.delivery.transport import TransportName
from newsletter.errors import NewsletterError
from newsletter import cli_output as output
from newsletter.cli_context import _state, parse_day, parse_week, settings, store
from newsletter.cli_db import db_app
from newsletter.cli_subscribers import subscribers_app
from newsletter.settings import find_project, load_settings

app = typer.Typer(
    help="A daily email bulletin: the day's articles become one email, sent once to every subscriber.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(db_app, name="db")


@app.callback()
def root(
    project: Optional[Path] = typer.Option(
        None, "--project", "-p", help="The project folder (default: the current folder or a parent).",
        file_okay=False,
    ),
) -> None:
    """Build, preview and send a daily newsletter; manage its subscribers."""
    _state.project = project
    _state._settings = None


@app.command()
def init(
    folder: Path = typer.Argument(..., help="Folder for the new project (created if missing)."),
    name: str = typer.Option("My Daily Bulletin", help="The newsletter's name."),
    short_name: str = typer.Option("MDB", help="Short name used in cross-references."),
    language: str = typer.Option("en", help="The newsletter's language, a locale: fr, de, es, pt, ar, pt_BR…"),
) -> None:
    """Create a new newsletter project in FOLDER that works as it is."""
    from newsletter.project import init_project

    today = date.today()
    try:
        created = init_project(folder, name, short_name, today.isoformat(), f"{today:%B} {today.day}", language)
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"Created a newsletter project in {created}")
    typer.echo(f"Next: cd {created} && newsletter preview   (then `newsletter send`)")


def _prepare(day: date, variants: Sequence[str] = ()):
    """Read, build and render DAY's issue (and VARIANTS) for the build/preview commands; print its warnings."""
    from newsletter.pipeline import prepare_issue

    try:
        prepared = prepare_issue(settings(), day, variants)
    except NewsletterError as err:
        output.fail(err)
    for warning in prepared.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    return prepared


@app.command()
def build(
    day: Optional[str] = typer.Option(None, "--date", "-d", help="The issue's day, YYYY-MM-DD (default: today)."),
) -> None:
    """Build the day's issue and write outbox/DAY/issue.html and issue.txt (no personal data)."""
    from newsletter.pipeline import write_public_copy

    prepared = _prepare(parse_day(day))
    if prepared.rendered is None:
        typer.echo(prepared.skipped_reason)
        return
    try:
        html_path, text_path = write_public_copy(settings(), prepared.rendered)
    except NewsletterError as err:
        output.fail(err)
    issue = prepared.rendered.issue
    typer.echo(f"Issue No. {issue.number} of {issue.day}: {issue.subject}")
    for section in issue.sections:
        typer.echo(f"  {section.name:<20} {len(section.articles)} article(s)")
    from newsletter.rules import GMAIL_CLIP_BYTES

    size = len(prepared.rendered.html.encode("utf-8"))
    typer.echo(f"HTML {size:,} bytes (Gmail clips above {GMAIL_CLIP_BYTES:,}), text {len(prepared.rendered.text.encode()):,} bytes")
    typer.echo(f"Wrote {output.shown(html_path)} and {output.shown(text_path)}")


class ScreenshotWidth(str, enum.Enum):
    w375 = "375"
    w600 = "600"
    w800 = "800"


@app.command()
def preview(
    day: Optional[str] = typer.Option(None, "--date", "-d", help="The issue's day, YYYY-MM-DD (default: today)."),
    subscriber: Optional[str] = typer.Option(None, "--subscriber", "-s", help="Show this subscriber's own copy."),
    text: bool = typer.Option(False, "--text", help="Print the plain-text part instead of opening the HTML."),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the HTML in the default browser."),
    screenshot: Optional[Path] = typer.Option(
        None, "--screenshot", help="Write a PNG picture of the issue to this file (needs chromium) instead of opening it.",
        dir_okay=False,
    ),
    width: ScreenshotWidth = typer.Option(ScreenshotWidth.w600, "--width", help="Screenshot width in pixels."),
    dark: bool = typer.Option(False, "--dark", help="Screenshot in dark mode (prefers-color-scheme: dark)."),
    serve: bool = typer.Option(
        False, "--serve", help="Serve a live preview on 127.0.0.1 that rebuilds and reloads when a file changes."
    ),
    port: int = typer.Option(8008, "--port", help="The live preview's port (with --serve).", min=1, max=65535),
    digest: bool = typer.Option(False, "--digest", help="Show the weekly digest instead of a day's issue."),
    week: Optional[str] = typer.Option(
        None, "--week", "-w", help="With --digest: the ISO week, e.g. 2026-W48 (default: last week)."),
) -> None:
    """Build the day's issue and open it in a browser (or print the text part, or take a screenshot)."""
    from newsletter.pipeline import write_preview

    if (digest or week is not None) and (not digest or day is not None or serve):
        output.fail("--week goes with --digest" if not digest else "--digest does not take --date or --serve")
    if serve:
        _serve_preview(parse_day(day), port, open_browser)
        return
    person = None
    if subscriber is not None:
        from newsletter import subscribers as subscribers_module

        try:
            person = subscribers_module.get(store(), subscriber)
        except NewsletterError as err:
            output.fail(err)
    rendered = _digest_preview(parse_week(week), person) if digest else _daily_copy(parse_day(day), person)
    if rendered is None:
        return
    try:
        html_path, text_body = write_preview(settings(), rendered, person)
    except NewsletterError as err:
        output.fail(err)
    if text:
        typer.echo(text_body, nl=False)
        return
    if screenshot is not None:
        from newsletter.browser import screenshot as take_screenshot

        try:
            shot_width, shot_height = take_screenshot(
                html_path.read_text(encoding="utf-8"), screenshot, width=int(width.value), dark=dark
            )
        except NewsletterError as err:
            output.fail(err)
        typer.echo(f"Wrote {output.shown(screenshot.resolve())} ({shot_width}×{shot_height} px, "
                   f"{'dark' if dark else 'light'} mode)")
        return
    if open_browser:
        import webbrowser

        webbrowser.open(html_path.as_uri())
        typer.echo(f"Opened {output.shown(html_path)}")
    else:
        typer.echo(str(html_path))


def _digest_preview(week, person):
    """Render WEEK's digest: PERSON's own (what they are owed), or the whole week in every section."""
    from newsletter import digest

    try:
        found = digest.preview(store(), settings(), week, person.id if person else None)
        if found is None:
            whom = f"{person.email} is owed no digest" if person else "no issue with articles was sent"
            output.fail(f"{week}: {whom} (a digest holds the week's issues a reader did not get as a daily)")
        return digest.render(found, settings())
    except NewsletterError as err:
        output.fail(err)


def _daily_copy(when: date, person):
    """Return WHEN's issue as PERSON gets it (the copy of their sections; the full one for nobody), or None after
    saying why there is none."""
    from newsletter.variants import key_of

    prepared = _prepare(when, [key_of(person.sections, settings().issue.sections)] if person else [])
    rendered = prepared.rendered
    for variant in prepared.variants:  # the one copy asked for
        rendered = variant.rendered
    if rendered is None:
        typer.echo(next((v.skipped_reason for v in prepared.variants), prepared.skipped_reason))
    return rendered


def _serve_preview(when: date, port: int, open_browser: bool) -> None:
    """Run the live preview of WHEN's issue on 127.0.0.1:PORT until Ctrl-C."""
    from newsletter.web.preview import serve_preview

    url = f"http://127.0.0.1:{port}/"
    typer.echo(f"Live preview of {when} at {url} (rebuilds when an article or template is saved; Ctrl-C stops)")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, (url,)).start()
    serve_preview(settings(), when, port)


@app.command("archive")
def archive_command(
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="The site's folder (default: outbox/site).", file_okay=False,
    ),
) -> None:
    """Write the archive of every sent issue as a static site: index, issue pages, Atom feed."""
    from newsletter import archive

    config = settings()
    target = out or config.outbox_dir / "site"
    try:
        report = archive.build_site(store(), config, target, datetime.now().astimezone())
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"Archive of {report.issues:,} issue{'' if report.issues == 1 else 's'} in {output.shown(target.resolve())}/ "
               f"({report.written:,} file{'' if report.written == 1 else 's'} written, {report.unchanged:,} unchanged)")
    typer.echo("Copy that folder to any static host, or run `newsletter serve` to serve it with sign-up and unsubscribe")


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on (put a reverse proxy with HTTPS in front)."),
    port: int = typer.Option(8080, "--port", help="The port to listen on.", min=1, max=65535),
) -> None:
    """Serve the archive, one-click unsubscribe and sign-up with confirmation (rebuilds the archive first)."""
    from newsletter import archive
    from newsletter.web.app import serve

    config = settings()
    site = config.outbox_dir / "site"
    try:
        report = archive.build_site(store(), config, site, datetime.now().astimezone())
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"Archive of {report.issues:,} issue{'' if report.issues == 1 else 's'} in {output.shown(site.resolve())}/")
    typer.echo(f"Serving http://{host}:{port}/ (Ctrl-C stops); links in emails point at {config.newsletter.base_url}/")
    try:
        with output.logs_to_stderr():  # the mail worker's and the endpoints' lines, beside uvicorn's
            serve(config, site, host=host, port=port)
    except NewsletterError as err:
        output.fail(err)


# ----------------------------------------------------------------------------- send, status


class StatusFormat(str, enum.Enum):
    text = "text"
    json = "json"


@app.command("send")
def send_command(
    day: Optional[str] = typer.Option(None, "--date", "-d", help="The issue's day, YYYY-MM-DD (default: today)."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="The issue changed during its send: send the new version to those not yet written."
    ),
    transport: Optional[TransportName] = typer.Option(
        None, "--transport", "-t", help="outbox (.eml files) or smtp (default: [delivery] transport)."
    ),
    in_doubt: InDoubt = typer.Option(
        InDoubt.RETRY, "--in-doubt",
        help="Messages whose connection dropped after the final \".\": retry once with the same Message-ID "
             "(nobody missed, perhaps a second copy) or skip (nobody twice, perhaps one missed).",
    ),
    retry_now: bool = typer.Option(False, "--retry-now", help="Retry every deferred message now, whatever its backoff."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed",
        help="Send the day again to the messages that failed (not bounced or expired ones), once the cause is fixed.",
    ),
    test_to: Optional[list[str]] = typer.Option(
        None, "--test-to", help="Send a [TEST] proof only to this address (repeatable); the list and ledger are untouched.",
    ),
    force: bool = typer.Option(False, "--force", help="Send even though `newsletter check` finds errors."),
    digest: bool = typer.Option(False, "--digest", help="Send the weekly digest to the readers owed it, not a day's issue."),
    week: Optional[str] = typer.Option(
        None, "--week", "-w", help="With --digest: the ISO week, e.g. 2026-W48 (default: last week)."),
) -> None:
    """Send the day's issue to every active subscriber, once each (by default as .eml files in outbox/)."""
    import threading

    from newsletter.sending import CheckFailedError, send_day, stop_on_signals

    if digest or week is not None:
        refused = [flag for flag, given in (("--date", day), ("--rebuild", rebuild), ("--retry-failed", retry_failed),
                                            ("--test-to", test_to)) if given]
        if not digest or refused:
            output.fail("--week goes with --digest" if not digest else f"--digest does not take {', '.join(refused)}")
        _send_digest(parse_week(week), transport, force, in_doubt, retry_now)
        return
    when = parse_day(day)
    config = settings()

    def checked(prepared, report) -> None:
        output.print_prepared(prepared)
        if report.errors:
            typer.echo(f"Warning: {when}: sending despite {len(report.errors)} check error(s) because of --force",
                       err=True)

    stop = threading.Event()  # SIGTERM (and Ctrl-C) end the send once the messages in flight are recorded
    pause_after = output.test_pause_after()
    try:
        with stop_on_signals(stop), output.send_progress(when) as shown:
            progress = output.pause_for_tests(shown, stop, pause_after) if pause_after is not None else shown
            result = send_day(config, when, transport=transport.value if transport else None, force=force,
                              stop=stop, progress=progress, rebuild=rebuild, in_doubt=in_doubt.value,
                              retry_now=retry_now, retry_failed=retry_failed, test_to=test_to or (),
                              on_checked=checked)
    except CheckFailedError as err:
        from newsletter.check import format_report

        output.print_prepared(err.prepared)
        typer.echo(format_report(err.report), err=True)
        output.fail(err)
    except NewsletterError as err:
        output.fail(err)
    if result.check is None:  # nothing to send today (the empty policy)
        output.print_prepared(result.prepared)
        return
    if result.proofs is not None:
        output.report_proofs(result.proofs)
        return
    report = result.sent
    assert report is not None, "send_day sends when it neither skips nor sends proofs"
    if retry_failed and not report.retried_failed:
        typer.echo(f"{when}: no failed message to send again (bounced and expired ones stay as they are)")
    output.report_send(report, when)


def _send_digest(week, transport: Optional[TransportName], force: bool, in_doubt: InDoubt, retry_now: bool) -> None:
    """Send WEEK's digest (the send command with --digest) and report each variant."""
    import threading

    from newsletter.sending import CheckFailedError, send_digest, stop_on_signals

    config = settings()
    stop = threading.Event()
    pause_after = output.test_pause_after()
    try:
        with stop_on_signals(stop), output.send_progress(week) as shown:
            progress = output.pause_for_tests(shown, stop, pause_after) if pause_after is not None else shown
            result = send_digest(config, week, today=datetime.now(config.tz).date(),
                                 transport=transport.value if transport else None, force=force, stop=stop,
                                 progress=progress, in_doubt=in_doubt.value, retry_now=retry_now)
    except CheckFailedError as err:
        from newsletter.check import format_report

        typer.echo(format_report(err.report), err=True)
        output.fail(err)
    except NewsletterError as err:
        output.fail(err)
    output.report_digest(result)


@app.command("status")
def status_command(
    day: Optional[str] = typer.Option(None, "--date", "-d", help="The issue's day, YYYY-MM-DD (default: today)."),
    format: StatusFormat = typer.Option(StatusFormat.text, "--format", "-f", help="text, or json for machines."),
    digest: bool = typer.Option(False, "--digest", help="Show the weekly digest's variants instead of a day's issue."),
    week: Optional[str] = typer.Option(
        None, "--week", "-w", help="With --digest: the ISO week, e.g. 2026-W48 (default: last week)."),
) -> None:
    """Show where the day's issue stands (not started, sending, paused, done), its deliveries per state,
    and the recipients that failed or are in doubt, with the server's reply."""
    from newsletter import reputation
    from newsletter.delivery.ledger import issue_status

    if digest or week is not None:
        if not digest or day is not None:
            output.fail("--week goes with --digest" if not digest else "--digest does not take --date")
        _digest_status(parse_week(week), format)
        return
    when = parse_day(day)
    try:
        conn = store()
        state = issue_status(conn, when)
        came_back = reputation.issue_feedback(conn, when)
    except NewsletterError as err:
        output.fail(err)
    if format is StatusFormat.json:
        import json

        typer.echo(json.dumps({**state.to_dict(), "feedback": came_back.to_dict()}, indent=2))
        return
    if state.state is IssueState.NOT_STARTED:
        typer.echo(f"{when}: not started (run `newsletter send --date {when}`)")
        return
    typer.echo(f"{when}: {state.state}, issue No. {state.number}: {state.subject}")
    for name, count in state.counts.items():
        if count:
            typer.echo(f"  {name:<10} {count:>8,}")
    typer.echo(f"  {'total':<10} {state.total:>8,}")
    percent = reputation.percent
    typer.echo(f"Came back from the {came_back.sent:,} delivered: {came_back.hard_bounces:,} permanent bounce(s) "
               f"({percent(came_back.bounce_rate)}), {came_back.soft_bounces:,} temporary, "
               f"{came_back.complaints:,} spam complaint(s) ({percent(came_back.complaint_rate)})")
    if state.counts.get(State.RETRY) and state.next_retry_at is not None:
        typer.echo(f"Next retry at {state.next_retry_at or 'once due'} (`newsletter send --retry-now` retries at once)")
    if state.problems:
        typer.echo("Recipients to look at:")
        for problem in state.problems[:_STATUS_PROBLEMS_SHOWN]:
            what = problem.state + (f" ({problem.reason})" if problem.reason else "")
            if problem.state not in (State.FAILED, State.IN_DOUBT) and problem.doubted:
                what = f"{problem.state}, after an attempt in doubt: may have two copies"
            typer.echo(f"  {problem.email}  {what}: {problem.reply or '-'}")
        if len(state.problems) > _STATUS_PROBLEMS_SHOWN:
            typer.echo(f"  … and {len(state.problems) - _STATUS_PROBLEMS_SHOWN:,} more (all with --format json)")


_STATUS_PROBLEMS_SHOWN = 50


def _digest_status(week, format: StatusFormat) -> None:
    """Show each frozen variant of WEEK's digest: its state and its deliveries per state."""
    from newsletter.delivery.digests import frozen_keys
    from newsletter.delivery.ledger import issue_status

    try:
        conn = store()
        states = [issue_status(conn, key) for key in frozen_keys(conn, week)]
    except NewsletterError as err:
        output.fail(err)
    if format is StatusFormat.json:
        import json

        typer.echo(json.dumps({"week": str(week), "variants": [state.to_dict() for state in states]}, indent=2))
        return
    if not states:
        typer.echo(f"{week}: digest not started (run `newsletter send --digest --week {week}`)")
        return
    for state in states:
        counts = ", ".join(f"{count:,} {name}" for name, count in state.counts.items() if count)
        typer.echo(f"{state.day}: {state.state}: {state.subject}; {counts or 'no reader'}")
        for problem in state.problems[:_STATUS_PROBLEMS_SHOWN]:
            typer.echo(f"  {problem.email}  {problem.state}: {problem.reply or '-'}")


# ----------------------------------------------------------------------------- fetch


@app.command("fetch")
def fetch_command(
    day: Optional[str] = typer.Option(
        None, "--date", "-d", help="The issue the entries are for, YYYY-MM-DD (default: the next issue to be sent)."),
    file: Optional[Path] = typer.Option(
        None, "--file", help="Read this feed file (RSS, Atom or JSON Feed) instead of the [[feeds]] addresses.",
        dir_okay=False),
) -> None:
    """Fetch the [[feeds]] and write each new entry as an article file in articles/DAY/ (editors may change or delete it)."""
    from newsletter import feeds
    from newsletter.settings import FeedSettings

    config = settings()
    when = parse_day(day) if day is not None else _next_issue_day(config)
    chosen, local = None, None
    if file is not None:
        url = file.resolve().as_uri()
        chosen = tuple(f for f in config.feeds if f.url == url) or (FeedSettings(url=url),)
        local = {url: file}
    elif not config.feeds:
        output.fail(f"{config.root / 'newsletter.toml'}: no [[feeds]] tables; add one (see the README's "
                    "\"Articles from feeds\") or read a file with --file")
    conn = store()
    try:
        report = feeds.fetch_feeds(config, conn, when, feeds=chosen, local=local)
    except NewsletterError as err:
        output.fail(err)
    finally:
        conn.close()
    if report.started:
        typer.echo(f"The issue of {when} is already {report.started}: its articles are frozen, nothing fetched "
                   "(fetch for a later day with --date)")
        return
    for result in report.results:
        status = "unchanged (304)" if result.not_modified else f"{len(result.written)} new article(s)"
        if result.updated:
            status += f", {len(result.updated)} updated"
        typer.echo(f"{result.name}: {status}")
        for path in result.written + result.updated:
            typer.echo(f"  {output.shown(path)}")
    for warning in report.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    typer.echo(f"{len(report.written)} new article(s) for {when}. Next: edit or delete them in "
               f"articles/{when}/, then `newsletter preview --date {when}`")


def _next_issue_day(config) -> date:
    """Return the day of the next slot: today before send_time, else tomorrow (in the newsletter's zone)."""
    from datetime import timedelta, timezone

    from newsletter.schedule import slot_on

    now = datetime.now(timezone.utc)
    today = now.astimezone(config.tz).date()
    return today if slot_on(today, config).at > now else today + timedelta(days=1)


# ----------------------------------------------------------------------------- check


@app.command("check")
def check_command(
    day: Optional[str] = typer.Option(None, "--date", "-d", help="The issue's day, YYYY-MM-DD (default: today)."),
    format: StatusFormat = typer.Option(StatusFormat.text, "--format", "-f", help="text, or json for machines."),
    digest: bool = typer.Option(False, "--digest", help="Check each variant of the weekly digest instead."),
    week: Optional[str] = typer.Option(
        None, "--week", "-w", help="With --digest: the ISO week, e.g. 2026-W48 (default: last week)."),
) -> None:
    """Check the day's issue and a sample message against the email rules; exit 1 on any error."""
    from newsletter.check import check_issue, format_report

    if digest or week is not None:
        if not digest or day is not None:
            output.fail("--week goes with --digest" if not digest else "--digest does not take --date")
        from newsletter.sending import check_digest

        try:
            reports = check_digest(settings(), store(), parse_week(week))
        except NewsletterError as err:
            output.fail(err)
        if not reports:
            typer.echo(f"{parse_week(week)}: no reader is owed a digest: nothing to check")
    else:
        try:
            reports = [check_issue(settings(), parse_day(day))]
        except NewsletterError as err:
            output.fail(err)
    if format is StatusFormat.json:
        import json

        shown = [report.to_dict() for report in reports]
        typer.echo(json.dumps(shown if digest else shown[0], indent=2, ensure_ascii=False))
    else:
        typer.echo("\n".join(format_report(report) for report in reports))
    if any(report.errors for report in reports):
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- schedule

NOTHING_DUE = 3  # exit code of `schedule --once` when no slot is due


@app.command("schedule")
def schedule_command(
    once: bool = typer.Option(
        False, "--once",
        help="Run the slot due now (within schedule.catch_up_hours), if any, and exit (for cron or a "
             "systemd timer). Exit code: 0 sent or already sent, 3 nothing due, 1 failure.",
    ),
    next_count: Optional[int] = typer.Option(
        None, "--next", metavar="N", min=1, max=1000,
        help="Print the next N run times in local time and UTC (to check the time zone and DST), and exit.",
    ),
) -> None:
    """Send each day's issue at schedule.send_time in newsletter.timezone, exactly once, until SIGTERM or Ctrl-C.

    At start, a slot less than schedule.catch_up_hours old whose issue is not sent runs at once; an older one is logged as missed, never sent late. Logs go to standard error.
    """
    import threading
    from datetime import timezone

    from newsletter import schedule

    config = settings()
    now = datetime.now(timezone.utc)
    if next_count is not None:
        typer.echo(f"The daily send runs at {config.schedule.send_time} {config.newsletter.timezone}:")
        for slot in schedule.next_runs(now, next_count, config):
            typer.echo(f"  {schedule.format_slot(slot)}")
        return
    stop = threading.Event()
    try:
        with output.logs_to_stderr("apscheduler"), schedule.stop_on_signals(stop):
            if once:
                result = schedule.run_once(config, now, stop=stop)
            else:
                schedule.run_scheduler(config, stop)
                result = None
    except NewsletterError as err:
        output.fail(err)
    if once and result is None:
        raise typer.Exit(NOTHING_DUE)
    if once and result is not None and not result.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- inbox

TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: an MTA piping a message keeps it and tries again later


@app.command("inbox")
def inbox_command(
    maildir: Optional[Path] = typer.Option(None, "--maildir", help="Read this Maildir instead of the [inbox] IMAP mailbox.",
                                           file_okay=False),
    mbox: Optional[Path] = typer.Option(None, "--mbox", help="Read this mbox file instead of the [inbox] IMAP mailbox.",
                                        dir_okay=False),
    stdin: bool = typer.Option(False, "--stdin", help="Read one message on standard input (an MTA alias or pipe); "
                                                      "exits 75 on a fault so the MTA tries again later."),
) -> None:
    """Read bounces, complaints and mailto unsubscribes ([inbox] over IMAP, or a Maildir, an mbox, stdin) and update the list."""
    from datetime import timezone

    from newsletter import inbox
    from newsletter import store as store_module
    from newsletter.settings import secret_key

    try:  # every fault, the settings' and the database's too, exits TEMPFAIL under --stdin
        config = load_settings(find_project(_state.project or Path.cwd()))
        conn = store_module.open_database(config)
        source = inbox.open_source(config, maildir=maildir, mbox=mbox, stdin=sys.stdin.buffer if stdin else None)
        try:
            summary = inbox.run(conn, config, secret_key(config), source, datetime.now(timezone.utc))
        finally:
            source.close()
    except store_module.errors(NewsletterError, OSError) as err:
        where = f"{err.filename}: " if isinstance(err, OSError) and err.filename else ""
        typer.echo(f"Error: {where}{err}", err=True)
        raise typer.Exit(TEMPFAIL if stdin else 1) from None
    for note in summary.notes:
        typer.echo(note)
    typer.echo(summary.line())


def main() -> None:
    """Run the command line; a disk or database fault no library call turned into an error is one line too."""
    from newsletter.store import errors

    try:
        app(prog_name="newsletter")
    except OSError as err:  # a full disk, a read-only file system: name the file, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"Error: {where}{err.strerror or err}", err=True)
        sys.exit(1)
    except errors() as err:
        from newsletter.store import describe, where as database_named

        loaded = _state._settings
        path = database_named(loaded) if loaded else Path("the subscriber database")
        detail = describe(path, err) if isinstance(path, Path) else " ".join(str(err).split())
        typer.echo(f"Error: {path}: the subscriber database failed: {detail}", err=True)
        sys.exit(1)

