"""Where incoming mail is read from: an IMAP mailbox (TLS), a Maildir, an mbox file, or standard input.

Each source yields `Incoming` messages: a label for the summary, the size (known before the
message is read, so a huge one is never loaded), `load()` for the bytes, and `settle(for_human)`
called once the message was acted on. Settling never deletes unless asked:

- IMAP: moved to `[inbox] processed_folder`, or flagged, or (processed = "delete") deleted; a
  message for a human is moved to `human_folder` (flagged, in flag mode);
- Maildir: marked seen (moved to cur/ with the S flag), and flagged (F) when it is for a human; a
  later run reads only messages without either mark (so a message a person has read is left alone);
- mbox: left as it is (a file is read once; reading it again changes nothing, by the dedupe keys);
- standard input: a message for a human is kept in the project's `inbox/for-a-human/` Maildir.
"""

from __future__ import annotations

import imaplib
import mailbox
import os
import re
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol

from newsletter.errors import InboxError
from newsletter.settings import INBOX_PASSWORD_ENV, InboxSettings, Settings
from newsletter.tls import client_context

DONE_KEYWORD, HUMAN_KEYWORD = "$NewsletterDone", "$NewsletterHuman"
HUMAN_MAILDIR = "inbox/for-a-human"


@dataclass
class Incoming:
    label: str
    size: int | None  # None: known only once loaded (an mbox)
    load: Callable[[], bytes]
    settle: Callable[[bool], None]


class Source(Protocol):
    name: str

    def messages(self) -> Iterator[Incoming]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- IMAP


def _quote(folder: str) -> str:
    return '"' + folder + '"'


class ImapSource:
    """The [inbox] IMAP mailbox, over TLS."""

    def __init__(self, settings: Settings, password: str) -> None:
        inbox = settings.inbox
        self.inbox = inbox
        self.name = f"{inbox.host}:{inbox.port}"
        if not password:
            raise InboxError(f"{self.name}: {INBOX_PASSWORD_ENV} is empty; the IMAP password is read only from the environment")
        try:
            self.imap = imaplib.IMAP4_SSL(inbox.host, inbox.port, ssl_context=_context(settings, inbox),
                                          timeout=inbox.timeout)
        except (OSError, imaplib.IMAP4.error) as err:
            raise InboxError(f"{self.name}: cannot connect over TLS: {err}") from err
        self._call("login", lambda: self.imap.login(inbox.username, password),
                   f"login failed for {inbox.username!r}")
        self._call("select", lambda: self.imap.select(_quote(inbox.folder)), f"cannot open the folder {inbox.folder!r}")
        self._expunge = False
        self._made: set[str] = set()

    def _call(self, what: str, command: Callable[[], tuple[str, list]], fails: str = "") -> list:
        try:
            status, data = command()
        except (OSError, imaplib.IMAP4.error) as err:
            raise InboxError(f"{self.name}: {fails or what}: {err}") from err
        if status != "OK":
            raise InboxError(f"{self.name}: {fails or what}: {_said(data)}")
        return data

    def messages(self) -> Iterator[Incoming]:
        search = ("UNKEYWORD", DONE_KEYWORD, "UNKEYWORD", HUMAN_KEYWORD) if self.inbox.processed == "flag" else ("ALL",)
        found = self._call("search", lambda: self.imap.uid("SEARCH", *search))
        for uid in (found[0] or b"").split():
            text = uid.decode("ascii")
            sizes = self._call("fetch", partial(self.imap.uid, "FETCH", text, "(RFC822.SIZE)"))
            match = re.search(rb"RFC822\.SIZE (\d+)", b" ".join(d if isinstance(d, bytes) else d[0] for d in sizes if d))
            if match is None:
                continue  # gone meanwhile (another client moved it)
            yield Incoming(f"{self.inbox.folder} uid {text}", int(match[1]), partial(self._load, text),
                           partial(self._settle, text))

    def _load(self, uid: str) -> bytes:
        data = self._call("fetch", partial(self.imap.uid, "FETCH", uid, "(BODY.PEEK[])"))
        return next(part[1] for part in data if isinstance(part, tuple))

    def _settle(self, uid: str, for_human: bool) -> None:
        mode = self.inbox.processed
        if mode == "flag":
            flags = f"({HUMAN_KEYWORD} \\Flagged)" if for_human else f"({DONE_KEYWORD} \\Seen)"
            self._call("store", lambda: self.imap.uid("STORE", uid, "+FLAGS", flags))
        elif for_human or mode == "move":
            self._move(uid, self.inbox.human_folder if for_human else self.inbox.processed_folder)
        else:
            self._call("store", lambda: self.imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)"))
            self._expunge = True

    def _move(self, uid: str, folder: str) -> None:
        if folder not in self._made:
            status, data = self.imap.create(_quote(folder))  # NO when it exists already: fine
            self._made.add(folder)
        if "MOVE" in self.imap.capabilities:
            self._call("move", lambda: self.imap.uid("MOVE", uid, _quote(folder)), f"cannot move to {folder!r}")
            return
        self._call("copy", lambda: self.imap.uid("COPY", uid, _quote(folder)), f"cannot copy to {folder!r}")
        self._call("store", lambda: self.imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)"))
        self._expunge = True

    def close(self) -> None:
        try:
            if self._expunge:
                self.imap.expunge()
            self.imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass  # everything was settled message by message; a failed goodbye loses nothing


