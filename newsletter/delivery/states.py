"""The delivery state machine (RELIABILITY.md): the states of a row and of an issue, which state may
follow which, why a row failed, and the in-doubt policy. The database stores these same strings.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A delivery row's state (RELIABILITY.md): pending → claimed → data_sent → sent | retry | failed |
    in_doubt | skipped. The outbox transport only needs pending, claimed, sent and skipped."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DATA_SENT = "data_sent"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
    SKIPPED = "skipped"


PENDING, CLAIMED, DATA_SENT, SENT = State.PENDING, State.CLAIMED, State.DATA_SENT, State.SENT
RETRY, FAILED, IN_DOUBT, SKIPPED = State.RETRY, State.FAILED, State.IN_DOUBT, State.SKIPPED
STATES: tuple[State, ...] = tuple(State)
# Rows in these states still owe the subscriber a message: while any remain the issue is not done.
UNFINISHED: tuple[State, ...] = (PENDING, CLAIMED, DATA_SENT, RETRY)

# Which state may follow which; `set_state` refuses anything else.
# (pending, retry and in_doubt rows may fail as `expired` when the next day's issue starts; an
# in_doubt row goes back to retry once under the default in-doubt policy; a failed row goes back to
# retry only when the operator asks, `send --retry-failed`, and never a bounced or expired one)
TRANSITIONS: dict[State, frozenset[State]] = {
    PENDING: frozenset({CLAIMED, SKIPPED, FAILED}),
    CLAIMED: frozenset({DATA_SENT, SENT, RETRY, FAILED, PENDING, SKIPPED}),
    DATA_SENT: frozenset({SENT, RETRY, FAILED, IN_DOUBT}),
    RETRY: frozenset({CLAIMED, SKIPPED, FAILED}),
    IN_DOUBT: frozenset({CLAIMED, SKIPPED, SENT, RETRY, FAILED}),
    SENT: frozenset(),
    FAILED: frozenset({RETRY}),
    SKIPPED: frozenset(),
}


class IssueState(StrEnum):
    """A day's issue: not started (no row yet), sending, paused (by the breaker) or done."""

    NOT_STARTED = "not started"
    SENDING = "sending"
    PAUSED = "paused"
    DONE = "done"


ISSUE_SENDING, ISSUE_PAUSED, ISSUE_DONE = IssueState.SENDING, IssueState.PAUSED, IssueState.DONE
NOT_STARTED = IssueState.NOT_STARTED


class Reason(StrEnum):
    """Why a row failed (or, for NOTHING_IN_SECTIONS, was skipped at the snapshot)."""

    BOUNCED = "bounced"  # the mailbox does not exist: the subscriber is marked bounced
    REJECTED = "rejected"  # the server refused this message
    EXPIRED = "expired"  # a later day's issue started first
    UNBUILDABLE = "unbuildable"  # the message could not be made (a bad name)
    NOTHING_IN_SECTIONS = "no_articles"  # a `skipped` row: no article today in the sections its reader chose


class InDoubt(StrEnum):
    """What a send does with rows whose message may or may not have arrived."""

    RETRY = "retry"  # once more, same Message-ID: nobody missed, perhaps a second copy
    SKIP = "skip"  # leave them in doubt: nobody twice, perhaps one missed


REASON_BOUNCED, REASON_REJECTED, REASON_EXPIRED = Reason.BOUNCED, Reason.REJECTED, Reason.EXPIRED
IN_DOUBT_POLICIES: tuple[InDoubt, ...] = tuple(InDoubt)
