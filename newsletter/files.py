"""The one writer: every file the tool writes goes through here, atomically and inside its root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from newsletter.errors import NewsletterError


def write_atomic(root: Path, relative: str | Path, data: bytes) -> Path:
    """Write DATA to ROOT/RELATIVE via a temp file, fsync and os.replace; refuse paths outside ROOT."""
    root = root.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise NewsletterError(f"{target}: refusing to write outside {root}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in FOLDER durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
