"""When the SMTP pool's recording thread commits (delivery/group_commit.py): times are given, not read."""

from __future__ import annotations

import pytest

from newsletter.delivery.group_commit import GroupCommit


def learned(commit: float, cycle: float, released: list[int]) -> GroupCommit:
    """A GroupCommit that has seen a commit of COMMIT seconds and a cycle of CYCLE, then a commit that
    released the workers RELEASED at the time 100."""
    group = GroupCommit()
    group.committed([0], 0.0, commit)
    group.asked(0, commit + cycle)
    group.committed(released, 100.0 - commit, 100.0)
    return group


def test_the_first_requests_are_committed_at_once_nothing_learned_yet() -> None:
    assert GroupCommit().wait_until(5.0) == 5.0


def test_it_waits_for_connections_due_back_within_one_commit_so_the_pool_does_not_split_in_halves() -> None:
    # commits take 4 ms, a cycle 1 ms: worker 1, released 0.5 ms ago, is due in 0.5 ms
    group = learned(0.004, 0.001, [1])
    assert group.wait_until(100.0005) == pytest.approx(100.0015)  # its return, plus half a cycle


def test_it_never_waits_longer_than_a_commit_takes() -> None:
    group = learned(0.002, 0.0019, [1, 2])
    assert group.wait_until(100.0001) == pytest.approx(100.0021)


def test_a_slow_server_is_not_waited_for_its_connections_come_back_after_the_next_commit() -> None:
    # a cycle of 50 ms (a distant server) against commits of 4 ms: nothing to gain by waiting
    group = learned(0.004, 0.050, [1])
    assert group.wait_until(100.001) == 100.001


def test_a_connection_late_by_more_than_half_a_cycle_is_not_waited_for() -> None:
    group = learned(0.004, 0.001, [1])  # due back at 100.001
    assert group.wait_until(100.002) == 100.002


def test_the_averages_follow_what_is_measured() -> None:
    group = GroupCommit()
    group.committed([1], 0.0, 0.010)
    group.asked(1, 0.012)
    assert (group.commit_seconds, group.cycle_seconds) == (pytest.approx(0.010), pytest.approx(0.002))
    group.committed([1], 1.0, 1.0)
    group.asked(1, 1.0)
    assert group.commit_seconds == pytest.approx(0.008) and group.cycle_seconds == pytest.approx(0.0016)
    group.asked(7, 5.0)  # a worker never released: no cycle to learn from
    assert group.cycle_seconds == pytest.approx(0.0016)


def test_a_connection_back_with_a_message_recorded_ahead_is_waited_for_when_it_next_asks() -> None:
    # worker 1 was not released by the last commit (its next message was recorded with it): not waited for
    group = learned(0.004, 0.001, [2])
    assert group.wait_until(100.0005) == pytest.approx(100.0015)  # only worker 2's return
    group.asked(2, 100.001)
    assert group.wait_until(100.001) == 100.001
    group.back(1, 100.001)  # its message recorded ahead is under way: it asks for the next about a cycle later
    assert group.wait_until(100.0012) == pytest.approx(100.0025)
