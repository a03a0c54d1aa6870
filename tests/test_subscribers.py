"""The subscriber list: adding, status changes, erasing, streaming, import from other tools, export."""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from newsletter import events, importer, store, subscribers
from newsletter.errors import SubscriberError
from newsletter.events import Kind
from newsletter.models import Frequency

from list_helpers import change_at_once, snapshot, write

# ----------------------------------------------------------------------------- one at a time


def test_add_normalizes_the_domain_and_keeps_the_local_part(conn):
    result = subscribers.add(conn, "  Ada.Lovelace+News@Example.COM ", name=" Ada ")
    assert result.outcome == "added"
    assert result.subscriber.email == "Ada.Lovelace+News@example.com"
    assert result.subscriber.email_key == "ada.lovelace+news@example.com"
    assert result.subscriber.name == "Ada"
    assert result.subscriber.status == "active"


def test_adding_an_address_again_in_another_case_changes_nothing(conn):
    first = subscribers.add(conn, "ada@example.com", name="Ada")
    again = subscribers.add(conn, "ADA@EXAMPLE.com", name="Someone Else")
    assert again.outcome == "unchanged" and not again.changed
    assert again.subscriber == first.subscriber
    assert subscribers.count_by_status(conn) == {"active": 1, "unsubscribed": 0, "bounced": 0, "pending": 0}


def test_plus_tags_and_dots_make_different_subscribers(conn):
    for address in ("ada@example.com", "a.da@example.com", "ada+news@example.com"):
        assert subscribers.add(conn, address).outcome == "added"
    assert subscribers.count_by_status(conn)["active"] == 3


@pytest.mark.parametrize(
    "address, message",
    [
        ("a" * 65 + "@example.com", "a" * 65 + "@example.com: not a valid email address: The email address is too "
         "long before the @-sign (1 character too many)."),
        ("not-an-address", "not-an-address: not a valid email address: An email address must have an @-sign."),
        ("ada@localhost", "ada@localhost: not a valid email address: The part after the @-sign is not valid. "
         "It should have a period."),
        ("ada@example.com\r\nBcc: eve@example.com", "'ada@example.com\\r\\nBcc: eve@example.com': "
         "not a valid email address: "),
        ("   ", "email: the address is empty"),
    ],
)
def test_add_rejects_invalid_addresses_naming_them(conn, address, message):
    with pytest.raises(SubscriberError) as caught:
        subscribers.add(conn, address)
    assert str(caught.value).startswith(message)
    assert subscribers.count_by_status(conn)["active"] == 0


@pytest.mark.parametrize(
    "name", ["Eve\r\nBcc: all@example.com", "Eve\nX", "tab\there", "nul\x00", "line\u2028sep", "=?utf-8?q?Bcc=3A_x?="]
)
def test_add_rejects_names_that_could_forge_headers(conn, name):
    with pytest.raises(SubscriberError) as caught:
        subscribers.add(conn, "eve@example.com", name=name)
    assert str(caught.value).startswith("name: ")
    assert subscribers.count_by_status(conn)["active"] == 0


def test_adding_an_unsubscribed_address_needs_resubscribe(conn):
    subscribers.add(conn, "ada@example.com", name="Ada")
    subscribers.unsubscribe(conn, "ada@example.com")
    with pytest.raises(SubscriberError) as caught:
        subscribers.add(conn, "Ada@example.com")
    assert str(caught.value) == (
        "ada@example.com is unsubscribed; if they asked to join again, add it with --resubscribe"
    )
    assert subscribers.get(conn, "ada@example.com").status == "unsubscribed"
    result = subscribers.add(conn, "Ada@example.com", resubscribe=True)
    assert result.outcome == "resubscribed"
    assert result.subscriber.status == "active" and result.subscriber.name == "Ada"


def test_unsubscribe_then_resubscribe(conn):
    subscribers.add(conn, "ada@example.com")
    change = subscribers.unsubscribe(conn, "ADA@example.com")
    assert change.changed and change.before == "active" and change.subscriber.status == "unsubscribed"
    assert not subscribers.unsubscribe(conn, "ada@example.com").changed
    back = subscribers.resubscribe(conn, "ada@example.com")
    assert back.changed and back.before == "unsubscribed" and back.subscriber.status == "active"
    assert not subscribers.resubscribe(conn, "ada@example.com").changed


