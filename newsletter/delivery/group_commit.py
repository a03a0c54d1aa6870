"""When the SMTP loop commits: one commit for every connection about to end a message.

Each connection carries one message at a time, and a message's final "." waits for the commit
that records it `data_sent` (RELIABILITY.md). So one commit can cover at most one message per
connection, and on a fast server the pool's rate is about `connections / (commit + cycle)`, where
a cycle is what a connection does between two requests (the reply to its ".", the next MAIL and
RCPT). Committing as soon as the first request comes splits the pool: the connections released
by one commit ask again while the next commit, holding the others, is on its way, and wait a
whole commit more. The pool then runs at half its rate, taking turns.

`GroupCommit` learns how long a commit takes and how long a cycle takes, and tells the
loop (pool.py) how long to wait for the connections released by earlier commits: those expected back
within one commit's time, and no longer. With a slow server (a cycle much longer than a commit)
it never waits; the commit then hides behind the transfer of the body anyway.
"""

from __future__ import annotations

from collections.abc import Iterable

_WEIGHT = 0.2  # of a new sample in the running averages
_SLACK = 0.5  # a connection is waited for until its expected return plus this many cycles


class GroupCommit:
    """Running estimates of a commit and a connection's cycle, and the wait they call for."""

    def __init__(self) -> None:
        self.commit_seconds = 0.0  # how long recording data_sent takes (the fsync)
        self.cycle_seconds = 0.0  # from a connection's release by a commit to its next request
        self._released: dict[int, float] = {}  # connections released and not back yet: when

    def asked(self, worker: int, at: float) -> None:
        """Connection WORKER asked for data_sent at AT (the clock of `committed`)."""
        released = self._released.pop(worker, None)
        if released is not None:
            self.cycle_seconds = _average(self.cycle_seconds, max(at - released, 0.0))

    def back(self, worker: int, at: float) -> None:
        """Connection WORKER came back at AT with a message recorded ahead (pool.py): it asks a cycle later."""
        self._released[worker] = at

    def committed(self, workers: Iterable[int], started: float, ended: float) -> None:
        """A commit from STARTED to ENDED recorded the requests of WORKERS, and released them."""
        self.commit_seconds = _average(self.commit_seconds, max(ended - started, 0.0))
        for worker in workers:
            self._released[worker] = ended

    def wait_until(self, now: float) -> float:
        """Return until when to wait for more requests before committing (NOW: commit now).

        Only connections expected back within one commit's time are waited for; one that is late
        by half a cycle is not (it went idle, or the server slowed down).
        """
        if not self.commit_seconds or not self.cycle_seconds:
            return now
        horizon = now + self.commit_seconds
        expected = [at + self.cycle_seconds for at in self._released.values()]
        soon = [moment for moment in expected if moment <= horizon]
        if not soon:
            return now
        return max(now, min(horizon, max(soon) + _SLACK * self.cycle_seconds))


def _average(mean: float, sample: float) -> float:
    return sample if not mean else mean + _WEIGHT * (sample - mean)
