"""Crash-safe file writing: readers see either the old file or the complete new one, and
what is written once into a shared folder has one writer among processes and runs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically.

    The text goes to a temporary file in the same folder (so the final rename stays on
    one filesystem), is fsynced, then renamed over `path` with os.replace, which is
    atomic. A crash at any point leaves no half-written `path`; the temporary file is
    removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself; best effort because not every OS can open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def writer_lock(lock_file: str | os.PathLike, waiting: str = ""):
    """Hold an exclusive flock on `lock_file` (created if missing) for the `with` block.

    Processes of one run and concurrent runs on the same machine or shared filesystem take
    turns: a second caller blocks until the first leaves the block, and must then look
    again at what the first wrote. The kernel drops the lock when its holder dies, even
    by SIGKILL, so a crashed writer never leaves it held. `waiting`, if given, is printed
    when the lock is busy.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
