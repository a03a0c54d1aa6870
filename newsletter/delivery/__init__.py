"""Delivery: the ledger and its transports.

`send_issue` sends one day's issue to every subscriber exactly once, handing the ledger's claims to a
`Transport` (transport.py): the outbox (a Maildir of .eml files, outbox.py) or SMTP (the transport
with its throttle and retries, smtp.py; the loop driving every connection and its circuit breaker,
pool.py; one session's transactions session.py, opening one connection.py, the wire bytes wire.py,
reading a refusal replies.py). `send_proofs` sends [TEST]
copies to a few addresses without touching the ledger; `issue_status` reports where a day's issue
stands. The ledger (`ledger.py`) holds the state machine of RELIABILITY.md, `lock.py` the
one-sender lock. `sending.send_day` is the way in: it checks the issue, then sends it.
"""

import importlib

# names are loaded on first use, so that the CLI can name a transport without loading the senders
_HOMES = {
    "InDoubt": "states", "IssueState": "states", "IssueStatus": "ledger", "State": "states",
    "send_lock": "lock",
    "IssueChangedError": "send", "ProofReport": "send", "SendReport": "send", "issue_status": "send",
    "send_issue": "send", "send_proofs": "send",
    "Transport": "transport", "TransportName": "transport",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
