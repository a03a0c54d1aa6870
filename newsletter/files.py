"""The one writer: every file the tool writes goes through here, atomically and inside its root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from newsletter.errors import NewsletterError


# Whatever the umask: files that may hold a subscriber's address or personal unsubscribe link are
# the owner's alone; the public archive is readable by a web server running as another user.
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
PUBLIC_FILE, PUBLIC_DIR = 0o644, 0o755


def make_dirs(folder: Path, mode: int) -> None:
    """Create FOLDER and its missing parents with MODE exactly (the umask would narrow it)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode)
        except FileExistsError:
            continue
        os.chmod(path, mode)


def private_dir(folder: Path) -> None:
    """Create FOLDER (0700) if it is missing."""
    make_dirs(folder, PRIVATE_DIR)


def write_atomic(root: Path, relative: str | Path, data: bytes, *, public: bool = False) -> Path:
    """Write DATA to ROOT/RELATIVE via a temp file, fsync and os.replace; refuse paths outside ROOT.

    The file is 0600 in folders made 0700, or with PUBLIC 0644 in folders made 0755.
    """
    root = root.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise NewsletterError(f"{target}: refusing to write outside {root}")
    make_dirs(target.parent, PUBLIC_DIR if public else PRIVATE_DIR)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if public:
            os.fchmod(fd, PUBLIC_FILE)
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


def display(path: Path | str, root: Path) -> str:
    """Return PATH relative to the project ROOT when it is inside it, else as given (for messages)."""
    path = Path(path)
    for base in (root, root.resolve()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return str(path)