def test_unsubscribe_leaves_a_bounced_address_bounced(conn):
    person = subscribers.add(conn, "ada@example.com").subscriber
    assert subscribers.set_status(conn, person.id, "bounced")
    assert not subscribers.unsubscribe(conn, "ada@example.com").changed
    assert subscribers.get(conn, "ada@example.com").status == "bounced"


def test_set_status_checks_the_status_and_the_id(conn):
    person = subscribers.add(conn, "ada@example.com").subscriber
    assert not subscribers.set_status(conn, person.id, "active")
    with pytest.raises(SubscriberError, match="^status: 'paused' is not one of active, unsubscribed, bounced, pending$"):
        subscribers.set_status(conn, person.id, "paused")
    with pytest.raises(SubscriberError, match="^subscriber 999 does not exist$"):
        subscribers.set_status(conn, 999, "bounced")


def test_unknown_addresses_are_named(conn):
    for operation in (subscribers.get, subscribers.unsubscribe, subscribers.resubscribe, subscribers.remove):
        with pytest.raises(SubscriberError, match="^nobody@example.org is not on the list$"):
            operation(conn, "nobody@example.org")


def test_remove_erases_the_person_and_their_deliveries(conn):
    ada = subscribers.add(conn, "ada@example.com").subscriber
    bob = subscribers.add(conn, "bob@example.com").subscriber
    with store.write(conn):
        conn.execute(
            "INSERT INTO issues (day, number, status, subject, html, text, sha256, created_at, updated_at)"
            " VALUES ('2026-11-26', 1, 'done', 's', 'h', 't', 'x', 'now', 'now')"
        )
        for person in (ada, bob):
            conn.execute(
                "INSERT INTO deliveries (issue_day, subscriber_id, state, message_id, email, updated_at)"
                " VALUES ('2026-11-26', ?, 'sent', ?, ?, 'now')",
                (person.id, f"<{person.id}@example.org>", person.email),
            )
    erased = subscribers.remove(conn, "ADA@example.com")
    assert erased == ada
    with pytest.raises(SubscriberError):
        subscribers.get(conn, "ada@example.com")
    left = conn.execute("SELECT email FROM deliveries").fetchall()
    assert [r["email"] for r in left] == ["bob@example.com"]
    assert conn.execute("SELECT count(*) FROM subscribers WHERE email_key LIKE 'ada%'").fetchone()[0] == 0


@pytest.mark.sqlite_only  # a SQLite trigger makes the failure; test_postgres has its own
def test_a_database_failure_is_a_subscriber_error_and_changes_nothing(conn):
    subscribers.add(conn, "ada@example.com")
    conn.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON subscribers BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    with pytest.raises(SubscriberError, match="^ada@example.com: the database refused the change.*disk says no"):
        subscribers.unsubscribe(conn, "ada@example.com")
    assert subscribers.get(conn, "ada@example.com").status == "active"


# ----------------------------------------------------------------------------- reading the list


def test_count_by_status_counts_every_status(conn):
    for i in range(5):
        subscribers.add(conn, f"p{i}@example.com")
    subscribers.unsubscribe(conn, "p1@example.com")
    subscribers.set_status(conn, subscribers.get(conn, "p2@example.com").id, "bounced")
    assert subscribers.count_by_status(conn) == {"active": 3, "unsubscribed": 1, "bounced": 1, "pending": 0}


@pytest.mark.sqlite_only  # SQLite's trace callback counts the queries
def test_iter_subscribers_streams_in_keyset_batches(conn):
    for i in range(25):
        subscribers.add(conn, f"p{i:02}@example.com")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    seen = list(subscribers.iter_subscribers(conn, batch_size=10))
    conn.set_trace_callback(None)
    assert [s.email for s in seen] == [f"p{i:02}@example.com" for i in range(25)]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3  # 10 + 10 + 5: one query per batch, never the whole list
    assert all("OFFSET" not in s.upper() and "id >" in s for s in selects)


def test_iter_subscribers_filters_by_status_and_search(conn):
    subscribers.add(conn, "ada@example.com", name="Ada Lovelace")
    subscribers.add(conn, "grace@example.org", name="Grace Hopper")
    subscribers.add(conn, "under_score@example.com", name="100% Real")
    subscribers.unsubscribe(conn, "grace@example.org")
    assert [s.email for s in subscribers.iter_subscribers(conn, status="active")] == [
        "ada@example.com", "under_score@example.com"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="HOPPER")] == ["grace@example.org"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="EXAMPLE.ORG")] == ["grace@example.org"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="_")] == ["under_score@example.com"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="%")] == ["under_score@example.com"]
    with pytest.raises(SubscriberError, match="^status: 'gone'"):
        list(subscribers.iter_subscribers(conn, status="gone"))


