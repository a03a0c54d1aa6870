"""Delivery: the ledger and its transports.

`send_issue` writes one day's issue to every subscriber exactly once (the outbox transport, a
Maildir of .eml files); `issue_status` reports where a day's issue stands. The ledger
(`ledger.py`) holds the state machine of RELIABILITY.md, `outbox.py` the crash-safe file writer,
`lock.py` the one-sender-at-a-time lock.
"""

from newsletter.delivery.ledger import IssueStatus
from newsletter.delivery.lock import send_lock
from newsletter.delivery.send import IssueChangedError, SendReport, issue_status, send_issue

__all__ = ["IssueChangedError", "IssueStatus", "SendReport", "issue_status", "send_issue", "send_lock"]
