"""`newsletter send` in its own process, stopped at a known point by the one test hook (kill tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from newsletter.cli_output import TEST_PAUSE_AFTER


def send_command(project: Path, day: str) -> list[str]:
    return [sys.executable, "-m", "newsletter", "--project", str(project), "send", "--date", day]


def start_paused(project: Path, day: str, after: int, command: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    """Start a send (COMMAND, default DAY's) that pauses once it reports AFTER messages done; return it and
    the count it reported."""
    process = subprocess.Popen(command or send_command(project, day), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, TEST_PAUSE_AFTER: str(after)})
    assert process.stdout is not None and process.stderr is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        paused = re.fullmatch(r"test hook: paused after ([\d,]+) of [\d,]+ messages\n", line)
        if paused:
            return process, int(paused[1].replace(",", ""))
    process.wait()
    raise AssertionError(f"the send ended without pausing: {''.join(seen)}{process.stderr.read()}")