# ----------------------------------------------------------------------------- export


def test_export_csv_guards_cells_against_formulas(conn):
    for email, name in [("-dash@example.com", "=1+1"), ("plus@example.com", "+SUM(A1)"),
                        ("at@example.com", "@cmd"), ("quote@example.com", "'=already"), ("ok@example.com", "O'Brien")]:
        subscribers.add(conn, email, name=name)
    out = io.StringIO()
    assert subscribers.export(conn, out) == 5
    rows = out.getvalue().splitlines()
    assert rows[0] == "email,name,status,created_at,updated_at,sections,frequency"
    assert [r.split(",")[:2] for r in rows[1:]] == [
        ["'-dash@example.com", "'=1+1"], ["plus@example.com", "'+SUM(A1)"], ["at@example.com", "'@cmd"],
        ["quote@example.com", "''=already"], ["ok@example.com", "O'Brien"]]


def test_export_json_is_an_array_of_objects(conn):
    subscribers.add(conn, "ada@example.com", name='Ada "Countess" L\u00f8velace')
    subscribers.add(conn, "bob@example.com")
    subscribers.unsubscribe(conn, "bob@example.com")
    out = io.StringIO()
    subscribers.export(conn, out, format="json")
    data = json.loads(out.getvalue())
    assert [(d["email"], d["name"], d["status"]) for d in data] == [
        ("ada@example.com", 'Ada "Countess" L\u00f8velace', "active"), ("bob@example.com", "", "unsubscribed")]
    assert set(data[0]) == {"email", "name", "status", "created_at", "updated_at", "sections", "frequency",
                            "preferences_at", "events"}
    assert (data[0]["sections"], data[0]["frequency"]) == ([], "daily")
    assert [e["kind"] for e in data[1]["events"]][-1] == "unsubscribed"  # the history comes along
    only = io.StringIO()
    subscribers.export(conn, only, format="json", status="bounced")
    assert json.loads(only.getvalue()) == []


@pytest.mark.sqlite_only  # the folder listing includes SQLite's file
def test_export_to_a_file_replaces_it_whole(conn, tmp_path):
    subscribers.add(conn, "ada@example.com")
    target = tmp_path / "list.csv"
    target.write_text("old contents\n", encoding="utf-8")
    with pytest.raises(SubscriberError):
        subscribers.export_to_path(conn, target, status="nonsense")
    assert target.read_text(encoding="utf-8") == "old contents\n"
    assert subscribers.export_to_path(conn, target) == 1
    assert target.read_text(encoding="utf-8").splitlines()[1].startswith("ada@example.com,,active,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.csv", "subscribers"]


formula_names = st.sampled_from(["=1+1", "+x", "-y", "@z", "'", "''", "'=q", "a, b", 'say "hi"', "x;y", "  pad  "])
free_names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=25).filter(
    lambda n: "=?" not in n or "?=" not in n)
prefixes = st.sampled_from(["", "-", "+", "=", "'", "o'", "a.b"])


@pytest.mark.sqlite_only  # a new database per example (the SQL it runs is the other tests' on PostgreSQL)
@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(prefixes, formula_names | free_names, st.sampled_from(subscribers.STATUSES)),
                max_size=8))
def test_export_then_import_round_trips(entries):
    with tempfile.TemporaryDirectory() as folder:
        source = store.connect(Path(folder) / "a.db")
        for i, (prefix, name, status) in enumerate(entries):
            person = subscribers.add(source, f"{prefix}{i}@example.com", name=name).subscriber
            subscribers.set_status(source, person.id, status)
        exported = Path(folder) / "export.csv"
        subscribers.export_to_path(source, exported)
        target = store.connect(Path(folder) / "b.db")
        report = importer.import_file(target, exported)
        assert report.added == len(entries) and not report.invalid
        assert snapshot(target) == snapshot(source)
        source.close()
        target.close()


