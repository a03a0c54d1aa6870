"""`newsletter schedule` as a user runs it: a process that catches up, is stopped, and restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from test_schedule import assert_each_active_subscriber_got_one, issue_state, make_project, wait_for


class Scheduler:
    """`newsletter schedule` in a subprocess, its log lines collected as they come."""

    def __init__(self, root) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--project", str(root), "schedule"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=20)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
def test_schedule_catches_up_a_due_slot_and_a_restart_sends_nobody_a_second_copy(tmp_path):
    zone = "Asia/Kathmandu"  # +05:45: neither the machine's zone nor UTC
    slot = (datetime.now(ZoneInfo(zone)) - timedelta(minutes=3)).replace(second=0, microsecond=0)
    day = slot.date()
    settings = make_project(tmp_path / "project", zone=zone, send_time=f"{slot:%H:%M}", days=(day,))

    first = Scheduler(settings.root)
    try:
        wait_for(lambda: issue_state(settings, day).state == "done", "the catch-up send")
        wait_for(lambda: first.logged(f"issue of {day} (No. 1): sent;"), "the run's summary line")
    finally:
        code = first.terminate() if first.process.poll() is None else first.process.returncode
        first.kill()
    assert code == 0, "\n".join(first.lines)
    assert first.logged(f"daily at {slot:%H:%M} {zone}, last week's digest from ")
    assert first.logged("+0545") and first.logged(" UTC")
    assert first.logged("INFO SIGTERM: finishing the message in flight, then stopping")
    assert first.logged("newsletter schedule stopped")
    assert_each_active_subscriber_got_one(settings, day)

    second = Scheduler(settings.root)
    try:
        wait_for(lambda: second.logged(f"issue of {day} (No. 1): already sent;"), "the restart's catch-up")
    finally:
        code = second.terminate() if second.process.poll() is None else second.process.returncode
        second.kill()
    assert code == 0, "\n".join(second.lines)
    assert second.logged("0 messages")
    assert_each_active_subscriber_got_one(settings, day)
