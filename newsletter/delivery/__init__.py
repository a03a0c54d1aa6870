"""Delivery: the ledger and its transports.

`send_issue` sends one day's issue to every subscriber exactly once, by the outbox transport (a
Maildir of .eml files) or by SMTP; `send_proofs` sends [TEST] copies to a few addresses without
touching the ledger; `issue_status` reports where a day's issue stands. The ledger (`ledger.py`)
holds the state machine of RELIABILITY.md, `outbox.py` the crash-safe file writer, `smtp.py` the
connection pool with its throttle, retries and circuit breaker, `lock.py` the one-sender lock.
"""

from newsletter.delivery.ledger import IssueStatus
from newsletter.delivery.lock import send_lock
from newsletter.delivery.send import (
    IssueChangedError, ProofReport, SendReport, issue_status, send_issue, send_proofs,
)

__all__ = ["IssueChangedError", "IssueStatus", "ProofReport", "SendReport", "issue_status", "send_issue",
           "send_lock", "send_proofs"]
