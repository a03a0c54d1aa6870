"""What `newsletter check` found for one day, and how it is shown: text for people, a dict for JSON."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from newsletter.findings import Finding, Severity


@dataclass(frozen=True)
class CheckReport:
    """What the check found for one day, errors first."""

    day: date
    findings: tuple[Finding, ...] = ()
    skipped_reason: str = ""
    number: int | None = None
    subject: str = ""
    html_bytes: int | None = None

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == Severity.WARNING)

    @property
    def skipped(self) -> bool:
        """True when the day has no issue to send (the empty policy), so there was nothing to check."""
        return bool(self.skipped_reason) and self.html_bytes is None and not self.errors

    @property
    def ok(self) -> bool:
        """True when nothing stops the issue from being sent."""
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "summary": {
                "ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "skipped": self.skipped, "skipped_reason": self.skipped_reason,
                "number": self.number, "subject": self.subject, "html_bytes": self.html_bytes,
            },
            "findings": [f.to_dict() for f in self.findings],
        }


def errors_first(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Return FINDINGS without repeats, errors first, each group in the order found."""
    unique = list(dict.fromkeys(findings))
    return tuple(sorted(unique, key=lambda f: f.severity != Severity.ERROR))


def format_report(report: CheckReport) -> str:
    """Return REPORT as lines a person reads at a glance: a summary, then errors, then warnings."""
    if report.skipped:
        return "\n".join([f"No issue to check: {report.skipped_reason}",
                          *(f"  warning {finding}" for finding in report.findings)])
    errors, warnings = len(report.errors), len(report.warnings)
    if report.skipped_reason:  # the empty policy sends a notice instead: that is what was checked
        what = f"{report.skipped_reason}\nThe notice of {report.day}"
    elif report.number:
        what = f"Issue No. {report.number} of {report.day}"
    else:
        what = f"Issue of {report.day}"
    size = f", {report.html_bytes:,} bytes of HTML" if report.html_bytes is not None else ""
    counts = f"{errors} error{'' if errors == 1 else 's'}, {warnings} warning{'' if warnings == 1 else 's'}"
    lines = [f"{what}{size}: {counts}" if report.findings else f"{what}{size}: no problems found"]
    for finding in report.findings:
        rule = f" (EMAIL.md rule {finding.rule.number})" if finding.rule.number else ""
        label = "ERROR  " if finding.severity == Severity.ERROR else "warning"
        body = f"{finding}{rule}".replace("\n", "\n         ")
        lines.append(f"  {label} {body}")
    if errors:
        lines.append("Fix the errors above: an issue with errors is not sent.")
    return "\n".join(lines)
