"""One typed problem report: what the readers, builder, renderer, messages and check emit.

An error carries the findings that caused it (`err.findings`, as the email package's `msg.defects`),
so `newsletter check` reads what went wrong from fields instead of parsing the error's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from newsletter.rules import Rule


class Severity(StrEnum):
    ERROR = "error"  # the issue is not sent
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, which rule, where (a file relative to the project, a line), and what."""

    severity: Severity
    rule: Rule
    path: str = ""  # the article file, template or settings file at fault; "" when none is
    line: int | None = None
    message: str = ""

    @property
    def where(self) -> str:
        """Return "path:line", "path", or "" as the error text and `check` show it."""
        if not self.path:
            return ""
        return f"{self.path}:{self.line}" if self.line else self.path

    def __str__(self) -> str:
        where = self.where
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict:
        return {
            "severity": str(self.severity), "rule": self.rule.number, "rule_id": str(self.rule),
            "path": self.path, "line": self.line, "where": self.where, "message": self.message,
        }


def error(rule: Rule, message: str, path: str = "", line: int | None = None) -> Finding:
    """Return an error finding (the issue is not sent)."""
    return Finding(Severity.ERROR, rule, path, line, message)


def warning(rule: Rule, message: str, path: str = "", line: int | None = None) -> Finding:
    """Return a warning finding."""
    return Finding(Severity.WARNING, rule, path, line, message)


__all__ = ["Finding", "Severity", "error", "warning"]