@settings(max_examples=150, deadline=None)
@given(st.emails() | st.text(max_size=40))
def test_addresses_are_accepted_whole_or_refused_with_a_reason(address):
    try:
        normalized, key = subscribers.normalize_email(address)
    except SubscriberError as err:
        assert str(err)
        return
    assert key == normalized.casefold()
    assert normalized.isprintable() and " " not in normalized
    assert subscribers.normalize_email(normalized) == (normalized, key)
    if normalized.isascii():
        assert subscribers.normalize_email(normalized.swapcase())[1] == key


# ----------------------------------------------------------------------------- the store as a state machine

LOCALS = ["ann", "Bob.Smith", "c+tag", "cbtag"]


class SubscriberListMachine(RuleBasedStateMachine):
    """Drive the real list and a dict side by side; after every step they must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.conn = store.connect(Path(self.folder.name) / "list.db")
        self.model: dict[str, dict[str, str]] = {}  # key → {email, name, status}

    def teardown(self) -> None:
        self.conn.close()
        self.folder.cleanup()

    addresses = st.tuples(st.sampled_from(LOCALS), st.lists(st.booleans(), min_size=16, max_size=16)).map(
        lambda t: "".join(c.upper() if up else c.lower() for c, up in zip(t[0] + "@example.com", t[1] + [False] * 20))
    )
    names = st.sampled_from(["", "Ann", "Zoë", "B. Smith"])

    @staticmethod
    def key(address: str) -> str:
        return address.casefold()

    @staticmethod
    def normalized(address: str) -> str:
        local, domain = address.rsplit("@", 1)
        return f"{local}@{domain.lower()}"

    @rule(address=addresses, name=names, resubscribe=st.booleans())
    def add(self, address: str, name: str, resubscribe: bool) -> None:
        entry = self.model.get(self.key(address))
        if entry is not None and entry["status"] != "active" and not resubscribe:
            with pytest.raises(SubscriberError, match="--resubscribe"):
                subscribers.add(self.conn, address, name=name)
            return
        result = subscribers.add(self.conn, address, name=name, resubscribe=resubscribe)
        if entry is None:
            assert result.outcome == "added"
            self.model[self.key(address)] = {"email": self.normalized(address), "name": name, "status": "active"}
        elif entry["status"] == "active":
            assert result.outcome == "unchanged"
        else:
            assert result.outcome == "resubscribed"
            entry["status"], entry["name"] = "active", name or entry["name"]

    @rule(address=addresses)
    def unsubscribe(self, address: str) -> None:
        entry = self.model.get(self.key(address))
        if entry is None:
            with pytest.raises(SubscriberError, match="is not on the list"):
                subscribers.unsubscribe(self.conn, address)
            return
        change = subscribers.unsubscribe(self.conn, address)
        assert change.changed == (entry["status"] == "active")
        if entry["status"] == "active":
            entry["status"] = "unsubscribed"

    @rule(address=addresses)
    def resubscribe(self, address: str) -> None:
        entry = self.model.get(self.key(address))
        if entry is None:
            with pytest.raises(SubscriberError, match="is not on the list"):
                subscribers.resubscribe(self.conn, address)
            return
        assert subscribers.resubscribe(self.conn, address).changed == (entry["status"] != "active")
        entry["status"] = "active"

    @rule(address=addresses)
    def bounce(self, address: str) -> None:
        entry = self.model.get(self.key(address))
        if entry is not None:
            person = subscribers.get(self.conn, address)
            assert subscribers.set_status(self.conn, person.id, "bounced") == (entry["status"] != "bounced")
            entry["status"] = "bounced"

    @rule(address=addresses)
    def remove(self, address: str) -> None:
        if self.model.pop(self.key(address), None) is None:
            with pytest.raises(SubscriberError, match="is not on the list"):
                subscribers.remove(self.conn, address)
        else:
            subscribers.remove(self.conn, address)

    @rule(rows=st.lists(st.tuples(addresses, names), min_size=1, max_size=4), resubscribe=st.booleans())
    def import_rows(self, rows: list[tuple[str, str]], resubscribe: bool) -> None:
        path = Path(self.folder.name) / "rows.csv"
        path.write_text("email,name\n" + "".join(f"{a},{n}\n" for a, n in rows), encoding="utf-8")
        importer.import_file(self.conn, path, resubscribe=resubscribe)
        merged: dict[str, tuple[str, str]] = {}
        for address, name in rows:
            first = merged.setdefault(self.key(address), (address, name))
            if not first[1] and name:
                merged[self.key(address)] = (first[0], name)
        for key, (address, name) in merged.items():
            entry = self.model.get(key)
            if entry is None:
                self.model[key] = {"email": self.normalized(address), "name": name, "status": "active"}
                continue
            entry["name"] = name or entry["name"]
            if resubscribe:
                entry["status"] = "active"

    @invariant()
    def list_matches_model(self) -> None:
        expected = dict.fromkeys(subscribers.STATUSES, 0)
        for entry in self.model.values():
            expected[entry["status"]] += 1
        assert subscribers.count_by_status(self.conn) == expected
        for key, entry in self.model.items():
            person = subscribers.get(self.conn, key.upper())
            assert (person.email, person.name, person.status) == (entry["email"], entry["name"], entry["status"])


SubscriberListMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
test_subscriber_list_matches_a_dict_model = pytest.mark.sqlite_only(SubscriberListMachine.TestCase)  # as above


# ----------------------------------------------------------------------------- two processes at once


@pytest.mark.sqlite_only  # its workers open a SQLite file; test_postgres has the same on PostgreSQL
def test_two_processes_change_the_list_at_once_without_losing_updates(tmp_path):
    database = tmp_path / "list.db"
    first = store.connect(database)
    subscribers.add(first, "shared@example.com")
    first.close()
    change_at_once(str(database), ("a", "b"), 60, tmp_path)
    conn = store.connect(database)
    for prefix in ("a", "b"):
        for i in range(60):
            person = subscribers.get(conn, f"{prefix}{i}@example.com")
            assert person.status == ("unsubscribed" if i % 3 == 0 else "active"), person
    assert subscribers.get(conn, "shared@example.com").status == "active"
    # 2 × 60 added one by one, 2 × 6 files × 25 imported, and the shared address
    assert subscribers.count_by_status(conn) == {"active": 2 * 40 + 2 * 150 + 1, "unsubscribed": 2 * 20, "bounced": 0, "pending": 0}
    conn.close()


# ----------------------------------------------------------------------------- web sign-up: pending


def test_sign_up_records_a_new_address_as_pending_and_leaves_others_alone(conn):
    subscribers.add(conn, "ada@example.com")
    subscribers.add(conn, "bob@example.com")
    subscribers.unsubscribe(conn, "bob@example.com")
    new = subscribers.sign_up(conn, "Carol@Example.com")
    assert new.outcome == "pending" and new.subscriber.status == "pending" and new.subscriber.name == ""
    for address, status in (("ADA@example.com", "active"), ("bob@example.com", "unsubscribed"),
                            ("carol@example.com", "pending")):
        again = subscribers.sign_up(conn, address)
        assert again.outcome == "unchanged" and again.subscriber.status == status
    assert subscribers.count_by_status(conn) == {"active": 1, "unsubscribed": 1, "bounced": 0, "pending": 1}


def test_confirm_id_activates_only_a_pending_subscriber(conn):
    pending = subscribers.sign_up(conn, "carol@example.com").subscriber
    left = subscribers.add(conn, "bob@example.com").subscriber
    subscribers.unsubscribe(conn, "bob@example.com")
    change = subscribers.confirm_id(conn, pending.id)
    assert change.changed and change.before == "pending" and change.subscriber.status == "active"
    assert not subscribers.confirm_id(conn, pending.id).changed
    assert not subscribers.confirm_id(conn, left.id).changed
    assert subscribers.get(conn, "bob@example.com").status == "unsubscribed"
    assert subscribers.confirm_id(conn, 999) is None


def test_unsubscribe_id_stops_active_and_pending_and_keeps_bounced(conn):
    active = subscribers.add(conn, "ada@example.com").subscriber
    pending = subscribers.sign_up(conn, "carol@example.com").subscriber
    bounced = subscribers.add(conn, "dan@example.com").subscriber
    subscribers.set_status(conn, bounced.id, "bounced")
    assert subscribers.unsubscribe_id(conn, active.id).subscriber.status == "unsubscribed"
    assert subscribers.unsubscribe_id(conn, pending.id).subscriber.status == "unsubscribed"
    assert subscribers.unsubscribe_id(conn, bounced.id).subscriber.status == "bounced"
    assert subscribers.unsubscribe_id(conn, 999) is None
    assert subscribers.get_id(conn, active.id).email == "ada@example.com"
    assert subscribers.get_id(conn, 999) is None


def test_adding_or_importing_a_pending_address_confirms_it(conn, tmp_path):
    subscribers.sign_up(conn, "carol@example.com")
    subscribers.sign_up(conn, "erin@example.com")
    assert subscribers.add(conn, "carol@example.com", name="Carol").subscriber.status == "active"
    importer.import_file(conn, write(tmp_path, "email\nerin@example.com\n"))
    assert subscribers.get(conn, "erin@example.com").status == "active"


def test_a_pending_export_imports_back_as_pending(conn, tmp_path):
    subscribers.sign_up(conn, "carol@example.com")
    exported = tmp_path / "list.csv"
    subscribers.export_to_path(conn, exported)
    other = store.connect(tmp_path / "other" / "newsletter.db")
    importer.import_file(other, exported)
    assert subscribers.get(other, "carol@example.com").status == "pending"


@pytest.mark.sqlite_only  # builds an old SQLite schema by hand
def test_a_version_2_database_gains_the_pending_status_and_keeps_its_ids(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    for migration in store.MIGRATIONS[:2]:
        old.executescript(migration)
    old.execute("PRAGMA user_version = 2")
    old.execute("INSERT INTO subscribers (id, email, email_key, name, status, created_at, updated_at)"
                " VALUES (7, 'ada@example.com', 'ada@example.com', 'Ada', 'active', 'x', 'x'),"
                " (42, 'bob@example.com', 'bob@example.com', '', 'unsubscribed', 'x', 'x')")
    with pytest.raises(sqlite3.IntegrityError):
        old.execute("INSERT INTO subscribers (email, email_key, status, created_at, updated_at)"
                    " VALUES ('c@example.com', 'c@example.com', 'pending', 'x', 'x')")
    old.close()
    conn = store.connect(path)
    assert [(p[0], p[1]) for p in conn.execute("SELECT id, email FROM subscribers ORDER BY id")] == [
        (7, "ada@example.com"), (42, "bob@example.com")]
    assert subscribers.sign_up(conn, "c@example.com").subscriber.status == "pending"
    assert conn.execute("SELECT count(*) FROM signup_requests").fetchone()[0] == 0


# ----------------------------------------------------------------------------- the list's rules, in one place


def test_only_the_subscriber_list_writes_a_status():
    """The ledger records a bounce through subscribers.record_bounce instead of its own UPDATE."""
    package = Path(subscribers.__file__).parent
    writers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if "UPDATE subscribers SET" in p.read_text(encoding="utf-8"))
    # importer.py applies, in one batch, the statuses subscribers.imported_status decided
    assert writers == ["importer.py", "subscribers.py"]


def test_a_bounce_recorded_while_sending_marks_only_an_active_subscriber(conn):
    from datetime import date

    from newsletter.delivery import ledger

    people = [subscribers.add(conn, f"r{i}@example.com").subscriber for i in range(3)]
    frozen = ledger.freeze_and_snapshot(conn, date(2026, 11, 30), number=1, subject="s", html="h", text="t",
                                        message_id=lambda sid: f"<{sid}@example.org>",
                                        now="2026-11-30T06:00:00+00:00")
    subscribers.unsubscribe(conn, people[1].email)
    claim = ledger.claim_batch(conn, frozen.day, 10, sha256=frozen.sha256, now="2026-11-30T06:00:01+00:00")
    assert claim.skipped == 1
    outcomes = [ledger.Outcome(p.id, ledger.FAILED, "550 no such user", "bounced", bounce=True) for p in people[:2]]
    ledger.record(conn, date(2026, 11, 30), outcomes=outcomes, now="2026-11-30T06:00:02+00:00")
    assert [subscribers.get_id(conn, p.id).status for p in people] == ["bounced", "unsubscribed", "active"]


OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["add", "add_resubscribe", "unsubscribe", "resubscribe", "confirm", "rejoin", "bounce",
                     "sign_up", "import_unsubscribed", "import_bounced", "import_active"]),
    st.integers(0, 2)), max_size=25)


@pytest.mark.sqlite_only  # a new database per example (the SQL it runs is the other tests' on PostgreSQL)
@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_every_status_change_follows_the_lists_rules(tmp_path, operations):
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        conn = store.connect(Path(folder) / "list.db")
        emails = [f"p{i}@example.com" for i in range(3)]
        for operation, who in operations:
            email = emails[who]
            before = {s.email: s.status for s in subscribers.iter_subscribers(conn)}
            try:
                if operation.startswith("add"):
                    subscribers.add(conn, email, resubscribe=operation == "add_resubscribe")
                elif operation == "sign_up":
                    subscribers.sign_up(conn, email)
                elif operation.startswith("import_"):
                    source = Path(folder) / "import.csv"
                    source.write_text(f"email,status\n{email},{operation[7:]}\n", encoding="utf-8")
                    importer.import_file(conn, source)
                elif email in before:
                    _change(conn, operation, subscribers.get(conn, email))
            except SubscriberError:
                pass
            after = {s.email: s.status for s in subscribers.iter_subscribers(conn)}
            for address, status in after.items():
                if address in before and before[address] != status:
                    assert status in subscribers.TRANSITIONS[before[address]], (operation, before[address], status)
        conn.close()


def _change(conn: sqlite3.Connection, operation: str, person) -> None:
    if operation == "unsubscribe":
        subscribers.unsubscribe(conn, person.email)
    elif operation == "resubscribe":
        subscribers.resubscribe(conn, person.email)
    elif operation == "confirm":
        subscribers.confirm_id(conn, person.id)
    elif operation == "rejoin":
        subscribers.confirm_id(conn, person.id, unsubscribed_at=person.updated_at)
    else:
        with store.write(conn):
            subscribers.record_bounce(conn, person.id, now=store.now_iso())


# ----------------------------------------------------------------------------- what readers chose


def test_a_new_reader_gets_every_section_daily_until_they_choose(conn):
    reader = subscribers.add(conn, "ada@example.com").subscriber
    assert reader.sections == frozenset() and reader.frequency == Frequency.DAILY and reader.preferences_at == ""


def test_sections_are_matched_ignoring_case_and_an_unknown_one_is_named():
    known = ("Nuclear", "Chemical", "Missile Defense")
    assert subscribers.known_sections([" nuclear", "MISSILE DEFENSE", ""], known) == {"Nuclear", "Missile Defense"}
    with pytest.raises(SubscriberError, match=r"'Nucelar' is not a section.*did you mean 'Nuclear'.*Nuclear, Chemical, Missile Defense"):
        subscribers.known_sections(["Chemical", "Nucelar"], known)


def test_preferences_are_kept_with_their_time_and_history(conn):
    reader = subscribers.add(conn, "ada@example.com", sections=["Nuclear"], frequency=Frequency.WEEKLY).subscriber
    assert (reader.sections, reader.frequency) == ({"Nuclear"}, Frequency.WEEKLY)
    assert subscribers.set_preferences(conn, reader.id, sections={"Chemical", "Nuclear"}, source="web", at="T1")
    assert not subscribers.set_preferences(conn, reader.id, frequency=Frequency.WEEKLY, source="web")
    assert subscribers.set_preferences(conn, reader.id, frequency=Frequency.DAILY, source="cli", at="T2")
    after = subscribers.get(conn, "ada@example.com")
    assert (after.sections, after.frequency, after.preferences_at) == ({"Chemical", "Nuclear"}, Frequency.DAILY, "T2")
    changes = [(e.source, e.at, e.detail) for e in events.history(conn, reader.id) if e.kind == Kind.PREFERENCES]
    assert changes == [("web", "T1", "sections: Chemical, Nuclear; frequency: weekly"),
                       ("cli", "T2", "sections: Chemical, Nuclear; frequency: daily")]
    with pytest.raises(SubscriberError, match="not on the list"):
        subscribers.set_preferences(conn, 999, frequency=Frequency.DAILY, source="cli")

@pytest.mark.sqlite_only  # builds an old SQLite schema by hand

def test_a_version_7_list_keeps_its_readers_and_they_get_everything_daily(tmp_path):
    path = tmp_path / "newsletter.db"
    old = sqlite3.connect(path)
    for migration in store.MIGRATIONS[:7]:
        old.executescript(migration)
    old.execute("INSERT INTO subscribers (email, email_key, name, status, topics, created_at, updated_at)"
                " VALUES ('ada@example.com', 'ada@example.com', 'Ada', 'active', '', 't', 't')")
    old.execute("PRAGMA user_version = 7")
    old.commit()
    old.close()
    migrated = subscribers.get(store.connect(path), "ada@example.com")
    assert (migrated.name, migrated.sections, migrated.frequency) == ("Ada", frozenset(), Frequency.DAILY)
