"""Articles from feeds: `newsletter fetch` against a real HTTP server on 127.0.0.1, and what it writes."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
from typer.testing import CliRunner

from feed_server import FeedServer, Item, Route, make_feed
from newsletter import readers
from newsletter.cli import app
from newsletter.feeds.markdown import to_markdown

DAY = date(2026, 11, 26)  # the project's slot: 06:00 UTC; DAY's entries were published after 06:00 on the 25th
NOON = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)


def at(hour: int, day: int = 25) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=timezone.utc)


@pytest.fixture
def server():
    with FeedServer() as running:
        yield running


def add_feeds(project: Path, *tables: str) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + "".join(f"\n[[feeds]]\n{t}\n" for t in tables),
                      encoding="utf-8")


def fetch(runner: CliRunner, project: Path, *args: str, day: date = DAY):
    return runner.invoke(app, ["--project", str(project), "fetch", "--date", day.isoformat(), *args])


def articles(project: Path, day: date = DAY) -> dict[str, str]:
    folder = project / "articles" / day.isoformat()
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.md"))} if folder.is_dir() else {}


def items(*titles: str, hour: int = 12) -> list[Item]:
    return [Item(t, f"https://harbour.example.org/{readers.slugify(t)}", at(hour), content=f"<p>{t} in full.</p>")
            for t in titles]


# --- the happy path ----------------------------------------------------------------------------------

def test_rss_and_atom_entries_are_built_next_to_hand_written_articles(project, server, runner):
    server.routes["/rss"] = Route(make_feed(items("Port reopens after storm"), kind="rss"))
    server.routes["/atom"] = Route(make_feed(items("Ferry timetable changes"), kind="atom", title="Atom Desk"))
    add_feeds(project, f'url = "{server.url("/rss")}"\nsection = "Analysis"',
              f'url = "{server.url("/atom")}"\nname = "Coast Wire"')
    (project / "articles" / DAY.isoformat()).mkdir(parents=True, exist_ok=True)
    (project / "articles" / DAY.isoformat() / "hand.md").write_text(
        "---\ntitle: A hand-written piece\n---\nWritten by an editor.\n", encoding="utf-8")
    result = fetch(runner, project)
    assert result.exit_code == 0, result.output
    written = articles(project)
    assert set(written) >= {"port-reopens-after-storm.md", "ferry-timetable-changes.md", "hand.md"}
    port = written["port-reopens-after-storm.md"]
    assert "section: Analysis" in port and "Harbour Desk, Nov. 25" in port and "url: https://harbour" in port
    assert "Port reopens after storm in full." in port and "published: 2026-11-25T12:00+00:00" in port
    assert "Coast Wire, Nov. 25" in written["ferry-timetable-changes.md"]
    build = runner.invoke(app, ["--project", str(project), "build", "--date", DAY.isoformat()])
    assert build.exit_code == 0, build.output
    html = (project / "outbox" / DAY.isoformat() / "issue.html").read_text(encoding="utf-8")
    assert "Port reopens after storm" in html and "Ferry timetable changes" in html and "A hand-written piece" in html
    agent = server.requests[0][1]["User-Agent"]
    assert agent.startswith("newsletter/") and "https://newsletter.example.org" in agent


def test_a_json_feed_1_1_becomes_articles(project, server, runner):
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Quay Notes", "home_page_url": "https://quay.example.org/",
            "items": [{"id": "q-1", "url": "https://quay.example.org/1", "title": "Crane number four returns",
                       "content_html": "<p>The crane is <em>back</em>.</p>", "date_published": "2026-11-25T13:00:00Z",
                       "authors": [{"name": "R. Vale"}]},
                      {"id": "q-2", "content_text": "A note without a title about tides today", "date_published":
                       "2026-11-25T14:00:00+01:00"}]}
    server.routes["/feed.json"] = Route(json.dumps(feed).encode(), headers={"Content-Type": "application/feed+json"})
    add_feeds(project, f'url = "{server.url("/feed.json")}"')
    assert fetch(runner, project).exit_code == 0
    written = articles(project)
    crane = written["crane-number-four-returns.md"]
    assert "The crane is *back*." in crane and "author: R. Vale" in crane and "Quay Notes, Nov. 25" in crane
    assert "a-note-without-a-title-about-tides-today.md" in written


def test_the_same_entries_fetched_twice_and_over_two_days_make_one_article_each(project, server, runner):
    server.routes["/rss"] = Route(make_feed(items("Pier lights replaced", "Dredging begins")))
    add_feeds(project, f'url = "{server.url("/rss")}"')
    assert fetch(runner, project).exit_code == 0
    assert fetch(runner, project).exit_code == 0
    assert fetch(runner, project, day=date(2026, 11, 27)).exit_code == 0
    server.routes["/rss"] = Route(make_feed([Item("Tug fleet grows", "https://harbour.example.org/tug", at(9, 26)),
                                             *items("Pier lights replaced", "Dredging begins")]))
    assert fetch(runner, project, day=date(2026, 11, 27)).exit_code == 0
    assert sorted(articles(project)) == ["dredging-begins.md", "pier-lights-replaced.md"]
    assert sorted(articles(project, date(2026, 11, 27))) == ["tug-fleet-grows.md"]


def test_an_unchanged_feed_costs_one_304(project, server, runner):
    server.routes["/rss"] = Route(make_feed(items("Harbour master retires")), etag='"v1"')
    add_feeds(project, f'url = "{server.url("/rss")}"')
    assert fetch(runner, project).exit_code == 0
    again = fetch(runner, project)
    assert again.exit_code == 0 and "unchanged (304)" in again.output
    assert server.requests[1][1].get("If-None-Match") == '"v1"'
    assert list(articles(project)) == ["harbour-master-retires.md"]


def test_an_entry_belongs_to_the_first_issue_after_it_was_published(project, server, runner):
    server.routes["/rss"] = Route(make_feed([
        Item("Before the slot", "https://harbour.example.org/a", at(5, 26)),
        Item("After the slot", "https://harbour.example.org/b", at(7, 26)),
        Item("For an older issue", "https://harbour.example.org/c", at(4, 25)),
    ]), etag='"same"')
    add_feeds(project, f'url = "{server.url("/rss")}"')
    assert fetch(runner, project).exit_code == 0
    assert list(articles(project)) == ["before-the-slot.md"]
    # the feed did not change, but an entry waited for the 27th: no validators kept, so no 304 hides it
    assert fetch(runner, project, day=date(2026, 11, 27)).exit_code == 0
    assert list(articles(project, date(2026, 11, 27))) == ["after-the-slot.md"]


# --- editors' control ---------------------------------------------------------------------------------

def test_fetching_again_never_overwrites_or_recreates_what_an_editor_changed_or_deleted(project, server, runner):
    server.routes["/rss"] = Route(make_feed(items("Kept as written", "Edited by us", "Deleted by us")))
    add_feeds(project, f'url = "{server.url("/rss")}"')
    assert fetch(runner, project).exit_code == 0
    folder = project / "articles" / DAY.isoformat()
    edited = folder / "edited-by-us.md"
    edited.write_text(edited.read_text(encoding="utf-8").replace("in full.", "in full, checked by the desk."),
                      encoding="utf-8")
    (folder / "deleted-by-us.md").unlink()
    updated = [Item(i.title, i.link, i.published, content=f"<p>{i.title}: corrected.</p>")
               for i in items("Kept as written", "Edited by us", "Deleted by us")]
    server.routes["/rss"] = Route(make_feed(updated))
    result = fetch(runner, project)
    assert result.exit_code == 0, result.output
    assert sorted(articles(project)) == ["edited-by-us.md", "kept-as-written.md"]
    assert "checked by the desk" in edited.read_text(encoding="utf-8")
    assert "Kept as written: corrected." in (folder / "kept-as-written.md").read_text(encoding="utf-8")


def test_a_hand_written_file_of_the_same_name_is_left_alone(project, server, runner):
    folder = project / "articles" / DAY.isoformat()
    folder.mkdir(parents=True)
    (folder / "pier-lights-replaced.md").write_text("---\ntitle: Ours\n---\nOur own text.\n", encoding="utf-8")
    server.routes["/rss"] = Route(make_feed(items("Pier lights replaced")))
    add_feeds(project, f'url = "{server.url("/rss")}"')
    assert fetch(runner, project).exit_code == 0
    assert "Our own text." in (folder / "pier-lights-replaced.md").read_text(encoding="utf-8")
    assert "Pier lights replaced in full." in (folder / "pier-lights-replaced-2.md").read_text(encoding="utf-8")


def test_a_started_issue_is_not_fetched_for_and_make_demo_runs_twice(project, server, runner, tmp_path):
    server.routes["/rss"] = Route(make_feed(items("Too late")))
    add_feeds(project, f'url = "{server.url("/rss")}"')
    from newsletter import store

    conn = store.connect(project / "subscribers" / "newsletter.db")
    conn.execute("INSERT INTO issues (day, number, status, subject, html, text, sha256, created_at, updated_at)"
                 " VALUES (?, 1, 'done', 's', 'h', 't', 'x', 'now', 'now')", (DAY.isoformat(),))
    conn.close()
    result = fetch(runner, project)
    assert result.exit_code == 0 and "The issue of 2026-11-26 is already done: its articles are frozen" in result.output
    assert articles(project) == {} and server.requests == []


# --- links and images ---------------------------------------------------------------------------------

def test_http_links_are_dropped_with_a_warning_or_upgraded(project, server, runner):
    body = '<p>See <a href="http://plain.example.org/x">the report</a> and <a href="/relative">our page</a>.</p>'
    entry = Item("Links inside", "http://harbour.example.org/links", NOON, content=body)
    server.routes["/plain"] = Route(make_feed([entry]))
    server.routes["/upgraded"] = Route(make_feed([Item("Upgraded links", "http://up.example.org/u/", NOON, content=body)],
                                                 link="https://up.example.org/"))
    add_feeds(project, f'url = "{server.url("/plain")}"', f'url = "{server.url("/upgraded")}"\nupgrade_http = true')
    result = fetch(runner, project)
    assert result.exit_code == 0
    plain = articles(project)["links-inside.md"]
    assert "See the report and our page." in plain and "http:" not in plain and "url:" not in plain
    assert "entry 'Links inside': http: link(s) dropped" in result.output
    upgraded = articles(project)["upgraded-links.md"]
    assert "[the report](<https://plain.example.org/x>)" in upgraded
    assert "[our page](<https://up.example.org/relative>)" in upgraded and "url: https://up.example.org/u/" in upgraded


def test_content_summary_takes_the_summary_and_links_to_the_rest(project, server, runner):
    entry = Item("Summary only", "https://harbour.example.org/s", NOON, content="<p>The long story.</p>",
                 summary="The short of it.")
    server.routes["/rss"] = Route(make_feed([entry]))
    add_feeds(project, f'url = "{server.url("/rss")}"\ncontent = "summary"')
    assert fetch(runner, project).exit_code == 0
    text = articles(project)["summary-only.md"]
    assert "The short of it." in text and "The long story." not in text
    assert "[Read the full article at Harbour Desk](<https://harbour.example.org/s>)" in text


def test_an_image_needs_https_and_a_description(project, server, runner):
    media = ('<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel>'
             '<title>Pictures</title><link>https://pics.example.org/</link>'
             '<item><title>With a description</title><link>https://pics.example.org/1</link><guid>p1</guid>'
             '<pubDate>Wed, 25 Nov 2026 12:00:00 GMT</pubDate><media:thumbnail url="https://pics.example.org/1.jpg"/>'
             '<media:description>Two cranes at dawn</media:description></item>'
             '<item><title>Without one</title><link>https://pics.example.org/2</link><guid>p2</guid>'
             '<pubDate>Wed, 25 Nov 2026 12:00:00 GMT</pubDate>'
             '<enclosure url="https://pics.example.org/2.jpg" type="image/jpeg" length="1"/></item>'
             '</channel></rss>')
    server.routes["/pics"] = Route(media.encode())
    add_feeds(project, f'url = "{server.url("/pics")}"')
    assert fetch(runner, project).exit_code == 0
    written = articles(project)
    assert "image: https://pics.example.org/1.jpg" in written["with-a-description.md"]
    assert "image_alt: Two cranes at dawn" in written["with-a-description.md"]
    assert "image" not in written["without-one.md"]


# --- feeds that misbehave -----------------------------------------------------------------------------

def test_broken_feeds_are_warnings_naming_the_feed_and_the_day_is_built_from_the_rest(project, server, runner):
    server.routes["/good"] = Route(make_feed(items("The one that arrived")))
    server.routes["/error"] = Route(b"oops", status=500)
    server.routes["/html"] = Route(b"<html><body><p>Not a feed at all</p></body></html>",
                                   headers={"Content-Type": "text/html"})
    server.routes["/huge"] = Route(make_feed(items(*(f"Entry {n}" for n in range(200)))))
    server.routes["/json"] = Route(b'{"version": "something else"}')
    server.routes["/elsewhere"] = Route(status=302, headers={"Location": "file:///etc/passwd"})
    add_feeds(project, f'url = "{server.url("/good")}"', f'url = "{server.url("/missing")}"\nname = "Gone"',
              f'url = "{server.url("/error")}"', f'url = "{server.url("/html")}"',
              f'url = "{server.url("/huge")}"\nmax_bytes = 5000', f'url = "{server.url("/json")}"',
              f'url = "{server.url("/elsewhere")}"')
    result = fetch(runner, project)
    assert result.exit_code == 0, result.output
    assert list(articles(project)) == ["the-one-that-arrived.md"]
    out = result.output
    assert f"feed 'Gone' ({server.url('/missing')}): the server answered 404 Not Found" in out
    assert f"({server.url('/error')}): the server answered 500" in out
    assert f"({server.url('/html')}): is not an RSS or Atom feed" in out
    assert "over max_bytes = 5,000" in out
    assert "is JSON but not a JSON Feed" in out
    assert "'file:///etc/passwd' (a redirect from" in out and "only http:// and https://" in out
    check = runner.invoke(app, ["--project", str(project), "check", "--date", DAY.isoformat()])
    assert check.exit_code == 0, check.output
    assert check.output.count("warning") >= 6 and "the server answered 404 Not Found" in check.output


def test_a_redirect_loop_is_a_warning(project, server, runner):
    server.routes["/a"] = Route(status=301, headers={"Location": "/b"})
    server.routes["/b"] = Route(status=302, headers={"Location": server.url("/a")})
    add_feeds(project, f'url = "{server.url("/a")}"')
    result = fetch(runner, project)
    assert result.exit_code == 0 and "redirects in a loop" in result.output
    assert len(server.requests) == 2


def test_a_slow_server_trips_the_timeout(project, server, runner):
    held = threading.Event()
    server.routes["/slow"] = Route(make_feed(items("Never arrives")), hold=held)
    add_feeds(project, f'url = "{server.url("/slow")}"\ntimeout = 0.5')
    started = time.monotonic()
    result = fetch(runner, project)
    held.set()
    assert result.exit_code == 0 and "timed out (no answer within 0.5 s)" in result.output
    assert time.monotonic() - started < 10
    assert articles(project) == {}


def test_a_server_trickling_bytes_trips_the_overall_deadline(project, server, runner):
    done = threading.Event()
    server.routes["/trickle"] = Route(make_feed(items("Sent a byte at a time")), trickle=done)
    add_feeds(project, f'url = "{server.url("/trickle")}"\ntimeout = 0.2')
    result = fetch(runner, project)
    done.set()
    assert result.exit_code == 0 and "timed out (still sending after 0.6 s)" in result.output


def test_a_compressed_answer_counts_at_its_real_size(project, server, runner):
    import gzip

    bomb = gzip.compress(make_feed(items("Small on the wire")) + b"<!--" + b" " * 3_000_000 + b"-->")
    server.routes["/gz"] = Route(bomb, headers={"Content-Encoding": "gzip"})
    add_feeds(project, f'url = "{server.url("/gz")}"\nmax_bytes = 1000000')
    assert len(bomb) < 20_000
    result = fetch(runner, project)
    assert "is over max_bytes = 1,000,000 bytes" in result.output and articles(project) == {}


def test_with_every_feed_failing_and_no_articles_the_empty_policy_applies(project, server, runner):
    add_feeds(project, f'url = "{server.url("/missing")}"\nname = "Gone"')
    assert fetch(runner, project).exit_code == 0
    shutil_day = project / "articles" / DAY.isoformat()
    assert not shutil_day.exists() or not any(shutil_day.iterdir())
    check = runner.invoke(app, ["--project", str(project), "check", "--date", DAY.isoformat()])
    assert check.exit_code == 0, check.output
    assert check.output.startswith("No issue to check: 2026-11-26: 0 article(s)")
    assert f"warning {server.url('/missing')}: feed 'Gone'" in check.output
    send = runner.invoke(app, ["--project", str(project), "send", "--date", DAY.isoformat()])
    assert send.exit_code == 0 and "nothing sent (empty_policy = skip)" in send.output


def test_entity_expansion_is_refused(project, server, runner):
    laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    document = (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">{laughs}]><rss version="2.0"><channel>'
                f'<title>&l9;</title><item><title>&l9;</title><guid>x</guid></item></channel></rss>')
    server.routes["/laughs"] = Route(document.encode())
    add_feeds(project, f'url = "{server.url("/laughs")}"')
    started = time.monotonic()
    result = fetch(runner, project)
    assert result.exit_code == 0 and "declares the XML entity 'l0'" in result.output
    assert time.monotonic() - started < 10 and articles(project) == {}


def test_external_entities_are_never_read(project, server, runner, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE", encoding="utf-8")
    document = (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "{secret.as_uri()}">]><rss version="2.0">'
                f'<channel><title>t</title><item><title>Leak &x;</title><guid>x</guid>'
                f'<pubDate>Wed, 25 Nov 2026 12:00:00 GMT</pubDate><description>&x;</description></item></channel></rss>')
    server.routes["/xxe"] = Route(document.encode())
    add_feeds(project, f'url = "{server.url("/xxe")}"')
    result = fetch(runner, project)
    assert "declares the XML entity 'x'" in result.output
    assert "TOP-SECRET-VALUE" not in "".join(articles(project).values())
    # and feedparser on its own (without the refusal) does not read the file either
    import feedparser

    assert "TOP-SECRET-VALUE" not in json.dumps(feedparser.parse(document.encode()), default=str)


def test_scripts_and_event_handlers_are_removed(project, server, runner):
    hostile = ('<p onclick="steal()">Calm <b onmouseover="x()">text</b><script>alert(1)</script>'
               '<img src="https://evil.example.org/t.gif" onerror="alert(2)"> and '
               '<a href="javascript:alert(3)">a trick</a> <iframe src="https://evil.example.org"></iframe>'
               '<style>body{display:none}</style></p>')
    server.routes["/hostile"] = Route(make_feed([Item("Hostile content <script>x</script>", "https://h.example.org/1",
                                                      NOON, content=hostile)]))
    add_feeds(project, f'url = "{server.url("/hostile")}"')
    assert fetch(runner, project).exit_code == 0
    [text] = articles(project).values()
    for bad in ("script", "onclick", "onerror", "onmouseover", "javascript", "iframe", "alert", "display:none"):
        assert bad not in text.lower()
    assert "Calm **text** and a trick" in text
    assert runner.invoke(app, ["--project", str(project), "build", "--date", DAY.isoformat()]).exit_code == 0
    html = (project / "outbox" / DAY.isoformat() / "issue.html").read_text(encoding="utf-8").lower()
    assert "onclick" not in html and "javascript:" not in html and "<script" not in html


def test_ten_thousand_entries_are_bounded_by_max_items(project, server, runner):
    many = [Item(f"Entry number {n}", f"https://bulk.example.org/{n}", at(12), id=f"bulk-{n}") for n in range(10_000)]
    server.routes["/bulk"] = Route(make_feed(many), headers={"Content-Type": "application/rss+xml"})
    add_feeds(project, f'url = "{server.url("/bulk")}"\nmax_items = 5\nmax_bytes = 20000000')
    started = time.monotonic()
    result = fetch(runner, project)
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert len(articles(project)) == 5
    assert elapsed < 5, f"{elapsed:.1f} s for 10,000 entries"  # feedparser alone takes ~6 s for all of them


# --- settings, the command, the scheduler ------------------------------------------------------------

def test_a_file_feed_outside_the_project_is_refused(project, runner):
    add_feeds(project, 'url = "file:../elsewhere.xml"')
    result = runner.invoke(app, ["--project", str(project), "fetch"])
    assert result.exit_code == 1
    assert "[[feeds]] #1: 'file:../elsewhere.xml' is outside the project folder" in result.output


@pytest.mark.parametrize("table, message", [
    ('url = "ftp://example.org/feed"', "must be an http:// or https:// address"),
    ('url = "https://example.org/f"\nsection = "Sport"', "section 'Sport' is not in issue.sections"),
    ('url = "https://example.org/f"\nmax_items = 0', "max_items must be between 1 and 100"),
    ('url = "https://example.org/f"\ncontent = "all"', "content must be 'full' or 'summary'"),
    ('url = "https://example.org/f"\nmax_item = 3', "unknown key 'max_item'"),
])
def test_a_wrong_feeds_table_is_an_error_naming_it(project, runner, table, message):
    add_feeds(project, 'url = "https://example.org/ok"', table)
    result = runner.invoke(app, ["--project", str(project), "fetch"])
    assert result.exit_code == 1 and message in result.output
    assert "newsletter.toml" in result.output and ("[[feeds]] #2" in result.output or "feeds #2" in result.output)


def test_fetch_without_a_date_fills_the_next_issue(project, server, runner):
    from newsletter.schedule import slot_on
    from newsletter.settings import load_settings

    now = datetime.now(timezone.utc)
    today = now.date()  # the project's zone is UTC
    expected = today if slot_on(today, load_settings(project)).at > now else date.fromordinal(today.toordinal() + 1)
    server.routes["/rss"] = Route(make_feed([Item("Fresh today", "https://harbour.example.org/fresh", now)]))
    add_feeds(project, f'url = "{server.url("/rss")}"')
    result = runner.invoke(app, ["--project", str(project), "fetch"])
    assert result.exit_code == 0, result.output
    assert list(articles(project, expected)) == ["fresh-today.md"]


def test_fetch_file_reads_a_feed_from_disk(project, runner, tmp_path):
    path = tmp_path / "saved.xml"
    path.write_bytes(make_feed(items("Read from a file"), kind="atom"))
    result = fetch(runner, project, "--file", str(path))
    assert result.exit_code == 0, result.output
    assert list(articles(project)) == ["read-from-a-file.md"]


def test_the_scheduler_fetches_two_feeds_before_it_builds_and_sends_them_with_the_hand_written_articles(
        project, server, runner):
    import email
    import email.policy

    from newsletter import schedule
    from newsletter.settings import load_settings

    server.routes["/rss"] = Route(make_feed(items("Scheduled arrival")))
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Quay Notes",
            "items": [{"id": "q-9", "url": "https://quay.example.org/9", "title": "Second source arrives",
                       "content_html": "<p>From the JSON Feed.</p>", "date_published": "2026-11-25T20:00:00Z"}]}
    server.routes["/json"] = Route(json.dumps(feed).encode())
    add_feeds(project, f'url = "{server.url("/rss")}"', f'url = "{server.url("/json")}"')
    folder = project / "articles" / DAY.isoformat()
    folder.mkdir(parents=True)
    (folder / "desk.md").write_text("---\ntitle: From the desk\n---\nHand-written today.\n", encoding="utf-8")
    added = runner.invoke(app, ["--project", str(project), "subscribers", "add", "reader@example.org"])
    assert added.exit_code == 0, added.output
    result = schedule.run_due_issue(load_settings(project), DAY)
    assert result.outcome == schedule.SENT and result.articles == 3, result.detail
    [path] = (project / "outbox" / DAY.isoformat() / "mail" / "new").iterdir()
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    html = message.get_body(("html",)).get_content()
    for title in ("Scheduled arrival", "Second source arrives", "From the desk"):
        assert title in html


# --- the Markdown the files hold ----------------------------------------------------------------------

_WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


def _markup(depth: int = 2):
    """HTML of the tags the sanitizer keeps, nested, around open-ended text."""
    import html as html_lib

    leaf = _WORDS.map(html_lib.escape)
    if depth == 0:
        return leaf
    inner = st.lists(_markup(depth - 1), min_size=1, max_size=3).map(" ".join)
    tags = st.sampled_from(["p", "strong", "em", "code", "blockquote", "li", "h3", "a"])
    return st.one_of(leaf, st.tuples(tags, inner).map(
        lambda t: f'<a href="https://example.org/x">{t[1]}</a>' if t[0] == "a"
        else f"<ul><li>{t[1]}</li></ul>" if t[0] == "li" else f"<{t[0]}>{t[1]}</{t[0]}>"))


@hypothesis_settings(max_examples=150, deadline=None)
@given(_markup())
def test_entry_markup_reads_back_as_the_same_words(markup):
    from lxml import html as lxml_html

    def words(fragment: str) -> str:
        if not fragment.strip():
            return ""
        return "".join(lxml_html.fragment_fromstring(fragment, create_parent="div").text_content().split())

    clean = readers.sanitize(markup)
    assert words(readers.render_markdown(to_markdown(clean))) == words(clean)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80))
def test_entry_text_reads_back_as_the_same_words(text):
    import html as html_lib

    from lxml import html as lxml_html

    markup = f"<p>{html_lib.escape(text)}</p>"
    rendered = readers.render_markdown(to_markdown(readers.sanitize(markup)))
    expected = " ".join(lxml_html.fragment_fromstring(readers.sanitize(markup) or "<p></p>",
                                                      create_parent="div").text_content().split())
    got = " ".join(lxml_html.fragment_fromstring(rendered or "<p></p>", create_parent="div").text_content().split())
    assert got == expected