def _said(data: list) -> str:
    return " ".join(d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data if d)


def _context(settings: Settings, inbox: InboxSettings) -> ssl.SSLContext:
    return client_context(settings.root, inbox.ca_file, inbox.verify, f"{settings.root / 'newsletter.toml'}: [inbox]",
                          InboxError)


# ----------------------------------------------------------------------------- local files


class MaildirSource:
    """A Maildir the MTA delivers to: each message read once (seen), those for a human also flagged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise InboxError(f"{path}: not a Maildir (no new/ and cur/ folders in it)")

    def messages(self) -> Iterator[Incoming]:
        for sub in ("new", "cur"):
            try:
                names = sorted(n for n in os.listdir(self.path / sub) if not n.startswith("."))
            except OSError as err:
                raise InboxError(f"{self.path / sub}: cannot read: {err.strerror}") from err
            for name in names:
                flags = name.partition(":2,")[2]
                if "S" in flags or "F" in flags:
                    continue
                file = self.path / sub / name
                try:
                    size = file.stat().st_size
                except FileNotFoundError:
                    continue  # gone meanwhile
                yield Incoming(f"{file}", size, file.read_bytes, partial(self._settle, file))

    def _settle(self, file: Path, for_human: bool) -> None:
        base, _, flags = file.name.partition(":2,")
        flags = "".join(sorted(set(flags) | set("SF" if for_human else "S")))
        try:
            os.rename(file, self.path / "cur" / f"{base}:2,{flags}")
        except OSError as err:
            raise InboxError(f"{file}: cannot mark it read: {err.strerror}") from err

    def close(self) -> None:
        pass


class MboxSource:
    """An mbox file, read and left as it is (its size per message is known only once read)."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        if not path.is_file():
            raise InboxError(f"{path}: no such mbox file")
        self.box = mailbox.mbox(path, create=False)

    def messages(self) -> Iterator[Incoming]:
        try:
            keys = list(self.box.keys())
        except OSError as err:
            raise InboxError(f"{self.name}: cannot read: {err.strerror}") from err
        for number, key in enumerate(keys, 1):
            yield Incoming(f"{self.name} message {number}", None, partial(self.box.get_bytes, key), _leave)

    def close(self) -> None:
        self.box.close()


def _leave(for_human: bool) -> None:
    """Settle an mbox message: leave it where it is."""


class StdinSource:
    """One message on standard input (an MTA's pipe); a message for a human is kept in the project."""

    name = "standard input"

    def __init__(self, settings: Settings, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.limit = settings.inbox.max_message_bytes
        self.keep = settings.root / HUMAN_MAILDIR
        self.raw = b""

    def messages(self) -> Iterator[Incoming]:
        self.raw = self.stream.read(self.limit + 1)
        size = len(self.raw)
        while len(chunk := self.stream.read(1 << 20)):  # the MTA wants all of it read; the excess is not kept
            size += len(chunk)
        yield Incoming("standard input", size, self._raw, self._settle)

    def _raw(self) -> bytes:
        return self.raw

    def _settle(self, for_human: bool) -> None:
        if for_human and len(self.raw) <= self.limit:
            try:
                self.keep.parent.mkdir(parents=True, exist_ok=True)
                mailbox.Maildir(self.keep, create=True).add(self.raw)
            except OSError as err:
                raise InboxError(f"{self.keep}: cannot keep the message for a human: {err.strerror}") from err

    def close(self) -> None:
        pass


__all__ = ["HUMAN_MAILDIR", "ImapSource", "Incoming", "MaildirSource", "MboxSource", "Source", "StdinSource"]
