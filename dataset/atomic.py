"""Crash-safe writing, for the whole project: readers see either the old file (or folder) or
the complete new one, and what is written once into a shared folder has one writer among
processes and runs.

    atomic_write(path, write) / atomic_write_text(path, text)   one file
    with atomic_folder(final) as tmp: ...                        a folder of files
    discard(folder), remove_leftovers(folder)                    deleting, cleaning up after a crash
    with writer_lock(lock_file): ...                             one writer at a time
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


# Hidden names of the temporary and trash entries, so a later writer can tell its own
# leftovers (of a process killed mid-write) from everything else in a folder.
TMP = ".tmp-"
TRASH = ".trash-"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file atomically: `write(handle)` fills a temporary file in the same folder (so
    the final rename stays on one filesystem), which is fsynced, then renamed over `path`
    with os.replace. A crash at any point leaves `path` as it was or complete; the
    temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TMP}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see atomic_write)."""
    data = text.encode("utf-8")  # encoded first: a text that cannot be encoded never touches the disk
    atomic_write(path, lambda handle: handle.write(data))


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """`with atomic_folder(final) as tmp:` write a folder's files into `tmp`; on a clean exit they
    are fsynced and `tmp` is renamed to `final` in one step, on an exception it is removed.
    So `final` is either absent (or as it was) or complete.

    replace=True moves an existing `final` aside to a hidden trash name first and deletes it
    after the rename (restored if the rename fails); without it an existing `final` makes
    the rename fail with OSError.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP}", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp is owner-only; the published folder should not be
    try:
        yield tmp
        for file in sorted(tmp.rglob("*")):  # not every writer fsyncs (safetensors does not)
            if file.is_file():
                with open(file, "rb+") as handle:
                    os.fsync(handle.fileno())
        _fsync_dir(tmp)
        trash = _to_trash(final) if replace and final.exists() else None
        try:
            os.rename(tmp, final)
        except OSError:
            if trash is not None:
                os.replace(trash, final)
            raise
        _fsync_dir(final.parent)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def discard(path: str | os.PathLike) -> None:
    """Delete a folder so that no half-deleted copy is ever seen under its name: it is renamed
    to a hidden trash name first, then removed."""
    shutil.rmtree(_to_trash(Path(path)), ignore_errors=True)


def _to_trash(path: Path) -> Path:
    trash = path.with_name(f".{path.name}{TRASH}{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    return trash


def remove_leftovers(folder: str | os.PathLike, name: str = "") -> None:
    """Remove the hidden temporary and trash entries that writers killed mid-write left in
    `folder` (only those of entry `name` when given). Call it where one writer holds the folder."""
    for leftover in Path(folder).glob(f".{name}*"):
        if TMP in leftover.name or TRASH in leftover.name:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


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
