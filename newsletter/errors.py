"""The one error root and the few subclasses the CLI tells apart."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

from newsletter.findings import Finding, Severity
from newsletter.rules import Rule


class NewsletterError(Exception):
    """Anything the user can fix: the message names the file, line, field or host at fault.

    An error about the issue's files also carries its `findings` (one per problem, typed), as the
    email package's `msg.defects`; without a MESSAGE its text is the findings, one a line.
    """

    def __init__(self, message: str = "", *, findings: Iterable[Finding] = ()) -> None:
        self.findings: tuple[Finding, ...] = tuple(findings)
        super().__init__(message or "\n".join(map(str, self.findings)))

    @classmethod
    def about(cls, rule: Rule, message: str, path: str = "", line: int | None = None) -> Self:
        """Return an error of one error finding: RULE, at PATH (and LINE), saying MESSAGE."""
        return cls(findings=[Finding(Severity.ERROR, rule, path, line, message)])


class ProjectError(NewsletterError):
    """No project here, or a project that cannot be created."""


class SettingsError(NewsletterError):
    """newsletter.toml is wrong: an unknown key, a wrong type, a bad value."""


class SubscriberError(NewsletterError):
    """A subscriber operation failed: a bad address, an unknown subscriber, a refused change."""


class ImportFileError(SubscriberError):
    """An import file cannot be read or has invalid rows; nothing was imported."""


class ArticleError(NewsletterError):
    """An article file is invalid; nothing is built from its day."""


class BuildError(NewsletterError):
    """The issue cannot be built or rendered (size limit, template error)."""


class ClippedError(BuildError):
    """The issue's HTML is over Gmail's clipping size (EMAIL.md rule 6): `size` bytes."""

    def __init__(self, message: str, *, size: int, findings: Iterable[Finding] = ()) -> None:
        self.size = size
        super().__init__(message, findings=findings)


class HeaderError(NewsletterError):
    """A header value carries control characters or encoded words (EMAIL.md rule 21)."""


class DeliveryError(NewsletterError):
    """Sending failed for a reason that is not about one recipient (circuit breaker)."""


class NotCheckedError(DeliveryError):
    """An issue handed to the delivery without a passing check report (and without force)."""


class LockedError(NewsletterError):
    """Another sender holds the project's send lock."""


class StoreError(NewsletterError):
    """The subscriber database cannot be opened or written (full disk, read-only, damaged)."""


class InboxError(NewsletterError):
    """Incoming mail cannot be read: the IMAP server, a Maildir or an mbox file is unreachable or wrong."""


class FeedError(NewsletterError):
    """A feed cannot be fetched or read (timeout, an HTTP error, not a feed, too large, hostile XML)."""
